package decoders

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// yaml.v3's KnownFields only applies to the top-level Decode call and loses
// track of positions once a sub-node is decoded on its own, so decoder files
// are decoded here by walking the yaml.Node tree: every unknown key, wrong
// type and later semantic problem is reported with its line, column and path.

// pos is a position in a decoder file.
type pos struct{ Line, Col int }

// nodeUnmarshaler is implemented by config types that accept more than one
// YAML shape (e.g. a field given as a bare name or as a mapping).
type nodeUnmarshaler interface {
	unmarshalNode(d *yamlDec, n *yaml.Node, path string)
}

// yamlDec decodes one file and collects its errors.
type yamlDec struct {
	file string
	errs []error
	pos  map[string]pos
	// budget bounds the nodes visited: aliases are expanded where they are
	// used, and a "billion laughs" file must not hang the loader.
	budget int
}

func newYAMLDec(file string) *yamlDec {
	return &yamlDec{file: file, pos: map[string]pos{}, budget: 200000}
}

// errAt records an error at path, using the nearest known position.
func (d *yamlDec) errAt(path, format string, args ...any) {
	p := d.lookup(path)
	d.errs = append(d.errs, &ConfigError{File: d.file, Line: p.Line, Col: p.Col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// errNode records an error at a node.
func (d *yamlDec) errNode(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &ConfigError{File: d.file, Line: n.Line, Col: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *yamlDec) lookup(path string) pos {
	for {
		if p, ok := d.pos[path]; ok {
			return p
		}
		if path == "" {
			return pos{1, 1}
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			path = ""
		} else {
			path = path[:i]
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode fills v (addressable) from n.
func (d *yamlDec) decode(n *yaml.Node, v reflect.Value, path string) {
	if d.budget--; d.budget < 0 {
		return
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	if _, ok := d.pos[path]; !ok {
		d.pos[path] = pos{n.Line, n.Column}
	}
	if v.CanAddr() {
		if u, ok := v.Addr().Interface().(nodeUnmarshaler); ok {
			u.unmarshalNode(d, n, path)
			return
		}
	}
	if v.Type() == reflect.TypeOf(yaml.Node{}) {
		v.Set(reflect.ValueOf(*n))
		return
	}
	isNull := n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	switch v.Kind() {
	case reflect.Pointer:
		if isNull {
			return
		}
		nv := reflect.New(v.Type().Elem())
		d.decode(n, nv.Elem(), path)
		v.Set(nv)
	case reflect.Struct:
		if isNull {
			return
		}
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if isNull {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.errNode(n, path, "expected a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if isNull {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.errNode(n, path, "expected a mapping, got %s", kindName(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				d.errNode(k, path, "mapping keys must be scalars")
				continue
			}
			kp := joinPath(path, k.Value)
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				d.errNode(k, kp, "duplicate key %q", k.Value)
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			d.pos[kp] = pos{val.Line, val.Column}
			d.decode(val, ev, kp)
			m.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(m)
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			d.errNode(n, path, "%v", err)
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	case reflect.String:
		if isNull {
			return
		}
		if n.Kind != yaml.ScalarNode {
			d.errNode(n, path, "expected a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int64, reflect.Int32:
		if n.Kind != yaml.ScalarNode || isNull {
			d.errNode(n, path, "expected an integer, got %s", kindName(n))
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err != nil {
			d.errNode(n, path, "expected an integer, got %q", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || isNull {
			d.errNode(n, path, "expected a number, got %s", kindName(n))
			return
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err != nil {
			if i, err2 := strconv.ParseInt(n.Value, 0, 64); err2 == nil {
				f, err = float64(i), nil
			}
		}
		if err != nil {
			d.errNode(n, path, "expected a number, got %q", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil || n.Tag != "!!bool" {
			d.errNode(n, path, "expected true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	default:
		panic("decoders: config type not supported by the YAML walker: " + v.Type().String())
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

// structKeys lists the yaml keys of a struct type.
func structKeys(t reflect.Type) map[string]int {
	keys := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys[name] = i
	}
	return keys
}

func (d *yamlDec) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errNode(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	keys := structKeys(v.Type())
	seen := map[string]bool{}
	pairs := d.mergedPairs(n)
	for i := 0; i+1 < len(pairs); i += 2 {
		k, val := pairs[i], pairs[i+1]
		kp := joinPath(path, k.Value)
		idx, ok := keys[k.Value]
		if !ok && path == "" && strings.HasPrefix(k.Value, "x-") {
			continue // top-level x-… keys hold YAML anchors for merge keys
		}
		if !ok {
			d.errNode(k, kp, "unknown key %q (known keys: %s)", k.Value, knownList(keys))
			continue
		}
		if seen[k.Value] {
			d.errNode(k, kp, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		d.pos[kp] = pos{val.Line, val.Column}
		d.decode(val, v.Field(idx), kp)
	}
}

func knownList(keys map[string]int) string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func reflectValue(p any) reflect.Value { return reflect.ValueOf(p).Elem() }

// mergedPairs lists a mapping's key/value nodes with YAML merge keys
// ("<<: *defaults") expanded; explicit keys win over merged ones.
func (d *yamlDec) mergedPairs(n *yaml.Node) []*yaml.Node {
	if d.budget -= len(n.Content); d.budget < 0 {
		return nil
	}
	var explicit, merged []*yaml.Node
	has := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			continue
		}
		has[k.Value] = true
		explicit = append(explicit, k, n.Content[i+1])
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag != "!!merge" {
			continue
		}
		for v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		srcs := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			srcs = v.Content
		}
		for _, src := range srcs {
			for src.Kind == yaml.AliasNode {
				src = src.Alias
			}
			if src.Kind != yaml.MappingNode {
				continue
			}
			sub := d.mergedPairs(src)
			for j := 0; j+1 < len(sub); j += 2 {
				if !has[sub[j].Value] {
					has[sub[j].Value] = true
					merged = append(merged, sub[j], sub[j+1])
				}
			}
		}
	}
	return append(explicit, merged...)
}
