// Package config loads vigd's YAML configuration strictly: every unknown key,
// wrong type and invalid value is reported, all at once, each with
// file:line:col and the path to the key (`adapters[2] "buoy" (serial): baud:
// must be one of …`).
//
// yaml.v3's KnownFields only works for a whole-document Decode, not for a
// sub-node decoded on its own (each adapter's block is decoded into the
// struct of its kind), so the walk over the node tree below does the
// unknown-key check itself and then lets yaml.v3 decode each leaf.
package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one configuration problem, located.
type Error struct {
	File      string
	Line, Col int
	Path      string
	Msg       string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors collects located errors while walking one file.
type Errors struct {
	File string
	List []error
}

// Add records a problem at node (which may be nil).
func (es *Errors) Add(n *yaml.Node, path, format string, args ...any) {
	e := &Error{File: es.File, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Col = n.Line, n.Column
	}
	es.List = append(es.List, e)
}

// Err joins the collected errors, or nil.
func (es *Errors) Err() error { return errors.Join(es.List...) }

// fieldIndex maps a struct's yaml keys to field indexes, following inline
// (embedded) structs.
func fieldIndex(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(append([]int{}, prefix...), i)
			if strings.Contains(opts, "inline") {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				walk(ft, idx)
				continue
			}
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			out[name] = idx
		}
	}
	walk(t, nil)
	return out
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// Decode decodes n into out (a pointer) strictly: unknown keys and type
// errors are added to es with their position; decoding goes on past them so
// that every problem is reported.
func Decode(n *yaml.Node, out any, path string, es *Errors) {
	decodeValue(n, reflect.ValueOf(out).Elem(), path, es)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func decodeValue(n *yaml.Node, v reflect.Value, path string, es *Errors) {
	if n == nil {
		return
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!!null" {
		return // keep the default
	}
	// Types with their own YAML logic (durations, hex bytes) decode leaf-wise.
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			es.Add(n, path, "%s", cleanYAMLErr(err))
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		decodeValue(n, v.Elem(), path, es)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			es.Add(n, path, "must be a mapping of keys, not %s", kindName(n))
			return
		}
		idx := fieldIndex(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			if seen[k.Value] {
				es.Add(k, p, "duplicate key")
				continue
			}
			seen[k.Value] = true
			fi, ok := idx[k.Value]
			if !ok {
				es.Add(k, p, "unknown key (known: %s)", strings.Join(keys(idx), ", "))
				continue
			}
			decodeValue(val, v.FieldByIndex(fi), p, es)
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 && n.Kind == yaml.ScalarNode {
			v.SetBytes([]byte(n.Value))
			return
		}
		if n.Kind != yaml.SequenceNode {
			es.Add(n, path, "must be a list, not %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			decodeValue(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i), es)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			es.Add(n, path, "must be a mapping, not %s", kindName(n))
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kv := reflect.New(v.Type().Key()).Elem()
			if err := k.Decode(kv.Addr().Interface()); err != nil {
				es.Add(k, join(path, k.Value), "%s", cleanYAMLErr(err))
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			decodeValue(val, ev, join(path, k.Value), es)
			v.SetMapIndex(kv, ev)
		}
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			es.Add(n, path, "%s", cleanYAMLErr(err))
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			es.Add(n, path, "must be a single value, not %s", kindName(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			es.Add(n, path, "%s", cleanYAMLErr(err))
		}
	}
}

func keys(m map[string][]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

// cleanYAMLErr drops yaml.v3's "yaml: unmarshal errors:\n  line N:" prefix:
// the position is added by the caller.
func cleanYAMLErr(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "line ") {
		if i := strings.Index(s, ": "); i > 0 {
			s = s[i+2:]
		}
	}
	return s
}

// Find returns the node at a dotted path below n ("tls.ca_file",
// "topics[1].qos"), or the deepest node found on the way, so that a
// validation error can point at the closest line.
func Find(n *yaml.Node, path string) *yaml.Node {
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	cur, best := n, n
	for _, part := range splitPath(path) {
		if cur == nil {
			break
		}
		if part.index < 0 {
			if cur.Kind != yaml.MappingNode {
				return best
			}
			found := false
			for i := 0; i+1 < len(cur.Content); i += 2 {
				if cur.Content[i].Value == part.key {
					k, v := cur.Content[i], cur.Content[i+1]
					best = v
					if v.Kind != yaml.ScalarNode {
						best = k
					}
					cur, found = v, true
					break
				}
			}
			if !found {
				return best
			}
			continue
		}
		if cur.Kind != yaml.SequenceNode || part.index >= len(cur.Content) {
			return best
		}
		cur = cur.Content[part.index]
		best = cur
	}
	return best
}

type pathPart struct {
	key   string
	index int
}

func splitPath(p string) []pathPart {
	var out []pathPart
	for _, seg := range strings.Split(p, ".") {
		if seg == "" {
			continue
		}
		key, rest, hasIdx := strings.Cut(seg, "[")
		if !hasIdx {
			out = append(out, pathPart{key: key, index: -1})
			continue
		}
		var i int
		fmt.Sscanf(strings.TrimSuffix(rest, "]"), "%d", &i)
		if key != "" {
			out = append(out, pathPart{key: key, index: -1})
		}
		out = append(out, pathPart{index: i})
	}
	return out
}
