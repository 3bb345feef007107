package orbcomm

import (
	"testing"
	"time"

	"github.com/vigd/vigd/internal/config"
)

// The documented keys go through the daemon's strict loader.
func TestStrictLoaderBlock(t *testing.T) {
	c, err := config.Parse("vigd.yaml", []byte(`data_dir: /var/lib/vigd
decoders: [/etc/vigd/decoders]
forwarder: {url: "http://127.0.0.1:9000", service_id: s, secret_file: /etc/vigd/secret}
adapters:
  - name: idp
    kind: orbcomm
    decoder: orbcomm-position
    customer_id: "047"
    url: https://isatdatapro.orbcomm.com/GLGW/2/RestMessages.svc/JSON/get_return_messages/
    access_id: "70000934"
    password_credential: orbcomm-password
    poll_interval: 30s
    calls_per_minute: 10
    timeout: 30s
    start_time: "2024-05-01 00:00:00"
    lookback: 24h
    include_raw_payload: true
    mobile_id: 01000001TESTA1B
    dedup_size: 10000
    max_response_bytes: 33554432
    retry_min: 5s
    retry_max: 5m
`))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Adapters[0].Settings.(*Config)
	if a.AccessID != "70000934" || a.RetryMax != 5*time.Minute || a.PasswordCredential != "orbcomm-password" || a.MobileID != "01000001TESTA1B" {
		t.Errorf("%+v", a)
	}
}
