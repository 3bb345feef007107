package mqtt

import (
	"bytes"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
)

const fullYAML = `
brokers: [ "ssl://broker.example:8883", "wss://broker.example:443/mqtt" ]
client_id: gw-17
username: gateway
password_file: /etc/vigd/mqtt.pass
tls:
  ca_file: /etc/vigd/ca.pem
  cert_file: /etc/vigd/gw.pem
  key_file: /etc/vigd/gw.key
  insecure_skip_verify: false
keepalive: 45s
connect_timeout: 5s
topics:
  - topic: devices/+/up
    qos: 2
    decoder: pump-v2
    identity: {segment: 1}
  - topic: $share/vigd/sensors/#
    identity:
      segment: 3
  - topic: gw/raw
    qos: 0
    identity: payload
clean_session: false
max_inflight: 4
max_buffered: 50
retained: take
silence_timeout: 10m
`

func decodeStrict(t *testing.T, src string) (*Config, error) {
	t.Helper()
	c := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	err := dec.Decode(c)
	return c, err
}

func TestConfigYAML(t *testing.T) {
	c, err := decodeStrict(t, fullYAML)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := Config{
		Brokers:      []string{"ssl://broker.example:8883", "wss://broker.example:443/mqtt"},
		ClientID:     "gw-17",
		Username:     "gateway",
		PasswordFile: "/etc/vigd/mqtt.pass",
		TLS:          TLSConfig{CAFile: "/etc/vigd/ca.pem", CertFile: "/etc/vigd/gw.pem", KeyFile: "/etc/vigd/gw.key"},
		KeepAlive:    45 * time.Second, ConnectTimeout: 5 * time.Second,
		Topics: []Topic{
			{Topic: "devices/+/up", QoS: 2, Decoder: "pump-v2", Identity: Identity{From: IdentitySegment, Segment: 1}},
			{Topic: "$share/vigd/sensors/#", QoS: 1, Identity: Identity{From: IdentitySegment, Segment: 3}},
			{Topic: "gw/raw", QoS: 0, Identity: Identity{From: IdentityPayload}},
		},
		MaxInflight: 4, MaxBuffered: 50, Retained: RetainedTake, SilenceTimeout: 10 * time.Minute,
	}
	if got, w := mustYAML(t, c), mustYAML(t, &want); got != w {
		t.Errorf("decoded\n%s\nwant\n%s", got, w)
	}
	if c.Topics[2].Identity.From != IdentityPayload || c.Topics[0].Identity.From != IdentitySegment {
		t.Errorf("identity forms: %+v", c.Topics)
	}
	if d := c.Decoders(); len(d) != 1 || d[0] != "pump-v2" {
		t.Errorf("Decoders() = %v, want [pump-v2]", d)
	}

	// Defaults survive a minimal block.
	c, err = decodeStrict(t, "brokers: [tcp://127.0.0.1:1883]\ntopics: [{topic: a/+}]\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.KeepAlive != DefaultKeepAlive || c.ConnectTimeout != DefaultConnectTimeout || c.MaxInflight != DefaultMaxInflight ||
		c.MaxBuffered != DefaultMaxBuffered || c.Retained != RetainedIgnore || c.CleanSession || c.Topics[0].QoS != 1 ||
		c.Topics[0].Identity.From != "" {
		t.Errorf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("minimal block: %v", err)
	}
}

func mustYAML(t *testing.T, c *Config) string {
	var b bytes.Buffer
	type id struct {
		From    string
		Segment int
	}
	// Identity's From is yaml:"-"; render it through a shadow.
	type shadow struct {
		C   *Config
		IDs []id
	}
	s := shadow{C: c}
	for _, tp := range c.Topics {
		s.IDs = append(s.IDs, id{tp.Identity.From, tp.Identity.Segment})
	}
	if err := yaml.NewEncoder(&b).Encode(s); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestConfigYAMLErrors(t *testing.T) {
	for name, src := range map[string]string{
		"unknown key":          "brokers: [tcp://h:1]\nbroker: x\n",
		"identity word":        "topics: [{topic: a/+, identity: topic}]\n",
		"identity unknown key": "topics: [{topic: a/+, identity: {level: 1}}]\n",
		"identity not int":     "topics: [{topic: a/+, identity: {segment: one}}]\n",
		"identity empty map":   "topics: [{topic: a/+, identity: {}}]\n",
		"identity list":        "topics: [{topic: a/+, identity: [1]}]\n",
		"identity two keys":    "topics: [{topic: a/+, identity: {segment: 1, segment: 1}}]\n",
		"topic unknown key":    "topics: [{topic: a/+, qoss: 1}]\n",
		"topic duplicate key":  "topics: [{topic: a/+, qos: 1, qos: 2}]\n",
		"adapter decoder key":  "decoder: x\n", // common key: the loader keeps it, the kind never sees it
		"duration not string":  "keepalive: [1]\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeStrict(t, src); err == nil {
				t.Errorf("decoded without error")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() *Config {
		c := DefaultConfig()
		c.Brokers = []string{"tcp://127.0.0.1:1883"}
		c.Topics = []Topic{{Topic: "devices/+/up", QoS: 1, Identity: Identity{From: IdentitySegment, Segment: 1}}}
		return c
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := []struct {
		name   string
		change func(c *Config)
		fields []string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, []string{"brokers"}},
		{"bad scheme", func(c *Config) { c.Brokers = []string{"http://h:1"} }, []string{"brokers[0]"}},
		{"no port", func(c *Config) { c.Brokers = []string{"tcp://h"} }, []string{"brokers[0]"}},
		{"no host", func(c *Config) { c.Brokers = []string{"tcp://:1883"} }, []string{"brokers[0]"}},
		{"password in url", func(c *Config) { c.Brokers = []string{"tcp://u:p@h:1883"} }, []string{"brokers[0]"}},
		{"not a url", func(c *Config) { c.Brokers = []string{"tcp://h:1883/%zz"} }, []string{"brokers[0]"}},
		{"ws without port ok", func(c *Config) { c.Brokers = []string{"ws://h/mqtt"} }, nil},
		{"password without user", func(c *Config) { c.PasswordFile = "/p" }, []string{"username"}},
		{"cert without key", func(c *Config) {
			c.Brokers = []string{"ssl://h:8883"}
			c.TLS.CertFile = "/c"
		}, []string{"tls.cert_file"}},
		{"tls with tcp only", func(c *Config) { c.TLS.CAFile = "/ca" }, []string{"tls"}},
		{"keepalive zero", func(c *Config) { c.KeepAlive = 0 }, []string{"keepalive"}},
		{"keepalive too long", func(c *Config) { c.KeepAlive = 20 * time.Hour }, []string{"keepalive"}},
		{"connect timeout", func(c *Config) { c.ConnectTimeout = 0 }, []string{"connect_timeout"}},
		{"no topics", func(c *Config) { c.Topics = nil }, []string{"topics"}},
		{"bad filter", func(c *Config) { c.Topics[0].Topic = "a/b#" }, []string{"topics[0].topic"}},
		{"twice", func(c *Config) { c.Topics = append(c.Topics, c.Topics[0]) }, []string{"topics[1].topic"}},
		{"qos 3", func(c *Config) { c.Topics[0].QoS = 3 }, []string{"topics[0].qos"}},
		{"segment literal", func(c *Config) { c.Topics[0].Identity.Segment = 0 }, []string{"topics[0].identity.segment"}},
		{"segment out of range", func(c *Config) { c.Topics[0].Identity.Segment = 3 }, []string{"topics[0].identity.segment"}},
		{"segment negative", func(c *Config) { c.Topics[0].Identity.Segment = -1 }, []string{"topics[0].identity.segment"}},
		{"segment under #", func(c *Config) {
			c.Topics[0].Topic = "a/#"
			c.Topics[0].Identity.Segment = 4
		}, nil},
		{"segment of shared", func(c *Config) { c.Topics[0].Topic = "$share/g/devices/+/up" }, nil},
		{"identity form", func(c *Config) { c.Topics[0].Identity.From = "topic" }, []string{"topics[0].identity"}},
		{"max inflight", func(c *Config) { c.MaxInflight = 0 }, []string{"max_inflight"}},
		{"max buffered", func(c *Config) { c.MaxBuffered = 3; c.MaxInflight = 4 }, []string{"max_buffered"}},
		{"retained", func(c *Config) { c.Retained = "keep" }, []string{"retained"}},
		{"silence", func(c *Config) { c.SilenceTimeout = -time.Second }, []string{"silence_timeout"}},
		{"all at once", func(c *Config) {
			c.Brokers = nil
			c.Topics[0].QoS = 9
			c.Retained = ""
		}, []string{"brokers", "retained", "topics[0].qos"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(c)
			err := c.Validate()
			var got []string
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var fe *adapters.FieldError
					if !errors.As(e, &fe) {
						t.Fatalf("error %v is not a *FieldError", e)
					}
					got = append(got, fe.Field)
				}
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
				t.Errorf("fields %v, want %v (%v)", got, tc.fields, err)
			}
		})
	}
}

var filterCases = []struct {
	filter string
	ok     bool
	match  []string
	miss   []string
}{
	{"devices/+/up", true, []string{"devices/a/up", "devices//up"}, []string{"devices/a/down", "devices/a/up/x", "devices/up"}},
	{"sensors/#", true, []string{"sensors", "sensors/a", "sensors/a/b/c"}, []string{"sensorsx", "other/a"}},
	{"#", true, []string{"a", "a/b", "/"}, []string{"$SYS/broker"}},
	{"+/x", true, []string{"a/x", "/x"}, []string{"$SYS/x", "a/y"}},
	{"$SYS/#", true, []string{"$SYS/a"}, []string{"SYS/a"}},
	{"$share/g/devices/+/up", true, []string{"devices/z/up"}, []string{"$share/g/devices/z/up"}},
	{"a/b", true, []string{"a/b"}, []string{"a/b/", "a"}},
	{"/", true, []string{"/"}, []string{"", "a"}},
	{"", false, nil, nil},
	{"a/#/b", false, nil, nil},
	{"a/b#", false, nil, nil},
	{"a+/b", false, nil, nil},
	{"$share/g", false, nil, nil},
	{"$share//a", false, nil, nil},
	{"$share/g+/a", false, nil, nil},
	{"$share/g/", false, nil, nil},
	{"a\x00b", false, nil, nil},
}

func TestFilters(t *testing.T) {
	for _, tc := range filterCases {
		f, err := parseFilter(tc.filter)
		if (err == nil) != tc.ok {
			t.Errorf("parseFilter(%q) error %v, want ok=%v", tc.filter, err, tc.ok)
			continue
		}
		for _, m := range tc.match {
			if !f.match(strings.Split(m, "/")) {
				t.Errorf("%q does not match %q", tc.filter, m)
			}
		}
		for _, m := range tc.miss {
			if f.match(strings.Split(m, "/")) {
				t.Errorf("%q matches %q", tc.filter, m)
			}
		}
	}
}

// FuzzParseFilter: no panic; an accepted filter keeps its text, matches the
// topic made by filling its wildcards, and checkSegment never panics.
func FuzzParseFilter(f *testing.F) {
	for _, tc := range filterCases {
		f.Add(tc.filter, 1)
	}
	f.Fuzz(func(t *testing.T, s string, seg int) {
		flt, err := parseFilter(s)
		if err != nil {
			return
		}
		if flt.raw != s || len(flt.segs) == 0 {
			t.Fatalf("parseFilter(%q) = %+v", s, flt)
		}
		var topic []string
		for _, l := range flt.segs {
			switch l {
			case "+":
				topic = append(topic, "x")
			case "#":
				topic = append(topic, "y", "z")
			default:
				topic = append(topic, l)
			}
		}
		if !strings.HasPrefix(topic[0], "$") && !flt.match(topic) {
			t.Fatalf("%q does not match %q", s, strings.Join(topic, "/"))
		}
		_ = flt.checkSegment(seg)
	})
}

// FuzzTopicYAML: decoding a topic entry never panics, and an accepted
// identity is one of the two forms.
func FuzzTopicYAML(f *testing.F) {
	for _, s := range []string{
		"topic: a/+\nidentity: {segment: 1}\n",
		"topic: a\nidentity: payload\n",
		"identity: {segment: x}\n",
		"identity: [1]\n",
		"qos: 2\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var tp Topic
		if err := yaml.Unmarshal([]byte(s), &tp); err != nil {
			return
		}
		switch tp.Identity.From {
		case "", IdentityPayload, IdentitySegment:
		default:
			t.Fatalf("identity form %q", tp.Identity.From)
		}
	})
}
