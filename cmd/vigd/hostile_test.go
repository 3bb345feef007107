package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/tlsconf"
	"github.com/vigd/vigd/internal/tlsconf/tlstest"
)

// `vigd check` warns about a world-readable secret file by name and key,
// and never prints the secret.
func TestCheckWarnsAboutWorldReadableSecret(t *testing.T) {
	dir := t.TempDir()
	const secret = "apisecret-0123456789-do-not-print"
	secretPath := filepath.Join(dir, "apisecret")
	if err := os.WriteFile(secretPath, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secretPath, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := `data_dir: ` + dir + `
decoders: [` + repoPath("configs/decoders") + `]
forwarder:
  url: https://127.0.0.1:1
  service_id: gw
  secret_file: apisecret
adapters:
  - name: in
    kind: tcp
    decoder: toa5-station
    listen: 127.0.0.1:0
`
	path := filepath.Join(dir, "vigd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := run(t, "check", "-c", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := "warning: " + secretPath + " (forwarder.secret_file) holds a secret and is readable by every user (mode 0644)"
	if !strings.Contains(stderr, want) {
		t.Fatalf("stderr %q, want %q", stderr, want)
	}
	if strings.Contains(out+stderr, secret) {
		t.Fatal("check printed the secret")
	}
	if err := os.Chmod(secretPath, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr = run(t, "check", "-c", path); code != 0 || strings.Contains(stderr, "warning") {
		t.Fatalf("exit %d, stderr %q after chmod 600", code, stderr)
	}
}

// The local endpoint over HTTPS with client certificates: a scraper with
// a certificate reads /metrics, one without (or over plain HTTP) does not.
func TestHealthEndpointTLS(t *testing.T) {
	pki := tlstest.New(t)
	tc, err := tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile}.Load(tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr, done, err := newHealth().serve(ctx, "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(scheme string, cfg *tls.Config) (int, string, error) {
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := c.Get(scheme + "://" + addr.String() + "/metrics")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	code, body, err := get("https", pki.ClientConfig(true))
	if err != nil || code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("with a client certificate: %d %v", code, err)
	}
	if code, _, err := get("https", pki.ClientConfig(false)); err == nil {
		t.Fatalf("without a client certificate: %d", code)
	}
	if code, _, err := get("http", nil); err == nil && code == 200 {
		t.Fatal("plain HTTP served")
	}
}
