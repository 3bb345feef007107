package decoders

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// Expressions use github.com/expr-lang/expr. Each is compiled once when the
// decoder file is loaded; a *vm.Program is safe to run from many goroutines.
// now() is disabled (decoders are pure: the frame's received time is the
// only clock) and the helpers below are added.

// helpers are the functions decoders may call besides expr's builtins.
var helpers = []expr.Option{
	expr.DisableBuiltin("now"),
	expr.DisableBuiltin("round"),
	expr.Timezone("UTC"),
	expr.Function("round", fnRound),
	expr.Function("coalesce", fnCoalesce),
	expr.Function("cell", fnCell),
	expr.Function("hemi", fnHemi),
	expr.Function("num", fnNum),
	expr.Function("bit", fnBit),
	expr.Function("unix", fnUnix),
	expr.Function("epoch", fnEpoch),
	expr.Function("parseTime", fnParseTime),
	expr.Function("nmeaDate", fnNMEADate),
	expr.Function("nmeaClock", fnNMEAClock),
	expr.Function("fail", fnFail),
}

// helperNames are the names above (for the unknown-name check).
var helperNames = map[string]bool{
	"round": true, "coalesce": true, "cell": true, "hemi": true, "num": true, "bit": true,
	"unix": true, "epoch": true, "parseTime": true, "nmeaDate": true, "nmeaClock": true,
	"fail": true,
}

// FailError is what fail("message") raises: the decoder refuses the frame
// (or, with bad_records: skip, the record) with exactly that message.
type FailError struct{ Msg string }

func (e *FailError) Error() string { return e.Msg }

// fail(message) rejects: `computed: [{name: _, value: 'len(cols) < 5 ?
// fail("want 5 fields") : nil'}]`. Unlike other expression errors, which
// only leave the value out, it makes a decode error with that message.
func fnFail(p ...any) (any, error) {
	if len(p) != 1 {
		return nil, fmt.Errorf("fail(message) takes 1 argument")
	}
	return nil, &FailError{Msg: display(p[0])}
}

// round(x) rounds to an integer, round(x, n) to n decimals (half away from zero).
func fnRound(p ...any) (any, error) {
	if len(p) < 1 || len(p) > 2 {
		return nil, fmt.Errorf("round(x[, decimals]) takes 1 or 2 arguments")
	}
	x, ok := toFloat(p[0])
	if !ok {
		return nil, fmt.Errorf("round: %v is not a number", p[0])
	}
	n := 0
	if len(p) == 2 {
		f, ok := toFloat(p[1])
		if !ok || f < 0 || f > 15 {
			return nil, fmt.Errorf("round: decimals must be 0..15")
		}
		n = int(f)
	}
	return roundTo(x, n), nil
}

// roundTo rounds through the decimal text so that round(43.7651866, 6)
// is exactly the float64 of "43.765187".
func roundTo(x float64, n int) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	p := math.Pow(10, float64(n))
	r := math.Round(x*p) / p
	v, err := strconv.ParseFloat(strconv.FormatFloat(r, 'f', n, 64), 64)
	if err != nil {
		return r
	}
	return v
}

// coalesce returns its first argument that is neither nil nor "".
func fnCoalesce(p ...any) (any, error) {
	for _, v := range p {
		if v == nil {
			continue
		}
		if s, ok := v.(string); ok && s == "" {
			continue
		}
		return v, nil
	}
	return nil, nil
}

// cell(list, i, j, ...) indexes nested lists, nil when out of range.
func fnCell(p ...any) (any, error) {
	if len(p) < 2 {
		return nil, fmt.Errorf("cell(list, index...) needs a list and an index")
	}
	cur := p[0]
	for _, ix := range p[1:] {
		f, ok := toFloat(ix)
		if !ok {
			return nil, fmt.Errorf("cell: index %v is not a number", ix)
		}
		i := int(f)
		rv := reflect.ValueOf(cur)
		if cur == nil || (rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array) {
			return nil, nil
		}
		if i < 0 {
			i += rv.Len()
		}
		if i < 0 || i >= rv.Len() {
			return nil, nil
		}
		cur = rv.Index(i).Interface()
	}
	return cur, nil
}

// hemi(v, h) makes v negative for the S and W hemispheres.
func fnHemi(p ...any) (any, error) {
	if len(p) != 2 {
		return nil, fmt.Errorf("hemi(value, hemisphere) takes 2 arguments")
	}
	x, ok := toFloat(p[0])
	if !ok {
		return nil, fmt.Errorf("hemi: %v is not a number", p[0])
	}
	switch h, _ := p[1].(string); h {
	case "N", "E":
		return x, nil
	case "S", "W":
		return -x, nil
	default:
		return nil, fmt.Errorf("hemi: %q is not N, S, E or W", p[1])
	}
}

// num(x) converts a decimal string (or number) to a number, nil when it is none.
func fnNum(p ...any) (any, error) {
	if len(p) != 1 {
		return nil, fmt.Errorf("num(x) takes 1 argument")
	}
	if s, ok := p[0].(string); ok {
		v, _, ok := parseNumber(strings.TrimSpace(s))
		if !ok {
			return nil, nil
		}
		return v, nil
	}
	if f, ok := toFloat(p[0]); ok {
		return f, nil
	}
	return nil, nil
}

// bit(x, n) reports whether bit n (0 = least significant) of x is set.
func fnBit(p ...any) (any, error) {
	if len(p) != 2 {
		return nil, fmt.Errorf("bit(x, n) takes 2 arguments")
	}
	x, ok1 := toFloat(p[0])
	n, ok2 := toFloat(p[1])
	if !ok1 || !ok2 || n < 0 || n > 63 {
		return nil, fmt.Errorf("bit: bad arguments %v, %v", p[0], p[1])
	}
	return (uint64(int64(x))>>uint(n))&1 == 1, nil
}

func secNano(sec, nsec any) (int64, int64, error) {
	s, ok := toFloat(sec)
	if !ok {
		return 0, 0, fmt.Errorf("%v is not a number of seconds", sec)
	}
	var ns float64
	if nsec != nil {
		if ns, ok = toFloat(nsec); !ok {
			return 0, 0, fmt.Errorf("%v is not a number of nanoseconds", nsec)
		}
	}
	whole := math.Floor(s)
	return int64(whole), int64(math.Round((s-whole)*1e9)) + int64(ns), nil
}

// unix(sec[, nsec]) is the time sec seconds (and nsec nanoseconds) after 1970-01-01T00:00:00Z.
func fnUnix(p ...any) (any, error) {
	if len(p) < 1 || len(p) > 2 {
		return nil, fmt.Errorf("unix(seconds[, nanoseconds]) takes 1 or 2 arguments")
	}
	var ns any
	if len(p) == 2 {
		ns = p[1]
	}
	s, n, err := secNano(p[0], ns)
	if err != nil {
		return nil, fmt.Errorf("unix: %w", err)
	}
	return time.Unix(s, n).UTC(), nil
}

// epoch(base, sec[, nsec]) is the time sec seconds after base (RFC 3339, or
// "2006-01-02 15:04:05" / "2006-01-02" in UTC).
func fnEpoch(p ...any) (any, error) {
	if len(p) < 2 || len(p) > 3 {
		return nil, fmt.Errorf("epoch(base, seconds[, nanoseconds]) takes 2 or 3 arguments")
	}
	bs, _ := p[0].(string)
	base, err := parseEpoch(bs, time.UTC)
	if err != nil {
		return nil, fmt.Errorf("epoch: %w", err)
	}
	var ns any
	if len(p) == 3 {
		ns = p[2]
	}
	s, n, err := secNano(p[1], ns)
	if err != nil {
		return nil, fmt.Errorf("epoch: %w", err)
	}
	return base.Add(time.Duration(s)*time.Second + time.Duration(n)).UTC(), nil
}

// parseEpoch reads an epoch; without an offset it is in loc.
func parseEpoch(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, l := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("epoch %q is not RFC 3339, \"2006-01-02 15:04:05\" or \"2006-01-02\"", s)
}

// parseTime(s, layout[, zone]) parses with a Go layout in zone (default UTC).
func fnParseTime(p ...any) (any, error) {
	if len(p) < 2 || len(p) > 3 {
		return nil, fmt.Errorf("parseTime(text, layout[, zone]) takes 2 or 3 arguments")
	}
	s, _ := p[0].(string)
	layout, _ := p[1].(string)
	loc := time.UTC
	if len(p) == 3 {
		z, _ := p[2].(string)
		l, err := loadZone(z)
		if err != nil {
			return nil, fmt.Errorf("parseTime: %w", err)
		}
		loc = l
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		return nil, fmt.Errorf("parseTime: %w", err)
	}
	return t.UTC(), nil
}

// parseHMS reads NMEA hhmmss[.sss].
func parseHMS(s string) (time.Duration, error) {
	if len(s) < 6 {
		return 0, fmt.Errorf("time %q is not hhmmss[.sss]", s)
	}
	h, e1 := strconv.Atoi(s[0:2])
	m, e2 := strconv.Atoi(s[2:4])
	sec, e3 := strconv.ParseFloat(s[4:], 64)
	if e1 != nil || e2 != nil || e3 != nil || h > 23 || m > 59 || sec < 0 || sec >= 61 || s[4] < '0' || s[4] > '9' {
		return 0, fmt.Errorf("time %q is not hhmmss[.sss]", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(math.Round(sec*1e3))*time.Millisecond, nil
}

// nmeaDate(ddmmyy, hhmmss) is an NMEA date and time in UTC (years 80–99 are 19xx).
func fnNMEADate(p ...any) (any, error) {
	if len(p) != 2 {
		return nil, fmt.Errorf("nmeaDate(ddmmyy, hhmmss) takes 2 arguments")
	}
	d := fmt.Sprint(p[0])
	if len(d) != 6 {
		return nil, fmt.Errorf("nmeaDate: date %q is not ddmmyy", d)
	}
	day, e1 := strconv.Atoi(d[0:2])
	mon, e2 := strconv.Atoi(d[2:4])
	yy, e3 := strconv.Atoi(d[4:6])
	if e1 != nil || e2 != nil || e3 != nil || day < 1 || day > 31 || mon < 1 || mon > 12 {
		return nil, fmt.Errorf("nmeaDate: date %q is not ddmmyy", d)
	}
	year := 2000 + yy
	if yy >= 80 {
		year = 1900 + yy
	}
	tod, err := parseHMS(fmt.Sprint(p[1]))
	if err != nil {
		return nil, fmt.Errorf("nmeaDate: %w", err)
	}
	return time.Date(year, time.Month(mon), day, 0, 0, 0, 0, time.UTC).Add(tod), nil
}

// nmeaClock(hhmmss, ref) is the UTC time of day hhmmss on the day nearest
// to ref (the frame's received time): sentences like GGA carry no date.
func fnNMEAClock(p ...any) (any, error) {
	if len(p) != 2 {
		return nil, fmt.Errorf("nmeaClock(hhmmss, reference) takes 2 arguments")
	}
	ref, ok := p[1].(time.Time)
	if !ok || ref.IsZero() {
		return nil, fmt.Errorf("nmeaClock: reference %v is not a time", p[1])
	}
	tod, err := parseHMS(fmt.Sprint(p[0]))
	if err != nil {
		return nil, fmt.Errorf("nmeaClock: %w", err)
	}
	ref = ref.UTC()
	day := time.Date(ref.Year(), ref.Month(), ref.Day(), 0, 0, 0, 0, time.UTC)
	t := day.Add(tod)
	if d := t.Sub(ref); d > 12*time.Hour {
		t = t.AddDate(0, 0, -1)
	} else if d < -12*time.Hour {
		t = t.AddDate(0, 0, 1)
	}
	return t, nil
}

// loadZone loads an IANA zone; the binary embeds the zone database
// (time/tzdata) so gateways without /usr/share/zoneinfo work too.
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	return time.LoadLocation(name)
}

// ---- compiling ----

// exprCompiler compiles the expressions of one file, reporting errors at
// the line of the expression.
type exprCompiler struct {
	d *yamlDec
	// reads is every name any compiled expression reads: a decoder none
	// of whose expressions reads frame does not get it built per frame.
	reads map[string]bool
}

// compile compiles src found at path. known lists the names the expression
// may use; nil means the field set is only known at run time (a header row,
// JSON without a field list), so unknown names evaluate to nil.
func (c *exprCompiler) compile(src, path string, known map[string]bool, opts ...expr.Option) *vm.Program {
	o := append([]expr.Option{expr.Env(map[string]any{}), expr.AllowUndefinedVariables()}, helpers...)
	o = append(o, opts...)
	prog, err := expr.Compile(src, o...)
	if err != nil {
		p := c.d.lookup(path)
		line, col, msg := p.Line, p.Col, err.Error()
		if fe, ok := err.(*file.Error); ok {
			msg = fe.Message
			if fe.Line > 1 {
				line += fe.Line - 1
				col = fe.Column + 1
			} else if fe.Line == 1 {
				col += fe.Column
			}
		}
		c.d.errs = append(c.d.errs, &ConfigError{File: c.d.file, Line: line, Col: col, Path: path, Msg: "expression: " + oneLine(msg)})
		return nil
	}
	if c.reads == nil {
		c.reads = map[string]bool{}
	}
	for _, id := range readNames(prog) {
		c.reads[id] = true
	}
	if callsNow(prog) {
		c.d.errAt(path, "now() is not available: decoders are pure (use frame.received)")
		return nil
	}
	if known != nil {
		if bad := unknownNames(prog, known); len(bad) > 0 {
			c.d.errAt(path, "expression %q uses unknown name(s) %s (known: %s)", src, strings.Join(bad, ", "), sortedKeys(known))
			return nil
		}
	}
	return prog
}

type identVisitor struct {
	ids   []string
	lets  map[string]bool
	calls []string
}

func (v *identVisitor) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.IdentifierNode:
		v.ids = append(v.ids, x.Value)
	case *ast.VariableDeclaratorNode:
		v.lets[x.Name] = true
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok {
			v.calls = append(v.calls, id.Value)
		}
	}
}

// readNames lists the identifiers a program reads.
func readNames(prog *vm.Program) []string {
	v := &identVisitor{lets: map[string]bool{}}
	n := prog.Node()
	ast.Walk(&n, v)
	return v.ids
}

// callsNow reports whether the program calls now(), which decoders may not
// use: they are pure, and frame.received is their clock.
func callsNow(prog *vm.Program) bool {
	v := &identVisitor{lets: map[string]bool{}}
	n := prog.Node()
	ast.Walk(&n, v)
	for _, c := range v.calls {
		if c == "now" {
			return true
		}
	}
	return false
}

func unknownNames(prog *vm.Program, known map[string]bool) []string {
	v := &identVisitor{lets: map[string]bool{}}
	n := prog.Node()
	ast.Walk(&n, v)
	var bad []string
	seen := map[string]bool{}
	for _, id := range v.ids {
		if known[id] || v.lets[id] || helperNames[id] || seen[id] || id == "$env" {
			continue
		}
		if _, ok := builtin.Index[id]; ok {
			continue
		}
		seen[id] = true
		bad = append(bad, id)
	}
	return bad
}

func sortedKeys(m map[string]bool) string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	if len(k) > 30 {
		k = append(k[:30], "…")
	}
	return strings.Join(k, ", ")
}

// vms are reused: expr.Run makes a VM (and its stack) per run.
var vms = sync.Pool{New: func() any { return new(vm.VM) }}

// run evaluates a program.
func run(p *vm.Program, env map[string]any) (any, error) {
	m := vms.Get().(*vm.VM)
	v, err := m.Run(p, env)
	vms.Put(m)
	if err != nil {
		var fe *FailError
		if errors.As(err, &fe) {
			return nil, fe
		}
		return nil, fmt.Errorf("%s", oneLine(err.Error()))
	}
	return v, nil
}

// isIdent reports whether the program is a bare name (and which), so that
// a datastream value taken straight from a field keeps its exact text.
func isIdent(p *vm.Program) (string, bool) {
	if p == nil {
		return "", false
	}
	if id, ok := p.Node().(*ast.IdentifierNode); ok {
		return id.Value, true
	}
	return "", false
}

// ---- templates ----

// template is text with {expression} parts: "{sensor}@{input}@{deviceId}@{customerId}".
// "{{" and "}}" are literal braces.
type template struct {
	src   string
	parts []tplPart
}

type tplPart struct {
	lit  string
	prog *vm.Program
}

func (c *exprCompiler) template(src, path string, known map[string]bool) *template {
	t := &template{src: src}
	var lit strings.Builder
	for i := 0; i < len(src); i++ {
		ch := src[i]
		switch {
		case ch == '{' && i+1 < len(src) && src[i+1] == '{':
			lit.WriteByte('{')
			i++
		case ch == '}' && i+1 < len(src) && src[i+1] == '}':
			lit.WriteByte('}')
			i++
		case ch == '{':
			end := strings.IndexByte(src[i+1:], '}')
			if end < 0 {
				c.d.errAt(path, "template %q: unclosed {", src)
				return nil
			}
			if lit.Len() > 0 {
				t.parts = append(t.parts, tplPart{lit: lit.String()})
				lit.Reset()
			}
			p := c.compile(src[i+1:i+1+end], path, known)
			if p == nil {
				return nil
			}
			t.parts = append(t.parts, tplPart{prog: p})
			i += end + 1
		case ch == '}':
			c.d.errAt(path, "template %q: unmatched } (write }} for a brace)", src)
			return nil
		default:
			lit.WriteByte(ch)
		}
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, tplPart{lit: lit.String()})
	}
	return t
}

// eval renders the template; nil parts render as "".
func (t *template) eval(env map[string]any) (string, error) {
	if t == nil {
		return "", nil
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.prog == nil {
			b.WriteString(p.lit)
			continue
		}
		v, err := run(p.prog, env)
		if err != nil {
			return "", fmt.Errorf("template %q: %w", t.src, err)
		}
		b.WriteString(display(v))
	}
	return b.String(), nil
}

// display renders a value inside text.
func display(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case time.Time:
		return rfc3339(x)
	case float64:
		return formatFloat(x, 64)
	}
	return fmt.Sprint(v)
}
