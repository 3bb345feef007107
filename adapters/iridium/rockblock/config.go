package rockblock

import (
	"errors"
	"net"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/iridium"
	"github.com/vigd/vigd/adapters/netguard"
)

// Kind is the adapter kind name in the configuration.
const Kind = "rockblock"

// Config is the "rockblock" adapter block. Durations are strings ("10s").
type Config struct {
	// Listen is the HTTP listen address. Default ":8090".
	Listen string `yaml:"listen"`
	// Path is the webhook path configured in the RockBLOCK / Ground Control
	// delivery group. Default "/rockblock".
	Path string `yaml:"path"`
	// PublicKeyFile is the PEM RSA public key the RS256 JWT is checked with
	// (Ground Control publishes it; read when the adapter starts).
	PublicKeyFile string `yaml:"public_key_file"`
	// RequireJWT refuses posts without a valid JWT (401 missing, 403
	// invalid). When false such posts are accepted on their unsigned body
	// fields, with a warning. Default true.
	RequireJWT bool `yaml:"require_jwt"`
	// JWTIssuer is the "iss" claim a valid JWT must carry. Default
	// "Rock 7"; empty accepts any issuer.
	JWTIssuer string `yaml:"jwt_issuer"`
	// MaxBodyBytes bounds a post's body (413 beyond). Default 65536.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ReadTimeout bounds reading a request (headers and body). Default 10s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// AllowedSources lists IP addresses or CIDR prefixes allowed to
	// connect (RockBLOCK's servers, or the reverse proxy); others are
	// closed at once. Empty allows any.
	AllowedSources []string `yaml:"allowed_sources"`
	// MaxConnections bounds concurrent connections; more are closed at
	// once. Default 128.
	MaxConnections int `yaml:"max_connections"`
	// TLS serves HTTPS when both files are set (else plain HTTP, e.g.
	// behind a reverse proxy).
	TLS TLSConfig `yaml:"tls"`
	// DedupSize bounds the persistent set of (imei, momsn, transmit_time)
	// keys used to drop redeliveries. Default 10000.
	DedupSize int `yaml:"dedup_size"`
	// Decoder is put on every frame.
	Decoder string `yaml:"decoder"`
	// CustomerID is put on every frame as the default customer.
	CustomerID string `yaml:"customer_id"`
}

// TLSConfig names the server certificate and key (PEM files).
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() *Config {
	return &Config{
		Listen:         ":8090",
		Path:           "/rockblock",
		RequireJWT:     true,
		JWTIssuer:      "Rock 7",
		MaxBodyBytes:   64 << 10,
		ReadTimeout:    10 * time.Second,
		MaxConnections: 128,
		DedupSize:      iridium.DefaultDedupSize,
	}
}

// Validate returns every problem as *adapters.FieldError values.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, adapters.Errorf("listen", "must be host:port (%v)", err))
	}
	if !strings.HasPrefix(c.Path, "/") {
		errs = append(errs, adapters.Errorf("path", "must start with /"))
	}
	if c.RequireJWT && c.PublicKeyFile == "" {
		errs = append(errs, adapters.Errorf("public_key_file", "is required when require_jwt is true"))
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, adapters.Errorf("max_body_bytes", "must be at least 1024"))
	}
	if c.ReadTimeout <= 0 {
		errs = append(errs, adapters.Errorf("read_timeout", "must be positive"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, adapters.Errorf("tls", "cert_file and key_file go together"))
	}
	if c.DedupSize < 1 {
		errs = append(errs, adapters.Errorf("dedup_size", "must be at least 1"))
	}
	if _, err := netguard.ParseAllowList(c.AllowedSources); err != nil {
		errs = append(errs, adapters.Errorf("allowed_sources", "%v", err))
	}
	if c.MaxConnections < 1 {
		errs = append(errs, adapters.Errorf("max_connections", "must be at least 1"))
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
				return nil, errors.New("rockblock: wrong config type")
			}
			return New(name, c, env)
		},
	})
}
