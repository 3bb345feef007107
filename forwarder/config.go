package forwarder

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/tlsconf"
)

// Duration is a time.Duration written as a string in YAML ("30s", "1m30s").
type Duration time.Duration

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads "30s"; a bare 0 is accepted as zero.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if s == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (like 30s, 5m, 1h)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the string form.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Paths of the eventstore endpoints, relative to Config.URL.
type Paths struct {
	Things       string `yaml:"things"`
	Datastreams  string `yaml:"datastreams"`
	Observations string `yaml:"observations"`
	Alarms       string `yaml:"alarms"`
	Raw          string `yaml:"raw"`
}

// Batch limits of one request.
type Batch struct {
	MaxRecords int   `yaml:"max_records"`
	MaxBytes   int64 `yaml:"max_bytes"`
	// Linger is how long a batch that is not full waits for more records.
	Linger Duration `yaml:"linger"`
}

// Retry is the backoff of failed requests: exponential from Min to Max with
// jitter; a Retry-After from the server is the least wait.
type Retry struct {
	Min Duration `yaml:"min"`
	Max Duration `yaml:"max"`
}

// Config of the forwarder (the "forwarder:" section of vigd.yaml).
type Config struct {
	// URL is the eventstore's base URL ("https://xcloud.example.com").
	URL       string `yaml:"url"`
	ServiceID string `yaml:"service_id"`
	// Exactly one of SecretFile and SecretCredential (a systemd
	// LoadCredential= name) holds the API secret.
	SecretFile       string `yaml:"secret_file"`
	SecretCredential string `yaml:"secret_credential"`
	Paths            Paths  `yaml:"paths"`
	// RawEnabled posts raw records to the v1 raw endpoint; when false they
	// are consumed without sending (counted as "skipped").
	RawEnabled bool `yaml:"raw_enabled"`
	// Gzip compresses request bodies (Content-Encoding: gzip).
	Gzip bool `yaml:"gzip"`
	// Timeout of one request.
	Timeout           Duration `yaml:"timeout"`
	Batch             Batch    `yaml:"batch"`
	RequestsPerSecond float64  `yaml:"requests_per_second"`
	// ParallelRequests is how many requests may be in flight at once.
	// Only batches of different devices go together; a device's batches
	// still go one after the other. With many devices per window and a
	// server that answers in parallel, more than 1 hides round trips.
	ParallelRequests int           `yaml:"parallel_requests"`
	Retry            Retry         `yaml:"retry"`
	Signing          signer.Config `yaml:"signing"`
	// TLS verifies the eventstore (system roots, or ca_file) and may
	// present a client certificate; insecure_skip_verify turns
	// verification off and is logged as a warning at every start.
	TLS tlsconf.Client `yaml:"tls"`
	// Proxy is "" (HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the
	// environment), "none" (direct) or a proxy URL.
	Proxy string `yaml:"proxy"`
}

// Default endpoint paths (contract v2-eventstore.md).
const (
	DefaultThingsPath       = "/xcloud/v2/eventstore/data/parsed/things"
	DefaultDatastreamsPath  = "/xcloud/v2/eventstore/data/parsed/datastreams"
	DefaultObservationsPath = "/xcloud/v2/eventstore/data/parsed/observations"
	DefaultAlarmsPath       = "/xcloud/v2/eventstore/data/parsed/alarms"
	DefaultRawPath          = "/xcloud/v1/eventstore/data/raw"
)

// DefaultConfig is the configuration with every default filled in; YAML is
// decoded on top of it.
func DefaultConfig() Config {
	return Config{
		Paths: Paths{
			Things:       DefaultThingsPath,
			Datastreams:  DefaultDatastreamsPath,
			Observations: DefaultObservationsPath,
			Alarms:       DefaultAlarmsPath,
			Raw:          DefaultRawPath,
		},
		RawEnabled:        true,
		Timeout:           Duration(30 * time.Second),
		Batch:             Batch{MaxRecords: 500, MaxBytes: 1 << 20, Linger: Duration(time.Second)},
		RequestsPerSecond: 10,
		ParallelRequests:  1,
		Retry:             Retry{Min: Duration(time.Second), Max: Duration(5 * time.Minute)},
		Signing:           signer.DefaultConfig(),
	}
}

// withDefaults fills zero values (of a Config not made by DefaultConfig).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.Paths.Things, d.Paths.Things)
	set(&c.Paths.Datastreams, d.Paths.Datastreams)
	set(&c.Paths.Observations, d.Paths.Observations)
	set(&c.Paths.Alarms, d.Paths.Alarms)
	set(&c.Paths.Raw, d.Paths.Raw)
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.Batch.MaxRecords == 0 {
		c.Batch.MaxRecords = d.Batch.MaxRecords
	}
	if c.Batch.MaxBytes == 0 {
		c.Batch.MaxBytes = d.Batch.MaxBytes
	}
	if c.RequestsPerSecond == 0 {
		c.RequestsPerSecond = d.RequestsPerSecond
	}
	if c.ParallelRequests == 0 {
		c.ParallelRequests = d.ParallelRequests
	}
	if c.Retry.Min == 0 {
		c.Retry.Min = d.Retry.Min
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = d.Retry.Max
	}
	c.Signing = c.Signing.WithDefaults()
	return c
}

// Validate returns every problem, each as "field: message" (fields are the
// YAML keys under forwarder:).
func (c Config) Validate() error {
	var errs []error
	add := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if c.URL == "" {
		add("url", "is required")
	} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("url", "must be an http:// or https:// URL (got %q)", c.URL)
	}
	if c.ServiceID == "" {
		add("service_id", "is required")
	}
	if (c.SecretFile == "") == (c.SecretCredential == "") {
		add("secret_file", "exactly one of secret_file and secret_credential must be set")
	}
	for _, p := range []struct{ name, v string }{
		{"things", c.Paths.Things}, {"datastreams", c.Paths.Datastreams}, {"observations", c.Paths.Observations},
		{"alarms", c.Paths.Alarms}, {"raw", c.Paths.Raw},
	} {
		if p.v != "" && !strings.HasPrefix(p.v, "/") {
			add("paths."+p.name, "must start with / (got %q)", p.v)
		}
	}
	if c.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	if c.Batch.MaxRecords < 0 || c.Batch.MaxRecords > 100000 {
		add("batch.max_records", "must be between 1 and 100000 (got %d)", c.Batch.MaxRecords)
	}
	if c.Batch.MaxBytes < 0 || (c.Batch.MaxBytes > 0 && c.Batch.MaxBytes < 1024) {
		add("batch.max_bytes", "must be at least 1024 (got %d)", c.Batch.MaxBytes)
	}
	if c.Batch.Linger < 0 {
		add("batch.linger", "must not be negative")
	}
	if c.ParallelRequests < 0 || c.ParallelRequests > 64 {
		add("parallel_requests", "must be between 1 and 64 (got %d)", c.ParallelRequests)
	}
	if c.RequestsPerSecond < 0 {
		add("requests_per_second", "must not be negative")
	}
	if c.Retry.Min < 0 || c.Retry.Max < 0 {
		add("retry", "durations must not be negative")
	} else if c.Retry.Max != 0 && c.Retry.Min > c.Retry.Max {
		add("retry.max", "must be at least retry.min (%s)", c.Retry.Min)
	}
	errs = append(errs, c.checkTransport()...)
	if err := c.Signing.Validate(); err != nil {
		for _, e := range unjoin(err) {
			msg := strings.TrimPrefix(e.Error(), signer.ErrConfig.Error()+": ")
			add("signing."+strings.SplitN(msg, ": ", 2)[0], "%s", rest(msg))
		}
	}
	return errors.Join(errs...)
}

func rest(s string) string {
	if _, r, ok := strings.Cut(s, ": "); ok {
		return r
	}
	return s
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
