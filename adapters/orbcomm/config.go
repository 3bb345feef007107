package orbcomm

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
)

// Kind is the adapter kind name.
const Kind = "orbcomm"

// Config is the "orbcomm" adapter block. Durations are strings ("30s").
type Config struct {
	// URL is the get_return_messages endpoint, e.g.
	// https://isatdatapro.orbcomm.com/GLGW/2/RestMessages.svc/JSON/get_return_messages/
	// Required. The adapter adds the query string.
	URL string `yaml:"url"`
	// AccessID is the mailbox's access id. Required. Sent in the query
	// string; never logged.
	AccessID string `yaml:"access_id"`
	// PasswordFile holds the mailbox password (one trailing newline is
	// ignored); read when the adapter starts. Exactly one of password_file
	// and password_credential.
	PasswordFile string `yaml:"password_file"`
	// PasswordCredential names the password in systemd's
	// $CREDENTIALS_DIRECTORY (LoadCredential= in the unit).
	PasswordCredential string `yaml:"password_credential"`
	// PollInterval is the wait between polls once a page says no More.
	// Default 30s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// CallsPerMinute caps calls to the gateway, retries and More pages
	// included (IGWS2 allows about 10 a minute per mailbox). Default 10.
	CallsPerMinute int `yaml:"calls_per_minute"`
	// Timeout bounds one call (connect, answer, body). Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// StartTime is where the very first poll starts (no saved mark yet):
	// "YYYY-MM-DD hh:mm:ss" UTC or RFC 3339. Empty: now minus Lookback.
	StartTime string `yaml:"start_time"`
	// Lookback is how far back the very first poll starts when StartTime
	// is empty. The gateway keeps messages for a few days. Default 24h.
	Lookback time.Duration `yaml:"lookback"`
	// IncludeRawPayload asks for RawPayload with every message
	// (include_raw_payload=true). Default true.
	IncludeRawPayload bool `yaml:"include_raw_payload"`
	// MobileID restricts the poll to one terminal (mobile_id=...). Empty:
	// the whole mailbox.
	MobileID string `yaml:"mobile_id"`
	// DedupSize bounds the persistent set of message IDs already queued
	// (a repeated message is dropped). Default 10000.
	DedupSize int `yaml:"dedup_size"`
	// MaxResponseBytes bounds one answer's body. Default 32 MiB.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// RetryMin and RetryMax bound the back-off after a failed call.
	// Defaults 5s and 5m.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() *Config {
	return &Config{
		PollInterval:      30 * time.Second,
		CallsPerMinute:    10,
		Timeout:           30 * time.Second,
		Lookback:          24 * time.Hour,
		IncludeRawPayload: true,
		DedupSize:         10000,
		MaxResponseBytes:  32 << 20,
		RetryMin:          5 * time.Second,
		RetryMax:          5 * time.Minute,
	}
}

// Validate returns every problem as *adapters.FieldError values.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, adapters.Errorf(field, format, args...))
	}
	if c.URL == "" {
		add("url", "is required, e.g. https://isatdatapro.orbcomm.com/GLGW/2/RestMessages.svc/JSON/get_return_messages/")
	} else if u, err := url.Parse(c.URL); err != nil {
		add("url", "is not a URL")
	} else {
		switch {
		case u.Scheme != "http" && u.Scheme != "https":
			add("url", "must be an http:// or https:// URL")
		case u.Host == "":
			add("url", "has no host")
		case u.User != nil:
			add("url", "must not carry credentials (use access_id and password_file)")
		case u.RawQuery != "" || u.Fragment != "":
			add("url", "must not have a query string or fragment (the adapter adds the query)")
		}
	}
	if c.AccessID == "" {
		add("access_id", "is required")
	} else if strings.ContainsAny(c.AccessID, " \t\r\n") {
		add("access_id", "must not contain white space")
	}
	switch {
	case c.PasswordFile == "" && c.PasswordCredential == "":
		add("password_file", "is required (or password_credential)")
	case c.PasswordFile != "" && c.PasswordCredential != "":
		add("password_credential", "give password_file or password_credential, not both")
	case strings.ContainsAny(c.PasswordCredential, `/\`):
		add("password_credential", "must be a plain credential name")
	}
	if c.PollInterval <= 0 {
		add("poll_interval", "must be a positive duration")
	}
	if c.CallsPerMinute < 1 || c.CallsPerMinute > 6000 {
		add("calls_per_minute", "must be between 1 and 6000 (got %d)", c.CallsPerMinute)
	}
	if c.Timeout <= 0 {
		add("timeout", "must be a positive duration")
	}
	if c.StartTime != "" {
		if _, err := parseStart(c.StartTime); err != nil {
			add("start_time", "%v", err)
		}
	}
	if c.Lookback < 0 {
		add("lookback", "must not be negative")
	}
	if strings.ContainsAny(c.MobileID, " \t\r\n&?#") {
		add("mobile_id", "is not a mobile id")
	}
	if c.DedupSize < 1 {
		add("dedup_size", "must be at least 1")
	}
	if c.MaxResponseBytes < 64<<10 {
		add("max_response_bytes", "must be at least 65536")
	}
	if c.RetryMin <= 0 {
		add("retry_min", "must be a positive duration")
	}
	if c.RetryMax < c.RetryMin {
		add("retry_max", "must not be below retry_min (%s)", c.RetryMin)
	}
	return errors.Join(errs...)
}

// parseStart reads start_time: the gateway's format (UTC) or RFC 3339.
func parseStart(s string) (time.Time, error) {
	if t, err := ParseTime(s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither \"YYYY-MM-DD hh:mm:ss\" (UTC) nor RFC 3339", s)
}

func init() {
	adapters.Register(adapters.Kind{
		Name:      Kind,
		NewConfig: func() adapters.Config { return DefaultConfig() },
		New: func(name string, cfg adapters.Config, env adapters.Env) (adapters.Adapter, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("orbcomm: config is %T, not *orbcomm.Config", cfg)
			}
			return New(name, c, env)
		},
	})
}

var _ adapters.Config = (*Config)(nil)
