package tcp

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/framing"
	"github.com/vigd/vigd/adapters/netguard"
	"github.com/vigd/vigd/internal/tlsconf"
)

// Identity modes (Config.Identity).
const (
	IdentityRemoteAddr = "remote_addr" // the remote IP (the default)
	IdentityFirstFrame = "first_frame" // the connection's first frame is the device id
	IdentityPayload    = "payload"     // empty: the decoder finds it in the payload
	IdentityClientCert = "client_cert" // the common name of the client's TLS certificate
	identityFixed      = "fixed:"      // "fixed:<id>": one id for every connection
)

// Config is the tcp adapter's block. Durations are strings ("30s"); byte
// strings (reply, reply_rejected, identity_reply) are escaped text ("\x06",
// "OK\r\n") or hex ("hex:06").
type Config struct {
	// Listen is the address to listen on, "host:port" or ":port". Required.
	Listen string `yaml:"listen"`
	// Framing cuts each connection's stream into frames (see
	// adapters/framing.Config). Default: LF/CRLF lines.
	Framing framing.Config `yaml:"framing"`
	// MaxFrameBytes bounds one frame; longer ones are counted, logged and
	// skipped. Default 65536.
	MaxFrameBytes int `yaml:"max_frame_bytes"`
	// MaxConnections bounds concurrent connections; extra ones are
	// accepted and closed at once. Default 256.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP bounds concurrent connections from one remote
	// address (IPv6: one /64), so that one misbehaving host cannot take
	// every slot. Devices behind one NAT share an address: raise it for
	// them. 0 means no per-address limit. Default 32.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// AllowedSources lists IP addresses or CIDR prefixes allowed to
	// connect; others are closed at once. Empty allows any.
	AllowedSources []string `yaml:"allowed_sources"`
	// IdleTimeout closes a connection that sent nothing for that long
	// (time spent waiting for the queue does not count). 0 never closes.
	// Default 10m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// FrameTimeout closes a connection whose frame is not complete this
	// long after the first of its bytes that was read (a client
	// trickling a byte now and then). 0 never closes. Default 2m.
	FrameTimeout time.Duration `yaml:"frame_timeout"`
	// TLS serves TLS when cert_file and key_file are set; with
	// client_ca_file every client must present a certificate signed by
	// one of those CAs (mutual TLS).
	TLS tlsconf.Server `yaml:"tls"`
	// HandshakeTimeout bounds the TLS handshake. Default 10s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// WriteTimeout bounds writing a reply. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// Reply is sent after each frame is durably queued. Empty: no reply.
	Reply string `yaml:"reply"`
	// ReplyRejected is sent instead of Reply after a frame went to the dead
	// letters (no decoder could read it; it is kept). Unset: Reply; "":
	// nothing.
	ReplyRejected *string `yaml:"reply_rejected"`
	// IdentityReply is sent after the identity frame when Identity is
	// first_frame (Teltonika-style handshakes). Empty: no reply.
	IdentityReply string `yaml:"identity_reply"`
	// Identity says what Frame.Identity holds: remote_addr (the remote IP,
	// default), first_frame (the first frame of each connection, trimmed
	// of white space, is the device id and not data), fixed:<id>, or
	// payload (empty; the decoder finds the id in the payload), or
	// client_cert (the common name of the client's TLS certificate; needs
	// tls.client_ca_file).
	Identity string `yaml:"identity"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() *Config {
	return &Config{
		Framing:             framing.Config{Type: framing.TypeLine},
		MaxFrameBytes:       framing.DefaultMaxFrameBytes,
		MaxConnections:      256,
		MaxConnectionsPerIP: 32,
		IdleTimeout:         10 * time.Minute,
		FrameTimeout:        2 * time.Minute,
		HandshakeTimeout:    10 * time.Second,
		WriteTimeout:        10 * time.Second,
		Identity:            IdentityRemoteAddr,
	}
}

// maxFrameLimit keeps one frame's buffer reasonable on a small gateway.
const maxFrameLimit = 256 << 20

// Validate returns every problem as *adapters.FieldError values.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, adapters.Errorf(field, format, args...))
	}
	if c.Listen == "" {
		add("listen", "is required, e.g. \":5000\" or \"127.0.0.1:5000\"")
	} else if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen", "must be host:port or :port (%v)", err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		add("listen", "port %q must be a number from 0 to 65535", port)
	}
	if c.MaxFrameBytes < 1 || c.MaxFrameBytes > maxFrameLimit {
		add("max_frame_bytes", "must be between 1 and %d (got %d)", maxFrameLimit, c.MaxFrameBytes)
	}
	fc := c.framing()
	if fc.MaxFrameBytes < 0 {
		fc.MaxFrameBytes = 0 // reported above, once
	}
	if err := fc.ValidateAt("framing"); err != nil {
		errs = append(errs, err)
	}
	if c.MaxConnections < 1 {
		add("max_connections", "must be at least 1 (got %d)", c.MaxConnections)
	}
	if c.MaxConnectionsPerIP < 0 {
		add("max_connections_per_ip", "must not be negative (0: no per-address limit)")
	}
	if _, err := netguard.ParseAllowList(c.AllowedSources); err != nil {
		add("allowed_sources", "%v", err)
	}
	if c.IdleTimeout < 0 {
		add("idle_timeout", "must not be negative (0 never closes)")
	}
	if c.FrameTimeout < 0 {
		add("frame_timeout", "must not be negative (0 never closes)")
	}
	if c.Framing.Type == framing.TypeIdle && c.FrameTimeout > 0 && c.FrameTimeout <= c.Framing.Gap {
		add("frame_timeout", "must be longer than framing.gap (%s) or 0", c.Framing.Gap)
	}
	for _, p := range c.TLS.Check() {
		add("tls."+p.Field, "%s", p.Msg)
	}
	if c.HandshakeTimeout <= 0 {
		add("handshake_timeout", "must be a positive duration")
	}
	if c.Framing.Type == framing.TypeIdle && c.IdleTimeout > 0 && c.IdleTimeout <= c.Framing.Gap {
		// The connection would close before any frame could end.
		add("idle_timeout", "must be longer than framing.gap (%s) or 0", c.Framing.Gap)
	}
	if c.WriteTimeout <= 0 {
		add("write_timeout", "must be a positive duration")
	}
	if _, err := framing.ParseBytes(c.Reply); err != nil {
		add("reply", "%v", err)
	}
	if c.ReplyRejected != nil {
		if _, err := framing.ParseBytes(*c.ReplyRejected); err != nil {
			add("reply_rejected", "%v", err)
		}
	}
	if _, err := framing.ParseBytes(c.IdentityReply); err != nil {
		add("identity_reply", "%v", err)
	}
	switch {
	case c.Identity == "", c.Identity == IdentityRemoteAddr, c.Identity == IdentityFirstFrame, c.Identity == IdentityPayload:
	case c.Identity == IdentityClientCert:
		if c.TLS.ClientCAFile == "" {
			add("identity", "client_cert needs tls.client_ca_file (client certificates)")
		}
	case strings.HasPrefix(c.Identity, identityFixed):
		if strings.TrimSpace(strings.TrimPrefix(c.Identity, identityFixed)) == "" {
			add("identity", "fixed: needs an id, e.g. fixed:pump-7")
		}
	default:
		add("identity", "must be remote_addr, first_frame, payload, client_cert or fixed:<id> (got %q)", c.Identity)
	}
	if c.IdentityReply != "" && c.Identity != IdentityFirstFrame {
		add("identity_reply", "only applies with identity: first_frame")
	}
	return errors.Join(errs...)
}

// framing is the framing config with the adapter's frame limit.
func (c *Config) framing() framing.Config {
	fc := c.Framing
	fc.MaxFrameBytes = c.MaxFrameBytes
	return fc
}
