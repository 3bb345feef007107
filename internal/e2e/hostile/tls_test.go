package hostile

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
	"github.com/vigd/vigd/internal/tlsconf/tlstest"
)

// startTLSSim serves the simulator over HTTPS with the test PKI's server
// certificate (a CA no system trusts).
func (e *env) startTLSSim(pki *tlstest.PKI) {
	e.t.Helper()
	s, err := sim.New(e.simConfig())
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s)
	srv.TLS = pki.ServerConfig()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected here
	srv.StartTLS()
	e.t.Cleanup(func() {
		srv.Close()
		if err := s.Close(); err != nil {
			e.t.Errorf("sim close: %v", err)
		}
	})
	e.sim, e.simURL = s, srv.URL
	e.simClient = &sim.Client{BaseURL: srv.URL, HTTP: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: pki.ClientConfig(false)}}}
}

// tlsDevice sends lines over TLS and waits for each ACK.
func tlsDevice(addr string, cfg *tls.Config, lines ...string) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, l := range lines {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, l+"\n"); err != nil {
			return err
		}
		ack, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if ack != "ACK\n" {
			return fmt.Errorf("answer %q", ack)
		}
	}
	return nil
}

// logLines are the daemon's JSON log entries whose fields contain s.
func logLines(log, s string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, s) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// TLS on both sides, with a CA generated for the test:
//   - the tcp listener with client_ca_file: a device with a certificate
//     delivers (identified by its CN); one without a certificate, or
//     talking plain TCP, is refused and counted.
//   - the forwarder to the simulator over HTTPS: with tls.ca_file it
//     delivers; without it every request fails verification (logged,
//     the records stay queued); with insecure_skip_verify the queued
//     records are delivered — nothing lost — and a warning is logged at
//     the start.
func TestTLSBothWays(t *testing.T) {
	pki := tlstest.New(t)
	e := newEnv(t)
	e.startTLSSim(pki)
	httpAddr, tcpAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	adapter := fmt.Sprintf(`adapters:
  - name: secure
    kind: tcp
    decoder: counter
    customer_id: c1
    listen: %s
    identity: payload
    reply: "ACK\n"
    reply_rejected: "NAK\n"
    tls:
      cert_file: %s
      key_file: %s
      client_ca_file: %s
`, tcpAddr, pki.ServerCert, pki.ServerKey, pki.CAFile)
	config := func(forwarderTLS string) string {
		return e.baseConfig(httpAddr, "info") + forwarderTLS + adapter
	}

	// 1. ca_file: verified and delivered.
	d := e.startVigd(config(fmt.Sprintf("  tls:\n    ca_file: %s\n", pki.CAFile)), httpAddr)
	if err := tlsDevice(tcpAddr, pki.ClientConfig(true), "dev-1,1,1", "dev-1,2,2"); err != nil {
		t.Fatalf("device with a client certificate: %v", err)
	}
	waitUntil(t, "2 observations over HTTPS with ca_file", 10*time.Second, func() bool { return e.accepted() == 2 })

	if err := tlsDevice(tcpAddr, pki.ClientConfig(false), "dev-x,3,3"); err == nil {
		t.Error("device without a client certificate delivered")
	}
	plain, err := dialFrom("127.0.0.1", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := sendLines(plain, "dev-x,4,4"); err == nil {
		t.Error("plain TCP device delivered to the TLS listener")
	}
	plain.Close()
	waitUntil(t, "2 refused handshakes counted", 5*time.Second, func() bool {
		return d.metric("vigd_adapter_connections_refused_total", map[string]string{"adapter": "secure", "reason": "tls"}) == 2
	})
	d.stop()

	// 2. No ca_file: the simulator's certificate is not trusted.
	d = e.startVigd(config(""), httpAddr)
	if err := tlsDevice(tcpAddr, pki.ClientConfig(true), "dev-1,5,5", "dev-1,6,6"); err != nil {
		t.Fatalf("device: %v", err)
	}
	waitUntil(t, "a certificate error in the log", 10*time.Second, func() bool {
		for _, m := range logLines(d.log(), "certificate") {
			if m["component"] == "forwarder" {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond)
	if got := e.accepted(); got != 2 {
		t.Fatalf("simulator holds %d observations, want 2: an unverified server got data", got)
	}
	if _, body := d.get("/readyz"); !strings.Contains(body, "certificate") {
		t.Logf("readyz does not name the certificate error:\n%s", body)
	}
	d.stop()

	// 3. insecure_skip_verify: the queued records go, with a warning.
	d = e.startVigd(config("  tls:\n    insecure_skip_verify: true\n"), httpAddr)
	waitUntil(t, "the 2 queued observations delivered", 10*time.Second, func() bool { return e.accepted() == 4 })
	warned := 0
	for _, m := range logLines(d.log(), "insecure_skip_verify") {
		if m["level"] == "warning" {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("%d insecure_skip_verify warnings in the log, want 1 (this start only)", warned)
	}
}
