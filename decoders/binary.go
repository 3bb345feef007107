package decoders

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"
)

// binEngine reads binary layouts: an optional ASCII header of N lines (as
// in Campbell TOB1), an optional checksum over the data, leading fields,
// an optional switch on a message-type field, and repeated records.
type binEngine struct {
	skipLines int
	checksum  *checksumSpec
	fields    []*binFieldSpec
	sw        *switchSpec
	records   *recordsSpec
}

type checksumSpec struct {
	kind     string
	size     int
	fn       func([]byte) uint64
	from, to *int
	at       *int
	order    binary.ByteOrder
}

type switchSpec struct {
	on    *vm.Program
	src   string
	cases []*caseSpec
	def   *caseSpec
}

type caseSpec struct {
	match   map[string]bool
	label   string
	fields  []*binFieldSpec
	records *recordsSpec
	errMsg  string
}

type recordsSpec struct {
	count  *vm.Program
	size   int
	fixed  int // bytes the fields need when all are fixed-size
	fields []*binFieldSpec
}

type binFieldSpec struct {
	name     string
	typ      string
	size     int
	offset   int // -1: right after the previous field
	order    binary.ByteOrder
	signed   bool
	scale    float64
	scaleDiv float64 // scale given as 10^-k: divide by 10^k (exact decimal)
	div      float64
	add      float64
	decimals int // -1: shortest
	lookup   map[int64]lookupVal
	epoch    time.Time
	bits     []bitSpec
}

type lookupVal struct {
	v    any
	text string
}

type bitSpec struct {
	name   string
	bit    int
	len    int
	lookup map[int64]lookupVal
}

var intSizes = map[string]int{"8": 1, "16": 2, "24": 3, "32": 4, "40": 5, "48": 6, "56": 7, "64": 8}

func (c *compiler) byteOrder(s, path string, def binary.ByteOrder) binary.ByteOrder {
	switch s {
	case "":
		return def
	case "big", "be":
		return binary.BigEndian
	case "little", "le":
		return binary.LittleEndian
	}
	c.d.errAt(path, "byte_order must be big or little, not %q", s)
	return def
}

func (c *compiler) lookupTable(m map[string]string, path string) map[int64]lookupVal {
	if len(m) == 0 {
		return nil
	}
	out := map[int64]lookupVal{}
	for k, v := range m {
		i, err := strconv.ParseInt(k, 0, 64)
		if err != nil {
			c.d.errAt(path+"."+k, "lookup key %q is not an integer", k)
			continue
		}
		if n, text, ok := parseNumber(v); ok {
			out[i] = lookupVal{v: n, text: text}
		} else {
			out[i] = lookupVal{v: v}
		}
	}
	return out
}

func (c *compiler) binFields(list []binField, path string, order binary.ByteOrder, names map[string]bool) ([]*binFieldSpec, int) {
	var out []*binFieldSpec
	fixed, pos := 0, 0
	for i, f := range list {
		fp := fmt.Sprintf("%s[%d]", path, i)
		s := &binFieldSpec{name: f.Name, typ: f.Type, offset: -1, order: c.byteOrder(f.ByteOrder, fp+".byte_order", order), decimals: -1}
		if f.Offset != nil {
			if *f.Offset < 0 {
				c.d.errAt(fp+".offset", "offset cannot be negative")
			}
			s.offset = *f.Offset
		}
		t := f.Type
		switch {
		case len(t) > 1 && (t[0] == 'u' || t[0] == 'i') && intSizes[t[1:]] > 0:
			s.size = intSizes[t[1:]]
			s.signed = t[0] == 'i'
		case t == "f32":
			s.size = 4
		case t == "f64":
			s.size = 8
		case t == "secnano":
			s.size = 8
			s.epoch = time.Date(1990, 1, 1, 0, 0, 0, 0, c.zone)
			if f.Epoch != "" {
				e, err := parseEpoch(f.Epoch, c.zone)
				if err != nil {
					c.d.errAt(fp+".epoch", "%v", err)
				}
				s.epoch = e
			}
		case t == "bcd", t == "bytes", t == "string", t == "skip":
			s.size = f.Size
			if f.Size <= 0 {
				c.d.errAt(fp+".size", "a %s field needs a size in bytes", t)
			}
		default:
			c.d.errAt(fp+".type", "unknown type %q (u8…u64, i8…i64 in steps of 8 bits, f32, f64, bcd, bytes, string, skip, secnano)", t)
		}
		if f.Size != 0 && f.Size != s.size {
			c.d.errAt(fp+".size", "size applies only to bcd, bytes, string and skip")
		}
		if t != "skip" {
			if !identRe.MatchString(f.Name) {
				c.d.errAt(fp+".name", "field name %q must be an identifier", f.Name)
			} else if names[f.Name] {
				c.d.errAt(fp+".name", "field %q is defined twice", f.Name)
			}
			names[f.Name] = true
		}
		numeric := strings.HasPrefix(t, "u") || strings.HasPrefix(t, "i") || t == "f32" || t == "f64" || t == "bcd"
		if (f.Scale != nil || f.Div != nil || f.Add != nil || f.Decimals != nil || f.Lookup != nil) && !numeric {
			c.d.errAt(fp, "scale, div, add, decimals and lookup apply to numeric fields")
		}
		if f.Scale != nil {
			s.scale = *f.Scale
			if k := math.Round(-math.Log10(s.scale)); k > 0 && k < 16 && math.Pow(10, -k) == s.scale {
				s.scaleDiv = math.Pow(10, k)
			}
		}
		if f.Div != nil {
			if *f.Div == 0 {
				c.d.errAt(fp+".div", "div cannot be 0")
			}
			s.div = *f.Div
		}
		if f.Add != nil {
			s.add = *f.Add
		}
		if f.Decimals != nil {
			if *f.Decimals < 0 || *f.Decimals > 15 {
				c.d.errAt(fp+".decimals", "decimals must be 0..15")
			}
			s.decimals = *f.Decimals
		}
		s.lookup = c.lookupTable(f.Lookup, fp+".lookup")
		if len(f.Bits) > 0 && !(strings.HasPrefix(t, "u") || strings.HasPrefix(t, "i")) {
			c.d.errAt(fp+".bits", "bits apply to integer fields")
		}
		for j, b := range f.Bits {
			bp := fmt.Sprintf("%s.bits[%d]", fp, j)
			l := b.Len
			if l == 0 {
				l = 1
			}
			if !identRe.MatchString(b.Name) || names[b.Name] {
				c.d.errAt(bp+".name", "bit field name %q must be a new identifier", b.Name)
			}
			names[b.Name] = true
			if b.Bit < 0 || l < 1 || b.Bit+l > s.size*8 {
				c.d.errAt(bp, "bits %d..%d do not fit a %d-bit field", b.Bit, b.Bit+l-1, s.size*8)
			}
			s.bits = append(s.bits, bitSpec{name: b.Name, bit: b.Bit, len: l, lookup: c.lookupTable(b.Lookup, bp+".lookup")})
		}
		if s.offset >= 0 {
			pos = s.offset
		}
		pos += s.size
		if pos > fixed {
			fixed = pos
		}
		out = append(out, s)
	}
	return out, fixed
}

func (c *compiler) recordsSpec(rc *recordsConfig, path string, order binary.ByteOrder, names map[string]bool) *recordsSpec {
	if rc == nil {
		return nil
	}
	r := &recordsSpec{size: rc.Size}
	r.fields, r.fixed = c.binFields(rc.Fields, path+".fields", order, names)
	if len(r.fields) == 0 {
		c.d.errAt(path+".fields", "records need fields")
	}
	if rc.Size < 0 || (rc.Size > 0 && rc.Size < r.fixed) {
		c.d.errAt(path+".size", "size %d is smaller than the %d bytes the fields take", rc.Size, r.fixed)
	}
	if r.size == 0 {
		r.size = r.fixed
	}
	if rc.Count != "" {
		r.count = c.ec.compile(rc.Count, path+".count", nil)
	}
	return r
}

func (c *compiler) binaryEngine(bc *binaryConfig, path string) (engine, map[string]bool, []string, map[string][]computedConfig) {
	e := &binEngine{skipLines: bc.SkipLines}
	if bc.SkipLines < 0 {
		c.d.errAt(path+".skip_lines", "skip_lines cannot be negative")
	}
	order := c.byteOrder(bc.ByteOrder, path+".byte_order", binary.BigEndian)
	names := map[string]bool{}
	e.fields, _ = c.binFields(bc.Fields, path+".fields", order, names)
	if cs := bc.Checksum; cs != nil {
		k, ok := checksumKinds[cs.Type]
		if !ok {
			c.d.errAt(path+".checksum.type", "unknown checksum %q (%s)", cs.Type, checksumNames())
		}
		def := order
		if cs.Type == "crc16-modbus" {
			def = binary.LittleEndian // Modbus RTU sends the CRC low byte first
		}
		e.checksum = &checksumSpec{kind: cs.Type, size: k.size, fn: k.fn, from: cs.From, to: cs.To, at: cs.At,
			order: c.byteOrder(cs.ByteOrder, path+".checksum.byte_order", def)}
	}
	if sc := bc.Switch; sc != nil {
		if bc.Records != nil {
			c.d.errAt(path+".records", "with a switch, records belong in its cases")
		}
		sw := &switchSpec{src: sc.On}
		// Field names of the header are known here; the switch is evaluated on them.
		hdr := map[string]bool{"header": true}
		for n := range names {
			hdr[n] = true
		}
		if sc.On == "" {
			c.d.errAt(path+".switch.on", "switch needs on: the field (or expression) holding the message type")
		} else {
			sw.on = c.ec.compile(sc.On, path+".switch.on", hdr)
		}
		caseNames := map[string]bool{}
		mk := func(cc *caseConfig, cp string, label string) *caseSpec {
			cs := &caseSpec{label: label, match: map[string]bool{}, errMsg: cc.Error}
			for _, m := range cc.Match {
				cs.match[normMatch(m)] = true
			}
			local := map[string]bool{}
			for n := range names {
				local[n] = true
			}
			cs.fields, _ = c.binFields(cc.Fields, cp+".fields", order, local)
			cs.records = c.recordsSpec(cc.Records, cp+".records", order, local)
			for n := range local {
				caseNames[n] = true
			}
			return cs
		}
		for i := range sc.Cases {
			cp := fmt.Sprintf("%s.switch.cases[%d]", path, i)
			if len(sc.Cases[i].Match) == 0 {
				c.d.errAt(cp+".match", "a case needs match values")
			}
			sw.cases = append(sw.cases, mk(&sc.Cases[i], cp, "case "+strings.Join(sc.Cases[i].Match, "|")))
		}
		if sc.Default != nil {
			sw.def = mk(sc.Default, path+".switch.default", "default")
		}
		for n := range caseNames {
			names[n] = true
		}
		e.sw = sw
	}
	e.records = c.recordsSpec(bc.Records, path+".records", order, names)
	return e, names, []string{"header", "index"}, nil
}

// normMatch writes integers in decimal so that 0x10 matches 16.
func normMatch(s string) string {
	s = strings.TrimSpace(s)
	if i, err := strconv.ParseInt(s, 0, 64); err == nil {
		return strconv.FormatInt(i, 10)
	}
	return s
}

func (e *binEngine) parse(payload []byte) (*parsed, error) {
	p := &parsed{vars: map[string]any{"header": [][]string{}}}
	base := 0
	if e.skipLines > 0 {
		var hdr [][]string
		for i := 0; i < e.skipLines; i++ {
			j := bytes.IndexByte(payload[base:], '\n')
			if j < 0 {
				return nil, perr(base, "frame ends inside the %d-line ASCII header", e.skipLines)
			}
			line := strings.TrimRight(string(payload[base:base+j]), "\r")
			hdr = append(hdr, csvLine(line))
			base += j + 1
		}
		p.vars["header"] = hdr
	}
	data := payload[base:]
	end := len(data)
	if cs := e.checksum; cs != nil {
		n := len(data)
		abs := func(v *int, def int) int {
			if v == nil {
				return def
			}
			if *v < 0 {
				return n + *v
			}
			return *v
		}
		at := abs(cs.at, n-cs.size)
		from := abs(cs.from, 0)
		to := abs(cs.to, at)
		if at < 0 || at+cs.size > n || from < 0 || to > n || from > to {
			return nil, perr(base, "frame of %d bytes is too short for its %s checksum", n, cs.kind)
		}
		want := readUint(data[at:at+cs.size], cs.order)
		if got := cs.fn(data[from:to]); got != want {
			return nil, perr(base+at, "%s checksum mismatch: frame says %0*X, computed %0*X", cs.kind, cs.size*2, want, cs.size*2, got)
		}
		if cs.at == nil || *cs.at < 0 || at+cs.size == n {
			end = at // the trailing checksum is not data
		}
	}
	data = data[:end]
	head := newRecord(base, "frame")
	pos, err := readFields(e.fields, data, 0, base, head)
	if err != nil {
		return nil, err
	}
	fields, recs := []*binFieldSpec(nil), e.records
	if e.sw != nil {
		env := map[string]any{"header": p.vars["header"]}
		for k, v := range head.vars {
			env[k] = v
		}
		v, err := run(e.sw.on, env)
		if err != nil {
			return nil, perr(base, "switch %s: %v", e.sw.src, err)
		}
		key := normMatch(display(v))
		var cs *caseSpec
		for _, c := range e.sw.cases {
			if c.match[key] {
				cs = c
				break
			}
		}
		if cs == nil {
			cs = e.sw.def
		}
		if cs == nil {
			return nil, perr(base, "no case for %s = %s", e.sw.src, key)
		}
		if cs.errMsg != "" {
			return nil, perr(base, "%s = %s: %s", e.sw.src, key, cs.errMsg)
		}
		fields, recs = cs.fields, cs.records
		head.label = cs.label
	}
	if pos, err = readFields(fields, data, pos, base, head); err != nil {
		return nil, err
	}
	if recs == nil {
		p.records = []*record{head}
		return p, nil
	}
	count := -1
	if recs.count != nil {
		env := map[string]any{"header": p.vars["header"]}
		for k, v := range head.vars {
			env[k] = v
		}
		v, err := run(recs.count, env)
		if err != nil {
			return nil, perr(base, "records.count: %v", err)
		}
		f, ok := toFloat(v)
		if !ok || f < 0 || f != math.Trunc(f) || f > float64(len(data)+1) {
			return nil, perr(base, "records.count gave %v, not a record count", v)
		}
		count = int(f)
	} else if rest := len(data) - pos; recs.size == 0 || rest%recs.size != 0 {
		return nil, perr(base+pos, "%d bytes after the leading fields are not a whole number of %d-byte records", rest, recs.size)
	}
	for i := 0; count < 0 && pos < len(data) || i < count; i++ {
		if pos+recs.size > len(data) {
			return nil, perr(base+pos, "record %d needs %d bytes, %d left", i, recs.size, len(data)-pos)
		}
		r := newRecord(base+pos, fmt.Sprintf("record %d", i))
		for k, v := range head.vars {
			r.vars[k] = v
		}
		for k, v := range head.exact {
			r.exact[k] = v
		}
		for k, v := range head.missing {
			r.missing[k] = v
		}
		r.vars["index"] = i
		if _, err := readFields(recs.fields, data[pos:pos+recs.size], 0, base+pos, r); err != nil {
			return nil, err
		}
		p.records = append(p.records, r)
		pos += recs.size
	}
	return p, nil
}

// csvLine splits one ASCII header line (quoted, comma-separated).
func csvLine(line string) []string {
	r := csv.NewReader(strings.NewReader(line))
	r.LazyQuotes = true
	r.FieldsPerRecord = -1
	rec, err := r.Read()
	if err != nil {
		return []string{line}
	}
	return rec
}

func readUint(b []byte, order binary.ByteOrder) uint64 {
	var v uint64
	if order == binary.BigEndian {
		for _, c := range b {
			v = v<<8 | uint64(c)
		}
		return v
	}
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// readFields decodes fields from data starting at pos (offsets are relative
// to data); base is data's offset in the payload, for errors.
func readFields(fields []*binFieldSpec, data []byte, pos, base int, r *record) (int, error) {
	for _, f := range fields {
		if f.offset >= 0 {
			pos = f.offset
		}
		if pos+f.size > len(data) {
			return pos, perr(base+pos, "%s: field %s (%s, %d bytes) runs past the end (%d bytes left)", r.label, f.name, f.typ, f.size, max(0, len(data)-pos))
		}
		b := data[pos : pos+f.size]
		if err := f.decode(b, r); err != "" {
			return pos, perr(base+pos, "%s: field %s: %s", r.label, f.name, err)
		}
		pos += f.size
	}
	return pos, nil
}

func (f *binFieldSpec) decode(b []byte, r *record) string {
	switch f.typ {
	case "skip":
		return ""
	case "bytes":
		r.vars[f.name] = hex.EncodeToString(b)
		return ""
	case "string":
		r.vars[f.name] = strings.TrimRight(string(b), "\x00 ")
		return ""
	case "secnano":
		s := int32(readUint(b[0:4], f.order))
		ns := int32(readUint(b[4:8], f.order))
		r.vars[f.name] = f.epoch.Add(time.Duration(s)*time.Second + time.Duration(ns)).UTC()
		return ""
	case "f32":
		v := math.Float32frombits(uint32(readUint(b, f.order)))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			r.setMissing(f.name, fmt.Sprintf("missing value %v", v))
			return ""
		}
		fv, text := f32Value(v)
		f.setNum(r, fv, text)
		return ""
	case "f64":
		v := math.Float64frombits(readUint(b, f.order))
		if math.IsNaN(v) || math.IsInf(v, 0) {
			r.setMissing(f.name, fmt.Sprintf("missing value %v", v))
			return ""
		}
		f.setNum(r, v, formatFloat(v, 64))
		return ""
	case "bcd":
		var n uint64
		for _, c := range b {
			hi, lo := c>>4, c&15
			if hi > 9 || lo > 9 {
				return fmt.Sprintf("byte 0x%02X is not BCD", c)
			}
			n = n*100 + uint64(hi)*10 + uint64(lo)
		}
		f.setInt(r, int64(n), strconv.FormatUint(n, 10))
		return ""
	}
	u := readUint(b, f.order)
	for _, bs := range f.bits {
		v := (u >> uint(bs.bit)) & (1<<uint(bs.len) - 1)
		switch {
		case bs.lookup != nil:
			if lv, ok := bs.lookup[int64(v)]; ok {
				setLookup(r, bs.name, lv)
			} else {
				r.setMissing(bs.name, fmt.Sprintf("no lookup entry for %d", v))
			}
		case bs.len == 1:
			r.vars[bs.name] = v == 1
		default:
			r.setNumber(bs.name, int(v), strconv.FormatUint(v, 10))
		}
	}
	if f.signed {
		shift := uint(64 - 8*f.size)
		i := int64(u<<shift) >> shift
		f.setInt(r, i, strconv.FormatInt(i, 10))
		return ""
	}
	if u > math.MaxInt64 {
		f.setNum(r, float64(u), strconv.FormatUint(u, 10))
		return ""
	}
	f.setInt(r, int64(u), strconv.FormatUint(u, 10))
	return ""
}

func setLookup(r *record, name string, lv lookupVal) {
	if lv.text != "" {
		r.setNumber(name, lv.v, lv.text)
	} else {
		r.vars[name] = lv.v
	}
}

func (f *binFieldSpec) scaled() bool {
	return f.scale != 0 || f.div != 0 || f.add != 0 || f.decimals >= 0
}

func (f *binFieldSpec) setInt(r *record, i int64, text string) {
	if f.lookup != nil {
		if lv, ok := f.lookup[i]; ok {
			setLookup(r, f.name, lv)
		} else {
			r.setMissing(f.name, fmt.Sprintf("no lookup entry for %d", i))
		}
		return
	}
	if !f.scaled() {
		r.setNumber(f.name, int(i), text)
		return
	}
	f.setNum(r, float64(i), text)
}

// setNum applies div, scale, add and decimals, keeping the exact text when
// nothing changes the value.
func (f *binFieldSpec) setNum(r *record, v float64, text string) {
	if !f.scaled() {
		r.setNumber(f.name, v, text)
		return
	}
	if f.div != 0 {
		v /= f.div
	}
	if f.scaleDiv != 0 {
		v /= f.scaleDiv
	} else if f.scale != 0 {
		v *= f.scale
	}
	v += f.add
	if f.decimals >= 0 {
		v = roundTo(v, f.decimals)
	}
	r.setNumber(f.name, v, formatFloat(v, 64))
}

var _ engine = (*binEngine)(nil)
