package sbdmail

import (
	"errors"
	"net"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/iridium"
)

// Kind is the adapter kind name in the configuration.
const Kind = "sbdmail"

// TLS modes.
const (
	TLSImplicit = "tls"      // IMAPS, usually port 993
	TLSStart    = "starttls" // plain connect, then STARTTLS (required)
	TLSNone     = "none"     // plain text: loopback or a trusted network only
)

// After-processing actions.
const (
	OnSuccessSeen = "seen" // set \Seen; the search skips seen mail
	OnSuccessMove = "move" // move to move_to; the search takes any mail left
)

// Config is the "sbdmail" adapter block. Durations are strings ("60s").
type Config struct {
	// Address of the IMAP server, host:port.
	Address string `yaml:"address"`
	// TLS says how the connection is protected.
	TLS TLSConfig `yaml:"tls"`
	// Username logs in; PasswordFile holds the password (read at each
	// connect, one trailing newline ignored, never logged).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// Folder holding the SBD mails. Default "INBOX".
	Folder string `yaml:"folder"`
	// Idle waits for new mail with IMAP IDLE when the server supports it,
	// between scans. Default true.
	Idle bool `yaml:"idle"`
	// PollInterval is the longest time between two scans (with IDLE a
	// safety net; without it the polling period). Default 60s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// OnSuccess is what happens to a mail once its frame is durable:
	// "seen" (default) or "move" (to MoveTo, created when missing). Only
	// then: a mail whose frame is not durable stays as it was and is
	// emitted again at the next scan.
	OnSuccess string `yaml:"on_success"`
	MoveTo    string `yaml:"move_to"`
	// BatchSize is how many mails one fetch takes. Default 50.
	BatchSize int `yaml:"batch_size"`
	// MaxMessageBytes: a larger mail is not downloaded; it is reported as a
	// frame with Meta parse_error and no payload and left in the mailbox
	// (acknowledged as configured). Default 1 MiB.
	MaxMessageBytes uint32 `yaml:"max_message_bytes"`
	// Timeout bounds connecting and each IMAP command. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// DedupSize bounds the persistent set of (IMEI, MOMSN, time of session)
	// keys used to drop mails seen before. Default 10000.
	DedupSize int `yaml:"dedup_size"`
	// Decoder is put on every frame.
	Decoder string `yaml:"decoder"`
	// CustomerID is put on every frame as the default customer.
	CustomerID string `yaml:"customer_id"`
}

// TLSConfig holds the TLS mode and PEM paths (read at each connect).
type TLSConfig struct {
	// Mode is "tls" (default), "starttls" or "none".
	Mode string `yaml:"mode"`
	// CAFile verifies the server (default: the system roots).
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name checked in the certificate (default:
	// the host of address).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate (logged as a warning).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() *Config {
	return &Config{
		TLS:             TLSConfig{Mode: TLSImplicit},
		Folder:          "INBOX",
		Idle:            true,
		PollInterval:    time.Minute,
		OnSuccess:       OnSuccessSeen,
		BatchSize:       50,
		MaxMessageBytes: 1 << 20,
		Timeout:         30 * time.Second,
		DedupSize:       iridium.DefaultDedupSize,
	}
}

// Validate returns every problem as *adapters.FieldError values.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, adapters.Errorf("address", "must be host:port (%v)", err))
	}
	switch c.TLS.Mode {
	case TLSImplicit, TLSStart, TLSNone:
	default:
		errs = append(errs, adapters.Errorf("tls.mode", "must be one of tls, starttls, none (got %q)", c.TLS.Mode))
	}
	if c.Username == "" {
		errs = append(errs, adapters.Errorf("username", "is required"))
	}
	if c.PasswordFile == "" {
		errs = append(errs, adapters.Errorf("password_file", "is required"))
	}
	if strings.TrimSpace(c.Folder) == "" {
		errs = append(errs, adapters.Errorf("folder", "is required"))
	}
	if c.PollInterval < 100*time.Millisecond {
		errs = append(errs, adapters.Errorf("poll_interval", "must be at least 100ms"))
	}
	switch c.OnSuccess {
	case OnSuccessSeen:
	case OnSuccessMove:
		if strings.TrimSpace(c.MoveTo) == "" {
			errs = append(errs, adapters.Errorf("move_to", "is required when on_success is move"))
		} else if c.MoveTo == c.Folder {
			errs = append(errs, adapters.Errorf("move_to", "must differ from folder"))
		}
	default:
		errs = append(errs, adapters.Errorf("on_success", "must be seen or move (got %q)", c.OnSuccess))
	}
	if c.BatchSize < 1 {
		errs = append(errs, adapters.Errorf("batch_size", "must be at least 1"))
	}
	if c.MaxMessageBytes < 4096 {
		errs = append(errs, adapters.Errorf("max_message_bytes", "must be at least 4096"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, adapters.Errorf("timeout", "must be positive"))
	}
	if c.DedupSize < 1 {
		errs = append(errs, adapters.Errorf("dedup_size", "must be at least 1"))
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
				return nil, errors.New("sbdmail: wrong config type")
			}
			return New(name, c, env)
		},
	})
}
