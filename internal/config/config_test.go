package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/vigd/vigd/adapters"
)

type fakeConfig struct {
	Listen string `yaml:"listen"`
	Baud   int    `yaml:"baud"`
	TLS    struct {
		CAFile string `yaml:"ca_file"`
	} `yaml:"tls"`
}

func (c *fakeConfig) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, adapters.Errorf("listen", "is required"))
	}
	if c.Baud != 0 && c.Baud != 9600 && c.Baud != 115200 {
		errs = append(errs, adapters.Errorf("baud", "must be one of 9600, 115200"))
	}
	return errors.Join(errs...)
}

func init() {
	adapters.Register(adapters.Kind{
		Name:      "fake",
		NewConfig: func() adapters.Config { return &fakeConfig{} },
		New:       func(string, adapters.Config, adapters.Env) (adapters.Adapter, error) { return nil, nil },
	})
}

const good = `
data_dir: /tmp/vigd
decoders: [decoders]
forwarder:
  url: http://127.0.0.1:8080
  service_id: gw
  secret_file: /etc/vigd/secret
adapters:
  - name: a
    kind: fake
    listen: 127.0.0.1:1
    baud: 9600
    tls:
      ca_file: /x
`

func TestParseGood(t *testing.T) {
	c, err := Parse("/etc/vigd/vigd.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Adapters) != 1 || c.Adapters[0].Name != "a" || c.Adapters[0].Line != 9 {
		t.Fatalf("adapters: %+v", c.Adapters)
	}
	fc := c.Adapters[0].Settings.(*fakeConfig)
	if fc.Listen != "127.0.0.1:1" || fc.Baud != 9600 || fc.TLS.CAFile != "/x" {
		t.Fatalf("settings: %+v", fc)
	}
	if c.Decoders[0] != "/etc/vigd/decoders" {
		t.Fatalf("relative decoder path not anchored: %v", c.Decoders)
	}
	if c.Queue.Data.Policy != "block" || c.HTTP.Listen != "127.0.0.1:9273" {
		t.Fatalf("defaults lost: %+v", c.Queue)
	}
}

// Three mistakes in one file: all three reported, each with its line.
func TestParseReportsEveryErrorWithLine(t *testing.T) {
	bad := `
data_dir: /tmp/vigd
decoders: [decoders]
queue:
  data:
    policy: drop-everything
forwarder:
  url: http://127.0.0.1:8080
  service_id: gw
  secret_file: /etc/vigd/secret
adapters:
  - name: a
    kind: fake
    listen: 127.0.0.1:1
    baud: 9601
    colour: blue
`
	_, err := Parse("vigd.yaml", []byte(bad))
	if err == nil {
		t.Fatal("want errors")
	}
	msg := err.Error()
	wants := []string{
		`vigd.yaml:6:13: queue.data.policy: must be block, drop-oldest or drop-newest`,
		`vigd.yaml:16:5: adapters[0] "a" (fake): colour: unknown key`,
	}
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in\n%s", w, msg)
		}
	}
	if !strings.Contains(msg, `vigd.yaml:15:11: adapters[0] "a" (fake): baud: must be one of 9600, 115200`) {
		t.Errorf("an unknown key must not hide the block's other mistakes:\n%s", msg)
	}
	if got := len(strings.Split(strings.TrimSpace(msg), "\n")); got != 3 {
		t.Errorf("want exactly 3 errors, got %d:\n%s", got, msg)
	}

	bad2 := strings.Replace(bad, "    colour: blue\n", "", 1)
	bad2 = strings.Replace(bad2, "  service_id: gw\n", "  service_id: gw\n  speed: 3\n", 1)
	_, err = Parse("vigd.yaml", []byte(bad2))
	msg = err.Error()
	for _, w := range []string{
		`vigd.yaml:6:13: queue.data.policy: must be block`,
		`vigd.yaml:10:3: forwarder.speed: unknown key`,
		`vigd.yaml:16:11: adapters[0] "a" (fake): baud: must be one of 9600, 115200`,
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in\n%s", w, msg)
		}
	}
}

func TestParseUnknownKindAndMissingName(t *testing.T) {
	_, err := Parse("v.yaml", []byte("data_dir: /x\ndecoders: [d]\nforwarder: {url: 'http://h', service_id: s, secret_file: f}\nadapters:\n  - kind: nope\n  - name: b\n    kind: fake\n    listen: x\n  - name: b\n    kind: fake\n    listen: y\n"))
	msg := err.Error()
	for _, w := range []string{
		`v.yaml:5:5: adapters[0].name: is required`,
		`v.yaml:9:11: adapters[2] "b" (fake): name: is used by adapters[1] too`,
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in\n%s", w, msg)
		}
	}
}

func TestParseSyntaxError(t *testing.T) {
	_, err := Parse("v.yaml", []byte("data_dir: /x\n  bad: [\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "v.yaml:") {
		t.Fatalf("syntax error not located: %v", err)
	}
}

func TestFind(t *testing.T) {
	c, _ := Parse("x", []byte(good))
	n := Find(c.Adapters[0].Node, "tls.ca_file")
	if n.Line != 14 || n.Value != "/x" {
		t.Fatalf("find tls.ca_file: line %d value %q", n.Line, n.Value)
	}
}
