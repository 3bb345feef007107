package mqtt

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
)

// Config is the "mqtt" adapter block. Durations are strings ("30s").
type Config struct {
	// Brokers are tried in order at each connect: tcp://, ssl://, ws://,
	// wss:// URLs with host and port. Credentials do not belong in the URL
	// (use username and password_file).
	Brokers []string `yaml:"brokers"`
	// ClientID must stay the same across restarts for the broker to keep
	// the session (clean_session false). Default "vigd-HOSTNAME-NAME".
	ClientID string `yaml:"client_id"`
	// Username, and PasswordFile holding the password (read at each
	// connect; one trailing newline is ignored; never logged).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// TLS is used for ssl:// and wss:// brokers.
	TLS TLSConfig `yaml:"tls"`
	// KeepAlive is the MQTT keep-alive; a dead connection is noticed within
	// about KeepAlive plus the 10 s ping timeout. Default 30s.
	KeepAlive time.Duration `yaml:"keepalive"`
	// ConnectTimeout bounds each connect attempt (per broker) and the
	// subscription that follows. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// Topics to subscribe to, at least one.
	Topics []Topic `yaml:"topics"`
	// CleanSession false (default) asks the broker to keep the session and
	// queue QoS 1/2 messages while vigd is away.
	CleanSession bool `yaml:"clean_session"`
	// MaxInflight is how many messages are handed to the sink at once.
	// Default 16.
	MaxInflight int `yaml:"max_inflight"`
	// MaxBuffered is how many received QoS 0 messages may wait for a free
	// emit slot before the adapter disconnects until they are through (a
	// QoS 0 flood is the only unbounded case). QoS 1/2 messages never count:
	// the broker's in-flight window (Mosquitto's max_inflight_messages)
	// bounds them, and a disconnect would only make the broker send them
	// all again. Default 1000.
	MaxBuffered int `yaml:"max_buffered"`
	// Retained says what to do with retained messages the broker replays
	// when the adapter subscribes: "ignore" (default: acknowledge, do not
	// emit) or "take" (emit; each reconnect replays them again).
	Retained string `yaml:"retained"`
	// SilenceTimeout: when connected, holding no message, and nothing has
	// arrived for this long, the adapter reconnects and reports itself
	// silent until a message comes. 0 (default) turns it off.
	SilenceTimeout time.Duration `yaml:"silence_timeout"`
	// The adapter-wide decoder and customer_id keys are common to every
	// kind: the config loader keeps them and the pipeline applies them to
	// frames that carry none (a topic's decoder wins).
}

// Decoders lists the decoder names the topics ask for, for "vigd check".
func (c *Config) Decoders() []string {
	var out []string
	for _, t := range c.Topics {
		if t.Decoder != "" && !slices.Contains(out, t.Decoder) {
			out = append(out, t.Decoder)
		}
	}
	return out
}

// TLSConfig holds PEM file paths, read at each connect.
type TLSConfig struct {
	// CAFile verifies the broker (default: the system roots).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate, both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InsecureSkipVerify accepts any broker certificate (logged as a
	// warning at start).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (t TLSConfig) isSet() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.InsecureSkipVerify
}

// Topic is one subscription.
type Topic struct {
	// Topic is the filter: "devices/+/up", "sensors/#", or a shared
	// subscription "$share/GROUP/devices/+/up".
	Topic string `yaml:"topic"`
	// QoS requested, 0..2. Default 1 (0 is at-most-once by design: the
	// broker never sends a QoS 0 message again).
	QoS int `yaml:"qos"`
	// Decoder for this topic's frames (default: the adapter's decoder).
	Decoder string `yaml:"decoder"`
	// Identity says where the device id is: {segment: N} or "payload".
	Identity Identity `yaml:"identity"`
}

var topicKeys = []string{"topic", "qos", "decoder", "identity"}

// UnmarshalYAML applies the per-topic default QoS 1. A type with its own
// UnmarshalYAML is decoded as a whole by yaml.v3 (and by the strict config
// loader), so it checks its keys itself.
func (t *Topic) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if !slices.Contains(topicKeys, k.Value) {
				return fmt.Errorf("line %d: unknown key %q in a topic (known: %s)", k.Line, k.Value, strings.Join(topicKeys, ", "))
			}
			if seen[k.Value] {
				return fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
			}
			seen[k.Value] = true
		}
	}
	type plain Topic
	p := plain{QoS: 1}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*t = Topic(p)
	return nil
}

// Identity forms.
const (
	IdentityPayload = "payload"
	IdentitySegment = "segment"
)

// Identity is where the device id comes from. In YAML it is either
// {segment: N} — the N-th level (from 0) of the topic, which must be a
// wildcard of the filter ("devices/+/up" → segment: 1), counted after a
// "$share/GROUP/" prefix — or the word "payload" (the decoder finds it; the
// frame's Identity stays empty). Absent means payload.
type Identity struct {
	From    string `yaml:"-"`
	Segment int    `yaml:"segment"`
}

// UnmarshalYAML accepts "payload" or {segment: N}.
func (id *Identity) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value != IdentityPayload {
			return fmt.Errorf("identity: want \"payload\" or {segment: N}, got %q", n.Value)
		}
		*id = Identity{From: IdentityPayload}
		return nil
	case yaml.MappingNode:
		var seg *int
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value != "segment" || seg != nil {
				return fmt.Errorf("line %d: identity: unexpected key %q (want one segment)", k.Line, k.Value)
			}
			var s int
			if err := v.Decode(&s); err != nil {
				return fmt.Errorf("identity.segment: %w", err)
			}
			seg = &s
		}
		if seg == nil {
			return errors.New("identity: want {segment: N}")
		}
		*id = Identity{From: IdentitySegment, Segment: *seg}
		return nil
	}
	return errors.New("identity: want \"payload\" or {segment: N}")
}

// Defaults.
const (
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultMaxInflight    = 16
	DefaultMaxBuffered    = 1000
	RetainedIgnore        = "ignore"
	RetainedTake          = "take"
)

// DefaultConfig returns a Config holding the defaults.
func DefaultConfig() *Config {
	return &Config{
		KeepAlive:      DefaultKeepAlive,
		ConnectTimeout: DefaultConnectTimeout,
		MaxInflight:    DefaultMaxInflight,
		MaxBuffered:    DefaultMaxBuffered,
		Retained:       RetainedIgnore,
	}
}

var brokerSchemes = map[string]bool{"tcp": true, "ssl": true, "ws": true, "wss": true}

// Validate returns every problem as *adapters.FieldError values joined.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, adapters.Errorf(field, format, args...))
	}
	if len(c.Brokers) == 0 {
		add("brokers", "at least one broker URL is required (tcp://host:1883)")
	}
	secure := false
	for i, b := range c.Brokers {
		f := fmt.Sprintf("brokers[%d]", i)
		u, err := url.Parse(b)
		switch {
		case err != nil:
			add(f, "not a URL: %v", err)
			continue
		case !brokerSchemes[u.Scheme]:
			add(f, "scheme %q: want tcp, ssl, ws or wss", u.Scheme)
			continue
		case u.Hostname() == "":
			add(f, "no host in %q", u.Redacted())
		case (u.Scheme == "tcp" || u.Scheme == "ssl") && u.Port() == "":
			add(f, "no port in %q (1883 for tcp, 8883 for ssl)", u.Redacted())
		}
		if _, hasPw := u.User.Password(); hasPw {
			add(f, "has a password in the URL: use username and password_file")
		}
		if u.Scheme == "ssl" || u.Scheme == "wss" {
			secure = true
		}
	}
	if len(c.ClientID) > 65535 {
		add("client_id", "longer than 65535 bytes")
	}
	if c.PasswordFile != "" && c.Username == "" {
		add("username", "required with password_file (MQTT sends no password without a username)")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		add("tls.cert_file", "cert_file and key_file go together")
	}
	if c.TLS.isSet() && !secure && len(c.Brokers) > 0 {
		add("tls", "set, but no broker uses ssl:// or wss://")
	}
	if c.KeepAlive < time.Second || c.KeepAlive > 65535*time.Second {
		add("keepalive", "%s: want 1s..18h12m15s", c.KeepAlive)
	}
	if c.ConnectTimeout <= 0 {
		add("connect_timeout", "%s: want > 0", c.ConnectTimeout)
	}
	if len(c.Topics) == 0 {
		add("topics", "at least one topic is required")
	}
	seen := map[string]bool{}
	for i, t := range c.Topics {
		f := fmt.Sprintf("topics[%d]", i)
		flt, err := parseFilter(t.Topic)
		if err != nil {
			add(f+".topic", "%v", err)
		} else if seen[t.Topic] {
			add(f+".topic", "%q is listed twice", t.Topic)
		}
		seen[t.Topic] = true
		if t.QoS < 0 || t.QoS > 2 {
			add(f+".qos", "%d: want 0, 1 or 2", t.QoS)
		}
		switch t.Identity.From {
		case "", IdentityPayload:
		case IdentitySegment:
			if err == nil {
				if msg := flt.checkSegment(t.Identity.Segment); msg != "" {
					add(f+".identity.segment", "%s", msg)
				}
			}
		default:
			add(f+".identity", "%q: want payload or {segment: N}", t.Identity.From)
		}
	}
	if c.MaxInflight < 1 {
		add("max_inflight", "%d: want >= 1", c.MaxInflight)
	}
	if c.MaxBuffered < c.MaxInflight {
		add("max_buffered", "%d: want >= max_inflight (%d)", c.MaxBuffered, c.MaxInflight)
	}
	if c.Retained != RetainedIgnore && c.Retained != RetainedTake {
		add("retained", "%q: want ignore or take", c.Retained)
	}
	if c.SilenceTimeout < 0 {
		add("silence_timeout", "%s: want >= 0 (0 turns it off)", c.SilenceTimeout)
	}
	return errors.Join(errs...)
}

// filter is a parsed subscription filter.
type filter struct {
	raw  string   // as subscribed, with any $share/GROUP/ prefix
	segs []string // levels of the filter proper
}

// parseFilter checks an MQTT 3.1.1 topic filter (4.7) and strips a
// shared-subscription prefix for matching.
func parseFilter(s string) (filter, error) {
	if s == "" {
		return filter{}, errors.New("empty topic filter")
	}
	if len(s) > 65535 {
		return filter{}, errors.New("topic filter longer than 65535 bytes")
	}
	if strings.ContainsRune(s, 0) {
		return filter{}, errors.New("topic filter contains NUL")
	}
	f := filter{raw: s}
	rest := s
	if strings.HasPrefix(s, "$share/") {
		group, after, ok := strings.Cut(strings.TrimPrefix(s, "$share/"), "/")
		if !ok || group == "" || after == "" {
			return filter{}, fmt.Errorf("%q: want $share/GROUP/FILTER", s)
		}
		if strings.ContainsAny(group, "+#") {
			return filter{}, fmt.Errorf("%q: share group may not hold + or #", s)
		}
		rest = after
	}
	f.segs = strings.Split(rest, "/")
	for i, seg := range f.segs {
		if strings.Contains(seg, "#") && (seg != "#" || i != len(f.segs)-1) {
			return filter{}, fmt.Errorf("%q: # must be the whole last level", s)
		}
		if strings.Contains(seg, "+") && seg != "+" {
			return filter{}, fmt.Errorf("%q: + must be a whole level", s)
		}
	}
	return f, nil
}

// checkSegment says what is wrong with taking the identity from level i,
// or "" when the level is a wildcard (so it varies per device).
func (f filter) checkSegment(i int) string {
	if i < 0 {
		return fmt.Sprintf("%d: want >= 0", i)
	}
	for j, seg := range f.segs {
		if seg == "#" && j <= i {
			return ""
		}
		if j == i {
			if seg == "+" {
				return ""
			}
			return fmt.Sprintf("%d: level %d of %q is %q, not a wildcard", i, i, f.raw, seg)
		}
	}
	return fmt.Sprintf("%d: %q has only %d levels", i, f.raw, len(f.segs))
}

// match reports whether a topic (split on "/") matches the filter
// (MQTT 3.1.1 4.7; a filter starting with a wildcard does not match a topic
// starting with "$").
func (f filter) match(topic []string) bool {
	if len(topic) > 0 && strings.HasPrefix(topic[0], "$") && len(f.segs) > 0 &&
		(f.segs[0] == "+" || f.segs[0] == "#") {
		return false
	}
	for i, seg := range f.segs {
		if seg == "#" {
			return true
		}
		if i >= len(topic) {
			return false
		}
		if seg != "+" && seg != topic[i] {
			return false
		}
	}
	return len(topic) == len(f.segs)
}

var _ adapters.Config = (*Config)(nil)
