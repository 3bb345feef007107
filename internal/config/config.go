package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/forwarder"
	"github.com/vigd/vigd/internal/tlsconf"
)

// Config is the whole of vigd.yaml. configs/vigd.example.yaml documents
// every key with its default; a test loads it.
type Config struct {
	// DataDir holds the queues, the state store and the dead letters.
	DataDir string `yaml:"data_dir"`
	Log     Log    `yaml:"log"`
	HTTP    HTTP   `yaml:"http"`
	// Decoders lists decoder files and folders (every *.yaml in a folder).
	// Relative paths are relative to the config file.
	Decoders []string `yaml:"decoders"`
	Devices  Devices  `yaml:"devices"`
	Pipeline Pipeline `yaml:"pipeline"`
	Queue    Queues   `yaml:"queue"`
	// DeadLetters bounds the dead-letter store.
	DeadLetters DeadLetters      `yaml:"deadletters"`
	Forwarder   forwarder.Config `yaml:"forwarder"`
	Adapters    []Adapter        `yaml:"adapters"`

	// File is the path the config was read from (not a key).
	File string `yaml:"-"`
	// Root is the parsed document, for locating keys in later checks.
	Root *yaml.Node `yaml:"-"`
}

// Log settings.
type Log struct {
	Level  string `yaml:"level"`  // trace, debug, info, warn, error
	Format string `yaml:"format"` // text or json
	// Components sets a level per component ("forwarder": debug,
	// "adapter/buoys": trace).
	Components map[string]string `yaml:"components"`
}

// HTTP is the local endpoint for /metrics, /healthz and /readyz.
type HTTP struct {
	Listen string `yaml:"listen"` // "" turns it off
	// TLS serves the endpoint over HTTPS when cert_file and key_file are
	// set; client_ca_file makes scrapers present a certificate.
	TLS tlsconf.Server `yaml:"tls"`
}

// Devices is the device registry.
type Devices struct {
	// File maps identities to devices (see configs/devices.example.yaml).
	File string `yaml:"file"`
	// Unknown is what happens to a frame from a device the registry does
	// not know: "accept" (identity becomes the deviceId, with the adapter's
	// customer) or "deadletter" (kept until the device is added, then
	// replayed).
	Unknown string `yaml:"unknown"`
	// DeviceIDTemplate builds the deviceId of an accepted unknown device
	// from its identity, e.g. "FST{identity}".
	DeviceIDTemplate string `yaml:"device_id_template"`
}

// Pipeline settings.
type Pipeline struct {
	// RawFrames says which frames are also archived to the v1 raw
	// endpoint: "all", "undecoded" (the default: frames no decoder could
	// read) or "none".
	RawFrames string `yaml:"raw_frames"`
	// DeviceType is the v1 raw record's deviceType.
	DeviceType string `yaml:"device_type"`
}

// Queues configures the two durable queues: alarms (drained first, kept
// longest) and data (observations and raw frames).
type Queues struct {
	SegmentBytes int64 `yaml:"segment_bytes"`
	Data         Queue `yaml:"data"`
	Alarms       Queue `yaml:"alarms"`
}

// Queue limits and what happens at them.
type Queue struct {
	MaxBytes int64         `yaml:"max_bytes"`
	MaxAge   time.Duration `yaml:"max_age"`
	// Policy at the limit: "block" (slow the adapters down), "drop-oldest"
	// or "drop-newest"; every dropped record is counted and logged.
	Policy string `yaml:"policy"`
}

// DeadLetters bounds the store.
type DeadLetters struct {
	MaxBytes int64 `yaml:"max_bytes"`
}

// Adapter is one entry of adapters:. The keys below are common to every
// kind; the others belong to the kind and are decoded into its Config.
type Adapter struct {
	Name       string
	Kind       string
	Decoder    string
	CustomerID string
	// Settings is the kind's validated Config.
	Settings adapters.Config
	// Node is the adapter's YAML block, kept so that a reload can tell
	// whether its settings changed.
	Node *yaml.Node
	// Line is where the entry starts.
	Line int
}

// commonAdapterKeys are decoded here, not by the kind.
var commonAdapterKeys = map[string]bool{"name": true, "kind": true, "decoder": true, "customer_id": true}

// Default returns the configuration with every default filled in.
func Default() *Config {
	return &Config{
		DataDir: "/var/lib/vigd",
		Log:     Log{Level: "info", Format: "text"},
		HTTP:    HTTP{Listen: "127.0.0.1:9273"},
		Devices: Devices{Unknown: "accept", DeviceIDTemplate: "{identity}"},
		Pipeline: Pipeline{
			RawFrames:  "undecoded",
			DeviceType: "vigd",
		},
		Queue: Queues{
			SegmentBytes: 8 << 20,
			Data:         Queue{MaxBytes: 1 << 30, MaxAge: 30 * 24 * time.Hour, Policy: "block"},
			Alarms:       Queue{MaxBytes: 256 << 20, MaxAge: 90 * 24 * time.Hour, Policy: "block"},
		},
		DeadLetters: DeadLetters{MaxBytes: 256 << 20},
		Forwarder:   forwarder.DefaultConfig(),
	}
}

// Load reads and validates a config file. The error, when not nil, joins
// every problem found, each an *Error with file:line:col; the Config is
// then as much as could be read (nil when the file is not YAML), so that
// callers can go on checking decoders and report everything at once.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// Parse is Load on bytes already read; path names them in errors and
// anchors relative paths.
func Parse(path string, b []byte) (*Config, error) {
	es := &Errors{File: path}
	cfg := Default()
	cfg.File = path
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		line := 0
		var te *yaml.TypeError
		msg := err.Error()
		if !errors.As(err, &te) {
			fmt.Sscanf(strings.TrimPrefix(msg, "yaml: line "), "%d", &line)
		}
		es.List = append(es.List, &Error{File: path, Line: line, Msg: strings.TrimPrefix(msg, "yaml: ")})
		return nil, es.Err()
	}
	if len(root.Content) == 0 {
		es.Add(nil, "", "empty configuration")
		return nil, es.Err()
	}
	doc := root.Content[0]
	cfg.Root = doc
	if doc.Kind != yaml.MappingNode {
		es.Add(doc, "", "must be a mapping of keys")
		return nil, es.Err()
	}
	// Everything but adapters decodes strictly into the struct; adapters
	// go through their kind's registry entry.
	var adaptersNode *yaml.Node
	rest := &yaml.Node{Kind: yaml.MappingNode, Line: doc.Line, Column: doc.Column}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "adapters" {
			adaptersNode = doc.Content[i+1]
			continue
		}
		rest.Content = append(rest.Content, doc.Content[i], doc.Content[i+1])
	}
	Decode(rest, cfg, "", es)
	cfg.Adapters = decodeAdapters(adaptersNode, es)
	cfg.validate(doc, es)
	cfg.resolvePaths()
	return cfg, es.Err()
}

func decodeAdapters(n *yaml.Node, es *Errors) []Adapter {
	if n == nil || n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		es.Add(n, "adapters", "must be a list")
		return nil
	}
	var out []Adapter
	names := map[string]int{}
	for i, item := range n.Content {
		path := fmt.Sprintf("adapters[%d]", i)
		if item.Kind != yaml.MappingNode {
			es.Add(item, path, "must be a mapping with at least name and kind")
			continue
		}
		a := Adapter{Node: item, Line: item.Line}
		kindBlock := &yaml.Node{Kind: yaml.MappingNode, Line: item.Line, Column: item.Column}
		var kindNode, nameNode *yaml.Node
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			if !commonAdapterKeys[k.Value] {
				kindBlock.Content = append(kindBlock.Content, k, v)
				continue
			}
			if v.Kind != yaml.ScalarNode {
				es.Add(v, path+"."+k.Value, "must be a single value")
				continue
			}
			switch k.Value {
			case "name":
				a.Name, nameNode = v.Value, v
			case "kind":
				a.Kind, kindNode = v.Value, v
			case "decoder":
				a.Decoder = v.Value
			case "customer_id":
				a.CustomerID = v.Value
			}
		}
		label := path
		if a.Name != "" {
			label = fmt.Sprintf("%s %q (%s)", path, a.Name, a.Kind)
		}
		switch {
		case a.Name == "":
			es.Add(item, path+".name", "is required")
		case strings.ContainsAny(a.Name, "/\\ \t") || a.Name == "." || a.Name == "..":
			es.Add(nameNode, label+": name", "must not contain '/', '\\' or spaces")
		default:
			if prev, dup := names[a.Name]; dup {
				es.Add(nameNode, label+": name", "is used by adapters[%d] too", prev)
			}
			names[a.Name] = i
		}
		kind, ok := adapters.Lookup(a.Kind)
		if a.Kind == "" {
			es.Add(item, label+": kind", "is required (one of %s)", strings.Join(adapters.Kinds(), ", "))
			continue
		}
		if !ok {
			es.Add(kindNode, label+": kind", "unknown kind %q (one of %s)", a.Kind, strings.Join(adapters.Kinds(), ", "))
			continue
		}
		cfg := kind.NewConfig()
		// The kind's keys are reported relative to the labelled entry.
		sub := &Errors{File: es.File}
		Decode(kindBlock, cfg, "", sub)
		bad := map[string]bool{} // keys that did not decode: Validate would only repeat them
		for _, e := range sub.List {
			var ce *Error
			if errors.As(e, &ce) {
				bad[ce.Path] = true
				ce.Path = label + ": " + ce.Path
			}
			es.List = append(es.List, e)
		}
		// Validate even when some keys were wrong, so that one run reports
		// every mistake of the block.
		if err := cfg.Validate(); err != nil {
			for _, fe := range flatten(err) {
				var f *adapters.FieldError
				switch {
				case errors.As(fe, &f) && bad[f.Field]:
				case errors.As(fe, &f):
					es.Add(Find(kindBlock, f.Field), label+": "+f.Field, "%s", f.Msg)
				default:
					es.Add(item, label, "%s", fe.Error())
				}
			}
		}
		a.Settings = cfg
		out = append(out, a)
	}
	return out
}

// flatten unwraps errors.Join trees.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func (c *Config) validate(doc *yaml.Node, es *Errors) {
	at := func(path string) *yaml.Node { return Find(doc, path) }
	if c.DataDir == "" {
		es.Add(at("data_dir"), "data_dir", "is required")
	}
	if !oneOf(c.Log.Level, "trace", "debug", "info", "warn", "warning", "error") {
		es.Add(at("log.level"), "log.level", "must be one of trace, debug, info, warn, error (got %q)", c.Log.Level)
	}
	for comp, lvl := range c.Log.Components {
		if !oneOf(lvl, "trace", "debug", "info", "warn", "warning", "error") {
			es.Add(at("log.components."+comp), "log.components."+comp, "must be one of trace, debug, info, warn, error (got %q)", lvl)
		}
	}
	if !oneOf(c.Log.Format, "text", "json") {
		es.Add(at("log.format"), "log.format", "must be text or json (got %q)", c.Log.Format)
	}
	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			es.Add(at("http.listen"), "http.listen", "must be host:port (%v)", err)
		}
	}
	for _, p := range c.HTTP.TLS.Check() {
		es.Add(at("http.tls."+p.Field), "http.tls."+p.Field, "%s", p.Msg)
	}
	if !oneOf(c.Devices.Unknown, "accept", "deadletter") {
		es.Add(at("devices.unknown"), "devices.unknown", "must be accept or deadletter (got %q)", c.Devices.Unknown)
	}
	if !oneOf(c.Pipeline.RawFrames, "all", "undecoded", "none") {
		es.Add(at("pipeline.raw_frames"), "pipeline.raw_frames", "must be all, undecoded or none (got %q)", c.Pipeline.RawFrames)
	}
	if c.Queue.SegmentBytes < 64<<10 {
		es.Add(at("queue.segment_bytes"), "queue.segment_bytes", "must be at least 65536")
	}
	for _, q := range []struct {
		name string
		q    Queue
	}{{"data", c.Queue.Data}, {"alarms", c.Queue.Alarms}} {
		p := "queue." + q.name
		if !oneOf(q.q.Policy, "block", "drop-oldest", "drop-newest") {
			es.Add(at(p+".policy"), p+".policy", "must be block, drop-oldest or drop-newest (got %q)", q.q.Policy)
		}
		if q.q.MaxBytes < 2*c.Queue.SegmentBytes {
			es.Add(at(p+".max_bytes"), p+".max_bytes", "must be at least twice queue.segment_bytes (%d)", 2*c.Queue.SegmentBytes)
		}
		if q.q.MaxAge < 0 {
			es.Add(at(p+".max_age"), p+".max_age", "must not be negative")
		}
	}
	if err := c.Forwarder.Validate(); err != nil {
		for _, fe := range flatten(err) {
			field, msg := splitFieldError(fe)
			es.Add(at("forwarder."+field), "forwarder."+field, "%s", msg)
		}
	}
	if len(c.Decoders) == 0 {
		es.Add(doc, "decoders", "is required: list decoder files or folders")
	}
}

// splitFieldError takes "field: message" apart; errors that do not name a
// field are reported on the section.
func splitFieldError(err error) (string, string) {
	var f *adapters.FieldError
	if errors.As(err, &f) {
		return f.Field, f.Msg
	}
	s := err.Error()
	if k, m, ok := strings.Cut(s, ": "); ok && !strings.ContainsAny(k, " \t") {
		return k, m
	}
	return "", s
}

// resolvePaths anchors relative paths at the config file's folder.
func (c *Config) resolvePaths() {
	base := filepath.Dir(c.File)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.DataDir = abs(c.DataDir)
	c.Devices.File = abs(c.Devices.File)
	c.Forwarder.SecretFile = abs(c.Forwarder.SecretFile)
	for _, p := range []*string{&c.Forwarder.TLS.CAFile, &c.Forwarder.TLS.CertFile, &c.Forwarder.TLS.KeyFile,
		&c.HTTP.TLS.CertFile, &c.HTTP.TLS.KeyFile, &c.HTTP.TLS.ClientCAFile} {
		*p = abs(*p)
	}
	for i := range c.Decoders {
		c.Decoders[i] = abs(c.Decoders[i])
	}
}

// Where returns "file:line:col" of a key path ("forwarder.secret_file"),
// or just the file when it cannot be found.
func (c *Config) Where(path string) string {
	if c.Root != nil {
		if n := Find(c.Root, path); n != nil && n.Line > 0 {
			return fmt.Sprintf("%s:%d:%d", c.File, n.Line, n.Column)
		}
	}
	return c.File
}

// DecoderFiles expands Decoders into the files to load, sorted.
func (c *Config) DecoderFiles() ([]string, error) {
	var out []string
	for _, p := range c.Decoders {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: decoders: %w", c.Where("decoders"), err)
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, _ := filepath.Glob(filepath.Join(p, pat))
			out = append(out, m...)
		}
	}
	sort.Strings(out)
	return out, nil
}
