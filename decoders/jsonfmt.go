package decoders

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// jsonEngine reads JSON documents: fields are paths into the document
// (relative to each record, or from the root with "$."), and a path to an
// array makes each element a record. Numbers keep their exact text.
type jsonEngine struct {
	records *jsonPath
	fields  []jsonFieldSpec
}

type jsonFieldSpec struct {
	name     string
	path     *jsonPath
	required bool
}

// jsonPath is a parsed path: "a.b[0].c", "$.meta.imei", `a["x.y"]`.
type jsonPath struct {
	src  string
	root bool
	segs []any // string key or int index
}

func parseJSONPath(s string) (*jsonPath, error) {
	p := &jsonPath{src: s}
	rest := s
	if rest == "$" {
		p.root = true
		return p, nil
	}
	if strings.HasPrefix(rest, "$.") || strings.HasPrefix(rest, "$[") {
		p.root = true
		rest = strings.TrimPrefix(rest[1:], ".")
	}
	if rest == "" {
		return nil, fmt.Errorf("empty path")
	}
	for rest != "" {
		switch rest[0] {
		case '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("path %q: unclosed [", s)
			}
			in := rest[1:end]
			if len(in) >= 2 && (in[0] == '"' || in[0] == '\'') && in[len(in)-1] == in[0] {
				p.segs = append(p.segs, in[1:len(in)-1])
			} else if i, err := strconv.Atoi(in); err == nil {
				p.segs = append(p.segs, i)
			} else {
				return nil, fmt.Errorf("path %q: [%s] is neither an index nor a quoted key", s, in)
			}
			rest = rest[end+1:]
			rest = strings.TrimPrefix(rest, ".")
		default:
			end := strings.IndexAny(rest, ".[")
			key := rest
			if end >= 0 {
				key = rest[:end]
				rest = rest[end:]
				rest = strings.TrimPrefix(rest, ".")
			} else {
				rest = ""
			}
			if key == "" {
				return nil, fmt.Errorf("path %q: empty key", s)
			}
			p.segs = append(p.segs, key)
		}
	}
	return p, nil
}

func (p *jsonPath) get(root, rec any) (any, bool) {
	cur := rec
	if p.root {
		cur = root
	}
	for _, s := range p.segs {
		switch k := s.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = m[k]; !ok {
				return nil, false
			}
		case int:
			a, ok := cur.([]any)
			if !ok {
				return nil, false
			}
			if k < 0 {
				k += len(a)
			}
			if k < 0 || k >= len(a) {
				return nil, false
			}
			cur = a[k]
		}
	}
	return cur, true
}

func (c *compiler) jsonEngine(jc *jsonConfig, path string) (engine, map[string]bool, []string) {
	e := &jsonEngine{}
	if jc.Records != "" {
		p, err := parseJSONPath(jc.Records)
		if err != nil {
			c.d.errAt(path+".records", "%v", err)
		}
		e.records = p
	}
	vars := []string{"doc", "index"}
	if len(jc.Fields) == 0 {
		return e, nil, vars
	}
	names := map[string]bool{}
	for i, f := range jc.Fields {
		fp := fmt.Sprintf("%s.fields[%d]", path, i)
		if !identRe.MatchString(f.Name) || names[f.Name] {
			c.d.errAt(fp+".name", "field name %q must be a new identifier", f.Name)
		}
		names[f.Name] = true
		src := f.Path
		if src == "" {
			src = f.Name
		}
		p, err := parseJSONPath(src)
		if err != nil {
			c.d.errAt(fp+".path", "%v", err)
		}
		e.fields = append(e.fields, jsonFieldSpec{name: f.Name, path: p, required: f.Required})
	}
	return e, names, vars
}

// plain turns json.Number inside nested values into int / float64 for
// expressions.
func plain(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, _, ok := parseNumber(string(x)); ok {
			return n
		}
		return string(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = plain(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

func setJSON(r *record, name string, v any) {
	switch x := v.(type) {
	case nil:
		r.setMissing(name, "null")
	case json.Number:
		if n, text, ok := parseNumber(string(x)); ok {
			r.setNumber(name, n, text)
		} else {
			r.setMissing(name, fmt.Sprintf("number %s out of range", x))
		}
	default:
		r.vars[name] = plain(v)
	}
}

func (e *jsonEngine) parse(payload []byte) (*parsed, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, perr(int(se.Offset), "JSON: %v", err)
		}
		return nil, perr(int(dec.InputOffset()), "JSON: %v", err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, perr(int(dec.InputOffset()), "JSON: more than one document in the frame")
	}
	p := &parsed{vars: map[string]any{"doc": plain(doc)}}
	recs := []any{doc}
	if e.records != nil {
		v, ok := e.records.get(doc, doc)
		if !ok {
			return nil, perr(0, "records path %s not found", e.records.src)
		}
		if a, isArr := v.([]any); isArr {
			recs = a
		} else {
			recs = []any{v}
		}
	}
	for i, rv := range recs {
		r := newRecord(0, fmt.Sprintf("record %d", i))
		r.vars["index"] = i
		if e.fields == nil {
			m, ok := rv.(map[string]any)
			if !ok {
				r.err = perr(0, "record %d is not an object", i)
			}
			for k, v := range m {
				setJSON(r, k, v)
			}
		}
		for _, f := range e.fields {
			v, ok := f.path.get(doc, rv)
			if !ok {
				if f.required {
					r.err = perr(0, "required field %s (path %s) is missing", f.name, f.path.src)
					break
				}
				continue
			}
			setJSON(r, f.name, v)
		}
		p.records = append(p.records, r)
	}
	return p, nil
}

var _ engine = (*jsonEngine)(nil)
