package orbcomm

import (
	"errors"
	"reflect"
	"sort"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
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
	good := func(c *Config) {
		c.URL = "https://isatdatapro.orbcomm.com/GLGW/2/RestMessages.svc/JSON/get_return_messages/"
		c.AccessID = "70000934"
		c.PasswordFile = "/etc/vigd/orbcomm.pw"
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"defaults with the required keys", func(c *Config) {}, nil},
		{"required keys missing", func(c *Config) { c.URL, c.AccessID, c.PasswordFile = "", "", "" }, []string{"access_id", "password_file", "url"}},
		{"url scheme", func(c *Config) { c.URL = "ftp://h/x" }, []string{"url"}},
		{"url without host", func(c *Config) { c.URL = "https:///x" }, []string{"url"}},
		{"url with credentials", func(c *Config) { c.URL = "https://u:p@h/x" }, []string{"url"}},
		{"url with a query", func(c *Config) { c.URL = "https://h/x?access_id=1" }, []string{"url"}},
		{"both password sources", func(c *Config) { c.PasswordCredential = "orbcomm" }, []string{"password_credential"}},
		{"credential only", func(c *Config) { c.PasswordFile, c.PasswordCredential = "", "orbcomm" }, nil},
		{"credential with a slash", func(c *Config) { c.PasswordFile, c.PasswordCredential = "", "../x" }, []string{"password_credential"}},
		{"access id with a space", func(c *Config) { c.AccessID = "a b" }, []string{"access_id"}},
		{"limits", func(c *Config) {
			c.PollInterval, c.CallsPerMinute, c.Timeout, c.Lookback = 0, 0, 0, -time.Second
			c.DedupSize, c.MaxResponseBytes, c.RetryMin, c.RetryMax = 0, 10, 0, -1
		}, []string{"calls_per_minute", "dedup_size", "lookback", "max_response_bytes", "poll_interval", "retry_max", "retry_min", "timeout"}},
		{"retry_max below retry_min", func(c *Config) { c.RetryMin, c.RetryMax = time.Minute, time.Second }, []string{"retry_max"}},
		{"start_time gateway format", func(c *Config) { c.StartTime = "2024-05-23 10:14:05" }, nil},
		{"start_time RFC 3339", func(c *Config) { c.StartTime = "2024-05-23T10:14:05+02:00" }, nil},
		{"start_time bad", func(c *Config) { c.StartTime = "yesterday" }, []string{"start_time"}},
		{"mobile id with &", func(c *Config) { c.MobileID = "a&b" }, []string{"mobile_id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			good(c)
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
url: https://gw.example/GLGW/2/RestMessages.svc/JSON/get_return_messages/
access_id: "70000934"
password_file: /run/credentials/vigd.service/orbcomm
poll_interval: 15s
calls_per_minute: 5
start_time: "2024-05-01 00:00:00"
include_raw_payload: false
dedup_size: 500
`), c)
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval != 15*time.Second || c.CallsPerMinute != 5 || c.IncludeRawPayload || c.DedupSize != 500 || c.Timeout != 30*time.Second || c.Lookback != 24*time.Hour {
		t.Errorf("%+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

func TestRegistered(t *testing.T) {
	k, ok := adapters.Lookup(Kind)
	if !ok {
		t.Fatal("orbcomm not registered")
	}
	cfg := k.NewConfig().(*Config)
	if _, err := k.New("x", cfg, adapters.Env{}); err == nil {
		t.Error("New accepted a config without url")
	}
	cfg.URL, cfg.AccessID, cfg.PasswordFile = "http://h/x/", "a", "/p"
	a, err := k.New("x", cfg, adapters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if st := a.(adapters.StatusReporter).Status(); st.OK || st.Detail != "not started" {
		t.Errorf("status before Run %+v", st)
	}
}
