package httpingest

import (
	"errors"
	"fmt"
	"mime"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/forwarder/signer"
)

// Kind is the adapter kind name.
const Kind = "http"

// Device id sources (Config.DeviceID).
const (
	DeviceIDPath   = "path"    // POST {path}/{deviceId} (the default)
	DeviceIDNone   = "none"    // no identity: the decoder finds it in the payload
	deviceIDHeader = "header:" // "header:X-Device-Id"
	deviceIDQuery  = "query:"  // "query:device"
)

// Authentication modes (AuthConfig.Mode).
const (
	AuthBearer     = "bearer"      // Authorization: Bearer <token>
	AuthHMAC       = "hmac"        // the eventstore contract's xCloud HMAC signature
	AuthClientCert = "client_cert" // a client certificate signed by tls.client_ca_file
	AuthNone       = "none"        // anyone who can reach the port
)

// DecoderParam is the query parameter that picks a decoder per request
// (only one of allowed_decoders).
const DecoderParam = "decoder"

// Config is the "http" adapter block. Durations are strings ("30s").
type Config struct {
	// Listen is the address to listen on, "host:port" or ":port". Required.
	Listen string `yaml:"listen"`
	// Path is where devices post; with device_id: path the device id is the
	// next segment (POST /ingest/pump-7). Default "/ingest".
	Path string `yaml:"path"`
	// DeviceID says where Frame.Identity comes from: path (default),
	// header:<Name>, query:<name>, or none (the decoder finds the device in
	// the payload).
	DeviceID string `yaml:"device_id"`
	// AllowedDecoders are the decoders a request may choose with
	// ?decoder=<name>; empty refuses the parameter (the adapter's decoder
	// applies).
	AllowedDecoders []string `yaml:"allowed_decoders"`
	// ContentTypes are the media types accepted (415 otherwise); a request
	// without Content-Type counts as application/octet-stream. With
	// application/json, any */*+json type is accepted too. Default
	// application/octet-stream, text/plain, application/json.
	ContentTypes []string `yaml:"content_types"`
	// MaxBodyBytes bounds a request's body (413 beyond). Default 1 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxInFlight bounds requests being read or queued at once; beyond it
	// the answer is 503 with Retry-After, so a full queue cannot pile up
	// bodies in memory. Default 64.
	MaxInFlight int `yaml:"max_in_flight"`
	// ReadHeaderTimeout, ReadTimeout and IdleTimeout are the server's
	// timeouts. Defaults 10s, 30s, 2m.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	// EmitTimeout is how long a request waits for its frame to be queued
	// (the queue may be full); then the answer is 503. Default 30s.
	EmitTimeout time.Duration `yaml:"emit_timeout"`
	// RetryAfter is sent with every 503. Default 30s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// Auth authenticates each request.
	Auth AuthConfig `yaml:"auth"`
	// TLS serves HTTPS when cert_file and key_file are set.
	TLS TLSConfig `yaml:"tls"`
}

// AuthConfig is how requests are authenticated. Files are read when the
// adapter starts.
type AuthConfig struct {
	// Mode is bearer (default), hmac, client_cert or none.
	Mode string `yaml:"mode"`
	// TokensFile holds one "name token" pair a line ('#' starts a
	// comment). The name is logged and put in Meta auth_name; the token
	// never is. Tokens must be at least 16 characters.
	TokensFile string `yaml:"tokens_file"`
	// TokenFiles maps a name to a file holding that one token.
	TokenFiles map[string]string `yaml:"token_files"`
	// Services maps an HMAC service id to the file holding its secret.
	Services map[string]string `yaml:"services"`
	// Signer is the string-to-sign layout (lines, date_format); empty means
	// the contract's.
	Signer signer.Config `yaml:"signer"`
	// MaxSkew is the largest accepted distance between a signed request's
	// Date and this clock. Default 15m.
	MaxSkew time.Duration `yaml:"max_skew"`
}

// TLSConfig names PEM files.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, requires every client to present a
	// certificate signed by one of these CAs (whatever auth.mode is).
	ClientCAFile string `yaml:"client_ca_file"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() *Config {
	return &Config{
		Path:              "/ingest",
		DeviceID:          DeviceIDPath,
		ContentTypes:      []string{"application/octet-stream", "text/plain", "application/json"},
		MaxBodyBytes:      1 << 20,
		MaxInFlight:       64,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		EmitTimeout:       30 * time.Second,
		RetryAfter:        30 * time.Second,
		Auth:              AuthConfig{Mode: AuthBearer, MaxSkew: signer.DefaultSkew},
	}
}

var (
	headerNameRe = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
	pathRe       = regexp.MustCompile(`^(/[A-Za-z0-9._~-]+)+$`)
)

// Validate returns every problem as *adapters.FieldError values.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, adapters.Errorf(field, format, args...))
	}
	if c.Listen == "" {
		add("listen", "is required, e.g. \":8443\" or \"127.0.0.1:8080\"")
	} else if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen", "must be host:port or :port (%v)", err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		add("listen", "port %q must be a number from 0 to 65535", port)
	}
	if !pathRe.MatchString(c.Path) {
		add("path", "must be like /ingest (segments of letters, digits, '.', '_', '~', '-'; no trailing /)")
	}
	switch {
	case c.DeviceID == DeviceIDPath, c.DeviceID == DeviceIDNone:
	case strings.HasPrefix(c.DeviceID, deviceIDHeader):
		if !headerNameRe.MatchString(strings.TrimPrefix(c.DeviceID, deviceIDHeader)) {
			add("device_id", "header: needs a header name, e.g. header:X-Device-Id")
		}
	case strings.HasPrefix(c.DeviceID, deviceIDQuery):
		q := strings.TrimPrefix(c.DeviceID, deviceIDQuery)
		if q == "" || q == DecoderParam || strings.ContainsAny(q, "&=#? ") {
			add("device_id", "query: needs a parameter name other than %q, e.g. query:device", DecoderParam)
		}
	default:
		add("device_id", "must be path, none, header:<Name> or query:<name> (got %q)", c.DeviceID)
	}
	seen := map[string]bool{}
	for i, d := range c.AllowedDecoders {
		if d == "" || seen[d] {
			add(fmt.Sprintf("allowed_decoders[%d]", i), "must be a decoder name, each once")
		}
		seen[d] = true
	}
	if len(c.ContentTypes) == 0 {
		add("content_types", "must list at least one media type")
	}
	for i, ct := range c.ContentTypes {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || len(params) > 0 || !strings.Contains(mt, "/") || strings.HasSuffix(mt, "/") {
			add(fmt.Sprintf("content_types[%d]", i), "%q is not a bare media type like application/json", ct)
		}
	}
	if c.MaxBodyBytes < 1 || c.MaxBodyBytes > 64<<20 {
		add("max_body_bytes", "must be between 1 and %d (got %d)", 64<<20, c.MaxBodyBytes)
	}
	if c.MaxInFlight < 1 {
		add("max_in_flight", "must be at least 1")
	}
	for f, d := range map[string]time.Duration{"read_header_timeout": c.ReadHeaderTimeout, "read_timeout": c.ReadTimeout,
		"idle_timeout": c.IdleTimeout, "emit_timeout": c.EmitTimeout} {
		if d <= 0 {
			add(f, "must be a positive duration")
		}
	}
	if c.RetryAfter < time.Second {
		add("retry_after", "must be at least 1s (Retry-After counts seconds)")
	}
	a := &c.Auth
	hasTokens := a.TokensFile != "" || len(a.TokenFiles) > 0
	switch a.Mode {
	case AuthBearer:
		if !hasTokens {
			add("auth.tokens_file", "bearer authentication needs tokens_file or token_files")
		}
	case AuthHMAC:
		if len(a.Services) == 0 {
			add("auth.services", "hmac authentication needs at least one service id and its secret file")
		}
		if err := a.Signer.Validate(); err != nil {
			add("auth.signer", "%v", err)
		}
	case AuthClientCert:
		if c.TLS.ClientCAFile == "" {
			add("tls.client_ca_file", "client_cert authentication needs a client CA")
		}
	case AuthNone:
	default:
		add("auth.mode", "must be bearer, hmac, client_cert or none (got %q)", a.Mode)
	}
	if a.Mode != AuthBearer && hasTokens {
		add("auth.mode", "tokens are given but mode is %q, not bearer", a.Mode)
	}
	if a.Mode != AuthHMAC && len(a.Services) > 0 {
		add("auth.mode", "services are given but mode is %q, not hmac", a.Mode)
	}
	for name, file := range a.TokenFiles {
		if !tokenNameRe.MatchString(name) || file == "" {
			add("auth.token_files."+name, "needs a name of letters, digits, '.', '_', '-', '@' and a file")
		}
	}
	for id, file := range a.Services {
		if id == "" || file == "" {
			add("auth.services."+id, "needs a service id and a secret file")
		}
	}
	if a.MaxSkew <= 0 {
		add("auth.max_skew", "must be a positive duration")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		add("tls", "cert_file and key_file go together")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		add("tls.client_ca_file", "needs cert_file and key_file (client certificates need TLS)")
	}
	return errors.Join(errs...)
}

func init() {
	adapters.Register(adapters.Kind{
		Name:      Kind,
		NewConfig: func() adapters.Config { return DefaultConfig() },
		New: func(name string, cfg adapters.Config, env adapters.Env) (adapters.Adapter, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("http: config is %T, not *httpingest.Config", cfg)
			}
			return New(name, c, env)
		},
	})
}

var _ adapters.Config = (*Config)(nil)
