package main

import (
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/devices"
	"github.com/vigd/vigd/internal/config"
)

// keysOf lists the dotted YAML key paths of a config struct type.
func keysOf(t reflect.Type, prefix string, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) && t.Name() != "Topic" && t.Name() != "Identity" {
		return // a leaf with its own syntax (durations, …)
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			keysOf(f.Type, prefix, out)
			continue
		}
		if name == "" {
			continue
		}
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		out[p] = true
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		keysOf(ft, p, out)
	}
}

// keysIn lists the dotted key paths present in a YAML node (lists are
// looked through).
func keysIn(n *yaml.Node, prefix string, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			keysIn(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if prefix != "" {
				p = prefix + "." + p
			}
			out[p] = true
			keysIn(n.Content[i+1], p, out)
		}
	}
}

// configs/vigd.example.yaml documents every key of the top-level config
// and of every adapter kind this binary offers, and loads cleanly.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	path := repoPath("configs/vigd.example.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(path, b)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	// And `vigd check` takes it as it is (decoder names, devices).
	if code, out, stderr := run(t, "check", "-c", path); code != 0 {
		t.Fatalf("vigd check on the example: exit %d\n%s%s", code, out, stderr)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "adapters" {
			continue
		}
		sub := &yaml.Node{Kind: yaml.MappingNode, Content: top.Content[i : i+2]}
		keysIn(sub, "", present)
	}
	want := map[string]bool{}
	keysOf(reflect.TypeFor[config.Config](), "", want)
	delete(want, "adapters")
	var missing []string
	for k := range want {
		if !present[k] {
			missing = append(missing, k)
		}
	}
	// The framing block is shared by tcp and serial: documented once.
	anyFraming := map[string]bool{}
	for i := range cfg.Adapters {
		got := map[string]bool{}
		keysIn(cfg.Adapters[i].Node, "", got)
		for k := range got {
			if strings.HasPrefix(k, "framing.") {
				anyFraming[k] = true
			}
		}
	}
	// Every kind: an example entry with all of its keys.
	for _, kind := range adapters.Kinds() {
		k, _ := adapters.Lookup(kind)
		wantK := map[string]bool{}
		keysOf(reflect.TypeOf(k.NewConfig()), "", wantK)
		var entry *config.Adapter
		for i := range cfg.Adapters {
			if cfg.Adapters[i].Kind == kind {
				entry = &cfg.Adapters[i]
			}
		}
		if entry == nil {
			missing = append(missing, "adapters: no example of kind "+kind)
			continue
		}
		got := map[string]bool{}
		keysIn(entry.Node, "", got)
		for key := range wantK {
			if !got[key] && !commonKey(key) && !anyFraming[key] {
				missing = append(missing, "adapters ("+kind+"): "+key)
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("configs/vigd.example.yaml does not document %s", m)
	}
}

func commonKey(k string) bool { return k == "decoder" || k == "customer_id" }

func TestDevicesExampleParses(t *testing.T) {
	reg, err := devices.Load(repoPath("configs/devices.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	d, ok := reg.Lookup("12345")
	if !ok || d.DeviceID != "CR1000-12345" || d.CustomerID != "047" {
		t.Fatalf("lookup: %+v %v", d, ok)
	}
}
