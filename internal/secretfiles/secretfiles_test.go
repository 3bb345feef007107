package secretfiles

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	_ "github.com/vigd/vigd/adapters/mqtt"
	_ "github.com/vigd/vigd/adapters/tcp"
	"github.com/vigd/vigd/internal/config"
)

func write(t *testing.T, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, dir, body string, mode os.FileMode) *config.Config {
	t.Helper()
	path := write(t, filepath.Join(dir, "vigd.yaml"), body, mode)
	cfg, err := config.Parse(path, []byte(body))
	if cfg == nil {
		t.Fatal(err)
	}
	return cfg
}

func TestFindsWorldReadableSecrets(t *testing.T) {
	dir := t.TempDir()
	apiSecret := write(t, filepath.Join(dir, "apisecret"), "very-secret-api-key\n", 0o644)
	mqttPass := write(t, filepath.Join(dir, "mqtt-pass"), "mqtt-pw\n", 0o600)
	tlsKey := write(t, filepath.Join(dir, "server-key.pem"), "KEY", 0o604)
	caFile := write(t, filepath.Join(dir, "ca.pem"), "CA", 0o644) // a CA is public
	body := fmt.Sprintf(`data_dir: %s
decoders: [%s]
forwarder:
  url: https://xcloud.example
  service_id: svc
  secret_file: %s
  proxy: http://gw:proxy-pw@proxy.example:3128
  tls:
    ca_file: %s
adapters:
  - name: devices
    kind: tcp
    listen: ":5000"
    tls:
      cert_file: %s
      key_file: %s
  - name: broker
    kind: mqtt
    brokers: ["tcp://127.0.0.1:1883"]
    username: vigd
    password_file: %s
    topics: [{topic: a/+}]
`, dir, dir, apiSecret, caFile, caFile, tlsKey, mqttPass)

	cfg := load(t, dir, body, 0o640)
	var refs []string
	for _, r := range Refs(cfg) {
		refs = append(refs, r.Key+"="+filepath.Base(r.File))
	}
	want := []string{
		`adapters "broker" (mqtt).password_file=mqtt-pass`,
		`adapters "devices" (tcp).tls.key_file=server-key.pem`,
		"forwarder.proxy=.",
		"forwarder.secret_file=apisecret",
	}
	if !reflect.DeepEqual(refs, want) {
		t.Fatalf("refs\n%q\nwant\n%q", refs, want)
	}

	got := Check(cfg)
	var lines []string
	for _, f := range got {
		lines = append(lines, f.String())
	}
	if len(got) != 2 || got[0].File != tlsKey || got[1].File != apiSecret {
		t.Fatalf("findings:\n%s", strings.Join(lines, "\n"))
	}
	if want := apiSecret + " (forwarder.secret_file) holds a secret and is readable by every user (mode 0644); chmod o-r it"; lines[1] != want {
		t.Fatalf("message %q", lines[1])
	}
	for _, l := range lines {
		for _, secret := range []string{"very-secret-api-key", "mqtt-pw", "KEY", "proxy-pw"} {
			if strings.Contains(l, secret) {
				t.Fatalf("finding shows a secret: %s", l)
			}
		}
	}

	// The config holds a proxy password: world-readable, it is reported
	// first.
	cfg = load(t, dir, body, 0o644)
	got = Check(cfg)
	if len(got) != 3 || got[0].Key != "config" || got[0].File != cfg.File {
		t.Fatalf("findings %v", got)
	}
	// Without an inline secret the config's mode does not matter.
	cfg = load(t, dir, strings.Replace(body, "gw:proxy-pw@", "", 1), 0o644)
	if got := Check(cfg); len(got) != 2 {
		t.Fatalf("findings %v", got)
	}
	// Fixed modes: nothing to say.
	for _, p := range []string{apiSecret, tlsKey} {
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := Check(cfg); len(got) != 0 {
		t.Fatalf("findings %v", got)
	}
	// A missing file is left to the loader.
	os.Remove(apiSecret)
	if got := Check(cfg); len(got) != 0 {
		t.Fatalf("findings %v", got)
	}
}

func TestInlineKeys(t *testing.T) {
	for name, want := range map[string]bool{"password": true, "api_token": true, "secret": true, "password_file": false, "secret_credential": false, "tokens": false} {
		if got := inlineSecretKey(name); got != want {
			t.Errorf("%s: %v", name, got)
		}
	}
	type inner struct {
		Password string `yaml:"password"`
	}
	type outer struct {
		In       inner             `yaml:",inline"`
		Brokers  []string          `yaml:"brokers"`
		Skip     string            `yaml:"-"`
		Tokens   map[string]string `yaml:"token_files"`
		Services map[string]string `yaml:"services"`
		Labels   map[string]string `yaml:"labels"`
	}
	var refs []Ref
	w := walker{add: func(r Ref) { refs = append(refs, r) }}
	w.walk(reflect.ValueOf(&outer{In: inner{Password: "x"}, Brokers: []string{"ssl://u:p@h:8883", "tcp://h:1883"}, Skip: "password",
		Tokens: map[string]string{"b": "/b", "a": "/a"}, Services: map[string]string{"svc": "/s"}, Labels: map[string]string{"x": "/x"}}), "http")
	if fmt.Sprint(refs) != "[{http.password } {http.brokers[0] } {http.token_files.a /a} {http.token_files.b /b} {http.services.svc /s}]" {
		t.Fatalf("refs %v", refs)
	}
}
