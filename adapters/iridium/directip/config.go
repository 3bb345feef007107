package directip

import (
	"errors"
	"net"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/iridium"
	"github.com/vigd/vigd/adapters/netguard"
)

// Kind is the adapter kind name in the configuration.
const Kind = "directip"

// Config is the "directip" adapter block. Durations are strings ("30s").
type Config struct {
	// Listen is the TCP address the Iridium gateway connects to (the
	// address and port set for the IMEI in SPNet). Default ":10800".
	Listen string `yaml:"listen"`
	// MOConfirmation sends the MO confirmation (01 0004 05 0001 01) after
	// each message is durably queued. Set it when the SSD is provisioned
	// for confirmation; the gateway then re-queues any message it gets no
	// confirmation for. Default false.
	MOConfirmation bool `yaml:"mo_confirmation"`
	// ReadTimeout bounds the time from accept to the last byte of the
	// message. Default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds sending the confirmation. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxConnections is how many gateway connections are served at once;
	// beyond that the adapter stops accepting (the gateway retries).
	// Default 64.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP bounds connections from one remote address
	// (IPv6: one /64). The Iridium gateway opens many connections from a
	// few addresses, so keep it well above what the gateway needs; 0 (the
	// default) means no per-address limit — allowed_sources is the real
	// protection.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// AllowedSources lists IP addresses or CIDR prefixes allowed to connect
	// (the Iridium gateway's addresses). Empty allows any.
	AllowedSources []string `yaml:"allowed_sources"`
	// DedupSize bounds the persistent set of (IMEI, MOMSN, CDR reference)
	// keys used to drop redeliveries. Default 10000.
	DedupSize int `yaml:"dedup_size"`
	// Decoder is put on every frame.
	Decoder string `yaml:"decoder"`
	// CustomerID is put on every frame as the default customer.
	CustomerID string `yaml:"customer_id"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() *Config {
	return &Config{
		Listen:         ":10800",
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   10 * time.Second,
		MaxConnections: 64,
		DedupSize:      iridium.DefaultDedupSize,
	}
}

// Validate returns every problem as *adapters.FieldError values.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, adapters.Errorf("listen", "must be host:port (%v)", err))
	}
	if c.ReadTimeout <= 0 {
		errs = append(errs, adapters.Errorf("read_timeout", "must be positive"))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, adapters.Errorf("write_timeout", "must be positive"))
	}
	if c.MaxConnections < 1 {
		errs = append(errs, adapters.Errorf("max_connections", "must be at least 1"))
	}
	if c.DedupSize < 1 {
		errs = append(errs, adapters.Errorf("dedup_size", "must be at least 1"))
	}
	if c.MaxConnectionsPerIP < 0 {
		errs = append(errs, adapters.Errorf("max_connections_per_ip", "must not be negative (0: no per-address limit)"))
	}
	if _, err := netguard.ParseAllowList(c.AllowedSources); err != nil {
		errs = append(errs, adapters.Errorf("allowed_sources", "%v", err))
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
				return nil, errors.New("directip: wrong config type")
			}
			return New(name, c, env)
		},
	})
}
