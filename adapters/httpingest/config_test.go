package httpingest

import (
	"errors"
	"reflect"
	"sort"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/forwarder/signer"
)

func fields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *adapters.FieldError
		if errors.As(err, &fe) {
			out = append(out, fe.Field)
		} else if err != nil {
			out = append(out, "not a FieldError: "+err.Error())
		}
	}
	walk(err)
	sort.Strings(out)
	return out
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"defaults with listen and tokens", func(c *Config) {}, nil},
		{"listen missing", func(c *Config) { c.Listen = "" }, []string{"listen"}},
		{"listen bad port", func(c *Config) { c.Listen = ":99999" }, []string{"listen"}},
		{"path", func(c *Config) { c.Path = "ingest/" }, []string{"path"}},
		{"path trailing slash", func(c *Config) { c.Path = "/ingest/" }, []string{"path"}},
		{"device_id header", func(c *Config) { c.DeviceID = "header:X-Device-Id" }, nil},
		{"device_id query", func(c *Config) { c.DeviceID = "query:imei" }, nil},
		{"device_id none", func(c *Config) { c.DeviceID = "none" }, nil},
		{"device_id bad", func(c *Config) { c.DeviceID = "cookie:x" }, []string{"device_id"}},
		{"device_id empty header", func(c *Config) { c.DeviceID = "header:" }, []string{"device_id"}},
		{"device_id query is decoder", func(c *Config) { c.DeviceID = "query:decoder" }, []string{"device_id"}},
		{"allowed decoders repeated", func(c *Config) { c.AllowedDecoders = []string{"a", "a", ""} }, []string{"allowed_decoders[1]", "allowed_decoders[2]"}},
		{"content types", func(c *Config) { c.ContentTypes = []string{"application/json; charset=utf-8", "Text/Plain", "x"} },
			[]string{"content_types[0]", "content_types[2]"}},
		{"no content types", func(c *Config) { c.ContentTypes = nil }, []string{"content_types"}},
		{"limits", func(c *Config) {
			c.MaxBodyBytes, c.MaxInFlight, c.ReadTimeout, c.ReadHeaderTimeout, c.IdleTimeout, c.EmitTimeout, c.RetryAfter = 0, 0, 0, 0, 0, 0, 0
		}, []string{"emit_timeout", "idle_timeout", "max_body_bytes", "max_in_flight", "read_header_timeout", "read_timeout", "retry_after"}},
		{"bearer without tokens", func(c *Config) { c.Auth.TokensFile = "" }, []string{"auth.tokens_file"}},
		{"hmac", func(c *Config) {
			c.Auth = AuthConfig{Mode: AuthHMAC, Services: map[string]string{"svc": "/s"}, MaxSkew: time.Minute}
		}, nil},
		{"hmac without services, bad signer", func(c *Config) {
			c.Auth = AuthConfig{Mode: AuthHMAC, Signer: signer.Config{Lines: []string{"body"}}, MaxSkew: time.Minute}
		}, []string{"auth.services", "auth.signer"}},
		{"tokens with hmac", func(c *Config) { c.Auth.Mode = AuthHMAC; c.Auth.Services = map[string]string{"s": "/s"} }, []string{"auth.mode"}},
		{"services with bearer", func(c *Config) { c.Auth.Services = map[string]string{"s": "/s"} }, []string{"auth.mode"}},
		{"client_cert without CA", func(c *Config) { c.Auth = AuthConfig{Mode: AuthClientCert, MaxSkew: time.Minute} }, []string{"tls.client_ca_file"}},
		{"client_cert", func(c *Config) {
			c.Auth = AuthConfig{Mode: AuthClientCert, MaxSkew: time.Minute}
			c.TLS = TLSConfig{CertFile: "/c", KeyFile: "/k", ClientCAFile: "/ca"}
		}, nil},
		{"none", func(c *Config) { c.Auth = AuthConfig{Mode: AuthNone, MaxSkew: time.Minute} }, nil},
		{"unknown mode", func(c *Config) { c.Auth.Mode = "basic" }, []string{"auth.mode", "auth.mode"}},
		{"bad token name", func(c *Config) { c.Auth.TokenFiles = map[string]string{"a b": "/t"} }, []string{"auth.token_files.a b"}},
		{"tls half", func(c *Config) { c.TLS.CertFile = "/c" }, []string{"tls"}},
		{"client CA without TLS", func(c *Config) { c.TLS.ClientCAFile = "/ca" }, []string{"tls.client_ca_file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Listen = ":8080"
			c.Auth.TokensFile = "/etc/vigd/tokens"
			tc.mutate(c)
			if got := fields(c.Validate()); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("fields %v, want %v", got, tc.want)
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	c := DefaultConfig()
	err := yaml.Unmarshal([]byte(`
listen: ":8443"
path: /v1/telemetry
device_id: header:X-Serial
allowed_decoders: [firmware-update, nmea-gps]
max_body_bytes: 65536
emit_timeout: 5s
auth:
  mode: hmac
  services: {vig-updater: /run/credentials/vigd.service/updater}
  signer: {date_format: "2006-01-02T15:04:05Z07:00"}
  max_skew: 5m
tls: {cert_file: /etc/vigd/tls.crt, key_file: /etc/vigd/tls.key}
`), c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.EmitTimeout != 5*time.Second || c.Auth.MaxSkew != 5*time.Minute || c.Auth.Services["vig-updater"] == "" || c.ReadTimeout != 30*time.Second || len(c.ContentTypes) != 3 {
		t.Errorf("%+v", c)
	}
}

func TestRegistered(t *testing.T) {
	k, ok := adapters.Lookup(Kind)
	if !ok {
		t.Fatal("http not registered")
	}
	cfg := k.NewConfig().(*Config)
	if _, err := k.New("x", cfg, adapters.Env{}); err == nil {
		t.Error("New accepted a config without listen and tokens")
	}
	cfg.Listen, cfg.Auth.TokensFile = ":0", "/t"
	a, err := k.New("x", cfg, adapters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if st := a.(adapters.StatusReporter).Status(); st.OK {
		t.Errorf("status before Run %+v", st)
	}
}
