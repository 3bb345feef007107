package httpingest

import (
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/config"
)

// The keys documented for the example config go through the daemon's
// strict loader (unknown keys, nested maps, durations) into this Config.
func TestStrictLoaderBlock(t *testing.T) {
	c, err := config.Parse("vigd.yaml", []byte(`data_dir: /var/lib/vigd
decoders: [/etc/vigd/decoders]
forwarder: {url: "http://127.0.0.1:9000", service_id: s, secret_file: /etc/vigd/secret}
adapters:
  - name: updates
    kind: http
    decoder: firmware-update
    customer_id: "047"
    listen: ":8443"
    path: /v1/firmware
    device_id: header:X-Device-Id
    allowed_decoders: [firmware-update]
    max_body_bytes: 65536
    emit_timeout: 10s
    auth:
      mode: hmac
      services: {vig-updater: /etc/vigd/updater.secret}
      signer: {lines: [method, content-md5, content-type, date, path]}
      max_skew: 5m
    tls: {cert_file: /etc/vigd/tls.crt, key_file: /etc/vigd/tls.key, client_ca_file: /etc/vigd/ca.pem}
  - name: tokens
    kind: http
    listen: ":8080"
    auth: {tokens_file: /etc/vigd/tokens, token_files: {logger-3: /etc/vigd/logger-3.token}}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Adapters[0].Settings.(*Config)
	if a.Auth.Services["vig-updater"] != "/etc/vigd/updater.secret" || a.EmitTimeout != 10*time.Second || a.TLS.ClientCAFile == "" || len(a.Auth.Signer.Lines) != 5 {
		t.Errorf("%+v", a)
	}
	if c.Adapters[0].Decoder != "firmware-update" || c.Adapters[0].CustomerID != "047" {
		t.Errorf("common keys %+v", c.Adapters[0])
	}
	b := c.Adapters[1].Settings.(*Config)
	if b.Auth.Mode != AuthBearer || b.Auth.TokenFiles["logger-3"] == "" || b.Path != "/ingest" {
		t.Errorf("%+v", b)
	}

	_, err = config.Parse("vigd.yaml", []byte(`data_dir: /x
decoders: [/d]
forwarder: {url: "http://127.0.0.1:9000", service_id: s, secret_file: /s}
adapters:
  - name: bad
    kind: http
    listen: ":8080"
    auth: {mode: bearer, token: abc}
`))
	if err == nil || !strings.Contains(err.Error(), "auth.token: unknown key") {
		t.Errorf("unknown key: %v", err)
	}
}
