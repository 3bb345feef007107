package tcp

import (
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/framing"
	"github.com/vigd/vigd/internal/tlsconf"
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
	bad := `\q`
	cases := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"defaults with a listen address", func(c *Config) {}, nil},
		{"listen missing", func(c *Config) { c.Listen = "" }, []string{"listen"}},
		{"listen without port", func(c *Config) { c.Listen = "localhost" }, []string{"listen"}},
		{"listen bad port", func(c *Config) { c.Listen = ":http2" }, []string{"listen"}},
		{"framing problems are prefixed", func(c *Config) {
			c.Framing = framing.Config{Type: "length", LengthBytes: 3}
		}, []string{"framing.length_bytes"}},
		{"fixed size over max_frame_bytes", func(c *Config) {
			c.Framing = framing.Config{Type: "fixed", Size: 100}
			c.MaxFrameBytes = 10
		}, []string{"framing.size"}},
		{"limits", func(c *Config) {
			c.MaxFrameBytes = 0
			c.MaxConnections = 0
			c.IdleTimeout = -time.Second
			c.WriteTimeout = 0
		}, []string{"idle_timeout", "max_connections", "max_frame_bytes", "write_timeout"}},
		{"negative max_frame_bytes reported once", func(c *Config) { c.MaxFrameBytes = -5 }, []string{"max_frame_bytes"}},
		{"bad byte strings", func(c *Config) {
			c.Reply = "hex:zz"
			c.ReplyRejected = &bad
			c.Identity = IdentityFirstFrame
			c.IdentityReply = `\x1`
		}, []string{"identity_reply", "reply", "reply_rejected"}},
		{"idle_timeout not above the idle gap", func(c *Config) {
			c.Framing = framing.Config{Type: "idle", Gap: time.Second}
			c.IdleTimeout = time.Second
		}, []string{"idle_timeout"}},
		{"unknown identity", func(c *Config) { c.Identity = "imei" }, []string{"identity"}},
		{"fixed identity without id", func(c *Config) { c.Identity = "fixed: " }, []string{"identity"}},
		{"identity_reply needs first_frame", func(c *Config) { c.IdentityReply = "hex:01" }, []string{"identity_reply"}},
		{"network limits", func(c *Config) {
			c.MaxConnectionsPerIP = -1
			c.AllowedSources = []string{"10.0.0.0/8", "not-an-ip"}
			c.FrameTimeout = -time.Second
			c.HandshakeTimeout = 0
		}, []string{"allowed_sources", "frame_timeout", "handshake_timeout", "max_connections_per_ip"}},
		{"frame_timeout not above the idle gap", func(c *Config) {
			c.Framing = framing.Config{Type: "idle", Gap: time.Second}
			c.IdleTimeout = 0
			c.FrameTimeout = time.Second
		}, []string{"frame_timeout"}},
		{"tls half set", func(c *Config) {
			c.TLS = tlsconf.Server{CertFile: "server.pem", ClientCAFile: "ca.pem"}
		}, []string{"tls.cert_file"}},
		{"client ca without tls", func(c *Config) {
			c.TLS = tlsconf.Server{ClientCAFile: "ca.pem"}
		}, []string{"tls.client_ca_file"}},
		{"client_cert identity needs client certificates", func(c *Config) {
			c.TLS = tlsconf.Server{CertFile: "s.pem", KeyFile: "k.pem"}
			c.Identity = IdentityClientCert
		}, []string{"identity"}},
		{"good tls config", func(c *Config) {
			c.TLS = tlsconf.Server{CertFile: "s.pem", KeyFile: "k.pem", ClientCAFile: "ca.pem"}
			c.Identity = IdentityClientCert
			c.AllowedSources = []string{"192.0.2.0/24", "2001:db8::1"}
			c.MaxConnectionsPerIP = 0
			c.FrameTimeout = 0
		}, nil},
		{"good full config", func(c *Config) {
			c.Framing = framing.Config{Type: "slip"}
			c.Identity = "fixed:pump-7"
			c.Reply = `ACK\r\n`
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Listen = ":5000"
			tc.mutate(c)
			err := c.Validate()
			if got := fields(err); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("fields %v, want %v (%v)", got, tc.want, err)
			}
			if _, err := New("x", c, adapters.Env{}); (err == nil) != (len(tc.want) == 0) {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestRegistered(t *testing.T) {
	k, ok := adapters.Lookup("tcp")
	if !ok {
		t.Fatal("kind tcp not registered")
	}
	cfg := k.NewConfig()
	// The loader decodes the adapter's block into the defaults.
	src := `
listen: "127.0.0.1:0"
framing:
  type: length
  length_bytes: 1
max_frame_bytes: 1024
idle_timeout: 90s
reply: "hex:06"
reply_rejected: ""
identity: first_frame
identity_reply: '\x01'
max_connections_per_ip: 4
allowed_sources: [10.0.0.0/8]
frame_timeout: 30s
handshake_timeout: 5s
tls:
  cert_file: /etc/vigd/tls/server.pem
  key_file: /etc/vigd/tls/server-key.pem
  client_ca_file: /etc/vigd/tls/devices-ca.pem
`
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := cfg.(*Config)
	if c.Framing.Type != "length" || c.Framing.LengthBytes != 1 || c.MaxFrameBytes != 1024 ||
		c.IdleTimeout != 90*time.Second || c.WriteTimeout != 10*time.Second || c.MaxConnections != 256 ||
		c.ReplyRejected == nil || *c.ReplyRejected != "" || c.MaxConnectionsPerIP != 4 ||
		len(c.AllowedSources) != 1 || c.FrameTimeout != 30*time.Second || c.HandshakeTimeout != 5*time.Second ||
		c.TLS.ClientCAFile != "/etc/vigd/tls/devices-ca.pem" {
		t.Fatalf("decoded %+v", c)
	}
	a, err := k.New("dev", cfg, adapters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	l := a.(*Listener)
	if string(l.reply) != "\x06" || len(l.replyRejected) != 0 || string(l.identityReply) != "\x01" {
		t.Fatalf("replies %q %q %q", l.reply, l.replyRejected, l.identityReply)
	}
	if _, err := k.New("dev", &framing.Config{}, adapters.Env{}); err == nil {
		t.Fatal("New accepted a foreign config type")
	}
}
