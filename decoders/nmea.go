package decoders

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// nmeaEngine reads NMEA 0183 style sentences: "$" or "!", an address
// (talker + sentence type), comma-separated fields, an optional "*hh"
// checksum (XOR of every byte between the start character and "*"). A
// frame holds one sentence or several lines of them; each becomes a record
// whose fields are those of the sentence type's table entry.
type nmeaEngine struct {
	allowUnchecked bool
	maxLen         int
	sentences      map[string]*nmeaSentence
}

type nmeaSentence struct {
	key    string
	fields []nmeaFieldSpec
	min    int
}

type nmeaFieldSpec struct {
	name     string
	typ      string
	required bool
	values   map[string]bool
}

var nmeaTypes = map[string]bool{"text": true, "number": true, "int": true, "ddmm": true, "char": true, "hex": true}

func (c *compiler) nmeaEngine(nc *nmeaConfig, path string) (engine, map[string]bool, []string, map[string][]computedConfig) {
	e := &nmeaEngine{allowUnchecked: nc.AllowUnchecked, maxLen: nc.MaxLength, sentences: map[string]*nmeaSentence{}}
	if e.maxLen == 0 {
		e.maxLen = 128
	}
	if e.maxLen < 11 {
		c.d.errAt(path+".max_length", "max_length must be at least 11")
	}
	if len(nc.Sentences) == 0 {
		c.d.errAt(path+".sentences", "nmea needs at least one sentence type")
	}
	names := map[string]bool{}
	groups := map[string][]computedConfig{}
	for _, key := range sortedMapKeys(nc.Sentences) {
		sc := nc.Sentences[key]
		sp := path + ".sentences." + key
		if sc == nil {
			c.d.errAt(sp, "empty sentence definition")
			continue
		}
		if !identRe.MatchString(key) {
			c.d.errAt(sp, "sentence key %q must be a type (GGA) or an address (GPGGA)", key)
		}
		s := &nmeaSentence{key: key, min: sc.MinFields}
		seen := map[string]bool{}
		for i, f := range sc.Fields {
			fp := fmt.Sprintf("%s.fields[%d]", sp, i)
			typ := f.Type
			if typ == "" {
				typ = "text"
			}
			if !nmeaTypes[typ] {
				c.d.errAt(fp, "unknown field type %q (text, number, int, ddmm, char, hex)", f.Type)
			}
			if f.Name != "" && f.Name != "_" {
				if !identRe.MatchString(f.Name) {
					c.d.errAt(fp, "field name %q must be an identifier", f.Name)
				}
				if seen[f.Name] {
					c.d.errAt(fp, "field %q appears twice", f.Name)
				}
				seen[f.Name] = true
				names[f.Name] = true
			}
			spec := nmeaFieldSpec{name: f.Name, typ: typ, required: f.Required}
			if len(f.Values) > 0 {
				spec.values = map[string]bool{}
				for _, v := range f.Values {
					spec.values[v] = true
				}
			}
			s.fields = append(s.fields, spec)
		}
		if len(s.fields) == 0 {
			c.d.errAt(sp+".fields", "a sentence needs its field list")
		}
		if s.min == 0 {
			s.min = len(s.fields)
		}
		if s.min < 0 || s.min > len(s.fields) {
			c.d.errAt(sp+".min_fields", "min_fields must be between 1 and the %d fields listed", len(s.fields))
		}
		e.sentences[key] = s
		if len(sc.Computed) > 0 {
			groups[key] = sc.Computed
		}
	}
	return e, names, []string{"talker", "sentence", "address", "checksum"}, groups
}

func (e *nmeaEngine) parse(payload []byte) (*parsed, error) {
	p := &parsed{vars: map[string]any{}}
	off, lineNo := 0, 1
	for off < len(payload) {
		end := bytes.IndexAny(payload[off:], "\r\n")
		next := len(payload)
		if end >= 0 {
			next = off + end + 1
			if payload[off+end] == '\r' && next < len(payload) && payload[next] == '\n' {
				next++
			}
			end += off
		} else {
			end = len(payload)
		}
		line := payload[off:end]
		if len(bytes.TrimSpace(line)) > 0 {
			p.records = append(p.records, e.sentence(line, off, lineNo))
		}
		off = next
		lineNo++
	}
	if len(p.records) == 0 {
		return nil, perr(0, "no NMEA sentence in the frame")
	}
	return p, nil
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// sentence parses one line; problems go into the record's err so that
// bad_records can decide.
func (e *nmeaEngine) sentence(line []byte, off, lineNo int) *record {
	r := newRecord(off, fmt.Sprintf("line %d", lineNo))
	fail := func(at int, format string, args ...any) *record {
		r.err = perr(off+at, format, args...)
		return r
	}
	// Bytes before the start character (noise, a TAG block) are ignored.
	start := bytes.IndexAny(line, "$!")
	if start < 0 {
		return fail(0, "no sentence start ($ or !)")
	}
	s := bytes.TrimRight(line[start:], " \t")
	if len(s) > e.maxLen {
		return fail(start, "sentence of %d bytes is longer than max_length %d", len(s), e.maxLen)
	}
	body := s[1:]
	r.vars["checksum"] = "absent"
	if star := bytes.LastIndexByte(s, '*'); star >= 0 {
		ck := s[star+1:]
		if len(ck) != 2 || !isHex(ck[0]) || !isHex(ck[1]) {
			return fail(start+star, "checksum %q is not two hex digits", ck)
		}
		want, _ := strconv.ParseUint(string(ck), 16, 8)
		var x byte
		for _, b := range s[1:star] {
			x ^= b
		}
		if byte(want) != x {
			return fail(start+star, "bad checksum *%s: the sentence's XOR is %02X", ck, x)
		}
		body = s[1:star]
		r.vars["checksum"] = "valid"
	} else if !e.allowUnchecked {
		return fail(start, "no checksum (*hh) and allow_unchecked is off")
	}
	for i, b := range body {
		if b < 0x20 || b > 0x7e {
			return fail(start+1+i, "byte 0x%02X is not printable ASCII", b)
		}
	}
	parts := strings.Split(string(body), ",")
	addr := parts[0]
	if len(addr) < 2 || !identRe.MatchString(addr) {
		return fail(start+1, "address %q is not a talker and sentence type", addr)
	}
	talker, typ := addr[:2], addr[2:]
	if addr[0] == 'P' { // proprietary: P + manufacturer + type
		talker, typ = "P", addr[1:]
	}
	r.label = fmt.Sprintf("line %d %s", lineNo, addr)
	r.vars["talker"], r.vars["sentence"], r.vars["address"] = talker, typ, addr
	def := e.sentences[addr]
	if def == nil {
		def = e.sentences[typ]
	}
	if def == nil {
		return fail(start, "no sentence definition for %s (type %s); the decoder knows %s", addr, typ, e.known())
	}
	r.group = def.key
	fields := parts[1:]
	if len(fields) < def.min || len(fields) > len(def.fields) {
		want := strconv.Itoa(def.min)
		if def.min != len(def.fields) {
			want += ".." + strconv.Itoa(len(def.fields))
		}
		return fail(start, "malformed %s: %d fields, want %s", addr, len(fields), want)
	}
	at := start + 1 + len(addr) + 1
	for i, v := range fields {
		spec := def.fields[i]
		if err := spec.set(r, v); err != "" {
			return fail(at, "malformed %s: field %d (%s) %q %s", addr, i+1, spec.name, v, err)
		}
		at += len(v) + 1
	}
	for _, spec := range def.fields[len(fields):] {
		if spec.name != "" && spec.name != "_" {
			r.setMissing(spec.name, "absent")
		}
	}
	return r
}

func (e *nmeaEngine) known() string {
	k := make([]string, 0, len(e.sentences))
	for n := range e.sentences {
		k = append(k, n)
	}
	sort.Strings(k)
	return strings.Join(k, ", ")
}

// set stores one field; it returns why the text does not fit the type.
func (spec *nmeaFieldSpec) set(r *record, v string) string {
	if v == "" {
		if spec.required {
			return "is required"
		}
		if spec.name != "" && spec.name != "_" {
			r.setMissing(spec.name, "empty")
		}
		return ""
	}
	if spec.values != nil && !spec.values[v] {
		return "is not one of the allowed values"
	}
	keep := spec.name != "" && spec.name != "_"
	switch spec.typ {
	case "number", "int":
		n, text, ok := parseNumber(v)
		if !ok {
			return "is not a number"
		}
		if _, isInt := n.(int); spec.typ == "int" && !isInt {
			return "is not an integer"
		}
		if keep {
			r.setNumber(spec.name, n, text)
		}
	case "ddmm":
		deg, ok := parseDDMM(v)
		if !ok {
			return "is not (d)ddmm.mmmm"
		}
		if keep {
			r.setNumber(spec.name, deg, formatFloat(deg, 64))
		}
	case "char":
		if len(v) != 1 {
			return "is not one character"
		}
		if keep {
			r.vars[spec.name] = v
		}
	case "hex":
		n, err := strconv.ParseUint(v, 16, 64)
		if err != nil {
			return "is not hexadecimal"
		}
		if keep {
			r.setNumber(spec.name, int(n), strconv.FormatUint(n, 10))
		}
	default:
		if keep {
			r.vars[spec.name] = v
		}
	}
	return ""
}

// parseDDMM reads NMEA (d)ddmm.mmmm into decimal degrees.
func parseDDMM(v string) (float64, bool) {
	dot := strings.IndexByte(v, '.')
	if dot < 0 {
		dot = len(v)
	}
	if dot < 3 || dot > 5 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if i != dot && (v[i] < '0' || v[i] > '9') {
			return 0, false
		}
	}
	if dot == len(v)-1 {
		return 0, false
	}
	deg, err1 := strconv.Atoi(v[:dot-2])
	min, err2 := strconv.ParseFloat(v[dot-2:], 64)
	if err1 != nil || err2 != nil || min >= 60 || deg > 180 {
		return 0, false
	}
	return float64(deg) + min/60, true
}

var _ engine = (*nmeaEngine)(nil)
