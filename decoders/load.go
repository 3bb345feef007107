package decoders

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/decoders/sta"
)

// Set is the decoders loaded from a folder or a list of files, by name.
type Set struct {
	byName map[string]*Decoder
	names  []string
}

// Get returns the decoder called name.
func (s *Set) Get(name string) (*Decoder, bool) {
	if s == nil {
		return nil, false
	}
	d, ok := s.byName[name]
	return d, ok
}

// Names lists the decoders' names, sorted.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s.names...)
}

// LoadDir loads every *.yaml and *.yml file of dir (not its sub-folders).
func LoadDir(dir string) (*Set, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("decoders: %w", err)
	}
	var paths []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") {
			continue
		}
		if strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") {
			paths = append(paths, filepath.Join(dir, n))
		}
	}
	sort.Strings(paths)
	return LoadFiles(paths...)
}

// LoadFiles compiles every file. On problems it returns all of them at
// once (errors.Join of *ConfigError) and no Set.
func LoadFiles(paths ...string) (*Set, error) {
	s := &Set{byName: map[string]*Decoder{}}
	var errs []error
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, &ConfigError{File: p, Line: 0, Col: 0, Msg: err.Error()})
			continue
		}
		d, ferrs := compileFile(p, data)
		errs = append(errs, ferrs...)
		if d == nil {
			continue
		}
		if prev, ok := s.byName[d.name]; ok {
			errs = append(errs, &ConfigError{File: p, Line: d.namePos.Line, Col: d.namePos.Col, Path: "name",
				Msg: fmt.Sprintf("decoder %q is already defined in %s", d.name, prev.file)})
			continue
		}
		s.byName[d.name] = d
		s.names = append(s.names, d.name)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.Strings(s.names)
	return s, nil
}

// LoadBytes compiles one decoder from memory; file names it in errors and
// anchors relative example paths.
func LoadBytes(file string, data []byte) (*Decoder, error) {
	d, errs := compileFile(file, data)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return d, nil
}

var (
	yamlLineRe = regexp.MustCompile(`line (\d+)`)
	nameRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	identRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// compileFile parses and compiles one decoder file, returning every error.
func compileFile(file string, data []byte) (*Decoder, []error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		line := 1
		if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		return nil, []error{&ConfigError{File: file, Line: line, Col: 1, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, []error{&ConfigError{File: file, Line: 1, Col: 1, Msg: "empty decoder file"}}
	}
	yd := newYAMLDec(file)
	var cfg fileConfig
	yd.decode(&root, reflectValue(&cfg), "")
	if yd.budget < 0 {
		return nil, []error{&ConfigError{File: file, Line: 1, Col: 1, Msg: "the document is too large once its aliases are expanded"}}
	}
	c := &compiler{d: yd, ec: &exprCompiler{d: yd}}
	dec := c.compile(&cfg)
	dec.reads = c.ec.reads
	dec.nameVal = dec.name
	if len(yd.errs) > 0 {
		sortErrs(yd.errs)
		return nil, yd.errs
	}
	dec.file = file
	dec.dir = filepath.Dir(file)
	return dec, nil
}

func sortErrs(errs []error) {
	sort.SliceStable(errs, func(i, j int) bool {
		a, _ := errs[i].(*ConfigError)
		b, _ := errs[j].(*ConfigError)
		if a == nil || b == nil {
			return false
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// compiler turns a fileConfig into a Decoder.
type compiler struct {
	d     *yamlDec
	ec    *exprCompiler
	known map[string]bool // nil: field names only known at run time
	zone  *time.Location  // the decoder's time zone (binary secnano epochs)
}

func (c *compiler) expr(src, path string) *vm.Program {
	return c.ec.compile(src, path, c.known)
}

func (c *compiler) tpl(src, path string) *template {
	if src == "" {
		return nil
	}
	return c.ec.template(src, path, c.known)
}

// engineNames are variables every record env has besides its fields.
var baseNames = []string{"frame", "decoder", "identity", "deviceId", "customerId", "device", "recordTime",
	"name", "sensor", "input", "observedProperty"}

func (c *compiler) compile(cfg *fileConfig) *Decoder {
	dec := &Decoder{name: cfg.Name, description: cfg.Description, format: cfg.Format, groups: map[string][]computed{}}
	dec.namePos = c.d.lookup("name")
	c.zone = time.UTC
	if cfg.Time != nil && cfg.Time.Zone != "" {
		if z, err := loadZone(cfg.Time.Zone); err == nil {
			c.zone = z
		}
	}
	if cfg.Name == "" {
		c.d.errAt("name", "a decoder needs a name")
	} else if !nameRe.MatchString(cfg.Name) {
		c.d.errAt("name", "name %q: use letters, digits, '_', '.', '-'", cfg.Name)
	}

	// The engine, and the field names it produces.
	sections := map[string]bool{"text": cfg.Text != nil, "nmea": cfg.NMEA != nil, "json": cfg.JSON != nil, "binary": cfg.Binary != nil}
	for s, given := range sections {
		if given && s != cfg.Format {
			c.d.errAt(s, "section %q does not apply to format %q", s, cfg.Format)
		}
	}
	var fields map[string]bool
	var engVars []string
	var groups map[string][]computedConfig
	switch cfg.Format {
	case "text":
		tc := cfg.Text
		if tc == nil {
			tc = &textConfig{}
		}
		dec.engine, fields, engVars = c.textEngine(tc, "text")
	case "nmea":
		nc := cfg.NMEA
		if nc == nil {
			c.d.errAt("format", "format nmea needs an nmea section with sentences")
			nc = &nmeaConfig{}
		}
		dec.engine, fields, engVars, groups = c.nmeaEngine(nc, "nmea")
	case "json":
		jc := cfg.JSON
		if jc == nil {
			jc = &jsonConfig{}
		}
		dec.engine, fields, engVars = c.jsonEngine(jc, "json")
	case "binary":
		bc := cfg.Binary
		if bc == nil {
			c.d.errAt("format", "format binary needs a binary section")
			bc = &binaryConfig{}
		}
		dec.engine, fields, engVars, groups = c.binaryEngine(bc, "binary")
	case "":
		c.d.errAt("format", "a decoder needs a format: text, nmea, json or binary")
	default:
		c.d.errAt("format", "unknown format %q (text, nmea, json, binary)", cfg.Format)
	}
	if fields != nil {
		c.known = map[string]bool{}
		for f := range fields {
			c.known[f] = true
		}
		for _, n := range append(append([]string{}, baseNames...), engVars...) {
			c.known[n] = true
		}
		for _, g := range groups {
			for _, cc := range g {
				c.known[cc.Name] = true
			}
		}
		for _, cc := range cfg.Computed {
			c.known[cc.Name] = true
		}
	}

	// Computed values (per group, then the decoder's).
	groupNames := make([]string, 0, len(groups))
	for g := range groups {
		groupNames = append(groupNames, g)
	}
	sort.Strings(groupNames)
	for _, g := range groupNames {
		dec.groups[g] = c.computedList(groups[g], groupPath(cfg.Format, g))
	}
	dec.computed = c.computedList(cfg.Computed, "computed")

	// Identity.
	idSrc := cfg.Identity
	if idSrc == "" {
		idSrc = "frame.identity"
	}
	dec.identity = c.expr(idSrc, "identity")

	c.timeSpec(cfg.Time, &dec.time)

	switch cfg.BadRecords {
	case "", "fail":
	case "skip":
		dec.badSkip = true
	default:
		c.d.errAt("bad_records", "bad_records must be fail or skip, not %q", cfg.BadRecords)
	}

	dec.thingName = c.tpl(cfg.Thing.Name, "thing.name")
	dec.thingDesc = c.tpl(cfg.Thing.Description, "thing.description")
	for _, k := range sortedMapKeys(cfg.Thing.Properties) {
		dec.thingProps = append(dec.thingProps, namedTemplate{name: k, t: c.tpl(cfg.Thing.Properties[k], "thing.properties."+k)})
	}
	dec.feature = c.tpl(cfg.Feature, "featureOfInterest")
	dec.params = c.paramList(cfg.Parameters, "parameters")

	seen := map[string]bool{}
	for i := range cfg.Datastreams {
		s := c.stream(&cfg.Datastreams[i], fmt.Sprintf("datastreams[%d]", i))
		if s == nil {
			continue
		}
		if seen[s.name] {
			c.d.errAt(fmt.Sprintf("datastreams[%d].name", i), "datastream %q is defined twice", s.name)
		}
		seen[s.name] = true
		dec.streams = append(dec.streams, s)
	}
	seen = map[string]bool{}
	for i := range cfg.Alarms {
		path := fmt.Sprintf("alarms[%d]", i)
		a := c.alarm(&cfg.Alarms[i], path)
		if a == nil {
			continue
		}
		if seen[a.name] {
			c.d.errAt(path+".name", "alarm rule %q is defined twice", a.name)
		}
		seen[a.name] = true
		dec.alarms = append(dec.alarms, a)
	}
	for i := range cfg.Examples {
		c.checkExample(&cfg.Examples[i], fmt.Sprintf("examples[%d]", i))
		dec.examples = append(dec.examples, cfg.Examples[i])
		dec.exampleAt = append(dec.exampleAt, c.d.lookup(fmt.Sprintf("examples[%d]", i)))
	}
	return dec
}

func groupPath(format, group string) string {
	if format == "nmea" {
		return "nmea.sentences." + group + ".computed"
	}
	return group + ".computed"
}

func sortedMapKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

func (c *compiler) computedList(list []computedConfig, path string) []computed {
	var out []computed
	for i, cc := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		if !identRe.MatchString(cc.Name) {
			c.d.errAt(p+".name", "computed name %q must be an identifier (letters, digits, _)", cc.Name)
			continue
		}
		if cc.Value == "" {
			c.d.errAt(p+".value", "computed %q needs a value expression", cc.Name)
			continue
		}
		if prog := c.expr(cc.Value, p+".value"); prog != nil {
			out = append(out, computed{name: cc.Name, prog: prog})
		}
	}
	return out
}

func (c *compiler) paramList(m map[string]string, path string) []computed {
	var out []computed
	for _, k := range sortedMapKeys(m) {
		if prog := c.expr(m[k], path+"."+k); prog != nil {
			out = append(out, computed{name: k, prog: prog})
		}
	}
	return out
}

func (c *compiler) timeSpec(tc *timeConfig, ts *timeSpec) {
	ts.zone = time.UTC
	ts.unit = time.Second
	ts.epoch = time.Unix(0, 0).UTC()
	if tc == nil {
		return
	}
	if tc.Zone != "" {
		z, err := loadZone(tc.Zone)
		if err != nil {
			c.d.errAt("time.zone", "unknown time zone %q (use an IANA name such as UTC or Etc/GMT+6)", tc.Zone)
		} else {
			ts.zone = z
		}
	}
	ts.layout = tc.Layout
	if tc.Epoch != "" {
		e, err := parseEpoch(tc.Epoch, ts.zone)
		if err != nil {
			c.d.errAt("time.epoch", "%v", err)
		}
		ts.epoch = e
	}
	switch tc.Unit {
	case "", "s":
	case "ms":
		ts.unit = time.Millisecond
	case "us":
		ts.unit = time.Microsecond
	case "ns":
		ts.unit = time.Nanosecond
	default:
		c.d.errAt("time.unit", "time.unit must be s, ms, us or ns, not %q", tc.Unit)
	}
	switch tc.Fallback {
	case "":
	case "received":
		ts.fallback = true
	default:
		c.d.errAt("time.fallback", "time.fallback can only be \"received\"")
	}
	if tc.Value != "" {
		ts.value = c.expr(tc.Value, "time.value")
	} else if tc.Nanos != "" {
		c.d.errAt("time.nanos", "time.nanos needs time.value")
	}
	if tc.Nanos != "" {
		ts.nanos = c.expr(tc.Nanos, "time.nanos")
	}
}

var obsTypes = map[string]string{
	sta.Measurement: sta.Measurement, sta.Count: sta.Count, sta.Truth: sta.Truth,
	sta.Category: sta.Category, sta.Any: sta.Any,
}

const obsTypeURI = "http://www.opengis.net/def/observationType/OGC-OM/2.0/"

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (c *compiler) stream(ds *dsConfig, path string) *stream {
	s := &stream{cfg: *ds, name: ds.Name}
	if ds.Name == "" {
		c.d.errAt(path+".name", "a datastream needs a name")
		return nil
	}
	ot := strings.TrimPrefix(ds.ObservationType, obsTypeURI)
	if ot == "" {
		ot = sta.Measurement
	}
	var ok bool
	if s.obsType, ok = obsTypes[ot]; !ok {
		c.d.errAt(path+".observationType", "unknown observationType %q (OM_Measurement, OM_CountObservation, OM_TruthObservation, OM_CategoryObservation, OM_Observation)", ds.ObservationType)
	}
	if ds.Unit != nil {
		if s.obsType == sta.Truth || s.obsType == sta.Category {
			c.d.errAt(path+".unit", "a %s datastream has no unit (SensorThings sends null)", s.obsType)
		}
		s.unit = sta.Unit{Name: strPtr(ds.Unit.Name), Symbol: strPtr(ds.Unit.Symbol), Definition: strPtr(ds.Unit.Definition)}
	}
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	s.description = c.tpl(ds.Description, path+".description")
	s.sensor = c.tpl(def(ds.Sensor, "{name}"), path+".sensor")
	s.input = c.tpl(def(ds.Input, "{name}"), path+".input")
	s.property = c.tpl(def(ds.ObservedProperty, "{name}"), path+".observedProperty")
	s.sensusID = c.tpl(def(ds.SensusID, "{sensor}@{input}@{deviceId}@{customerId}"), path+".sensusID")
	switch {
	case ds.Value != "":
		s.value = c.expr(ds.Value, path+".value")
		s.valueField, _ = isIdent(s.value)
	case identRe.MatchString(ds.Name):
		if c.known != nil && !c.known[ds.Name] {
			c.d.errAt(path+".name", "no field %q to take the value from; set value", ds.Name)
		}
		s.valueField = ds.Name
	default:
		c.d.errAt(path+".value", "datastream %q needs a value expression (its name is not a field name)", ds.Name)
	}
	if ds.PhenomenonTime != "" {
		s.phenTime = c.expr(ds.PhenomenonTime, path+".phenomenonTime")
	}
	if ds.When != "" {
		s.when = c.expr(ds.When, path+".when")
	}
	if r := ds.Range; r != nil {
		s.min, s.max = r.Min, r.Max
		if r.Min == nil && r.Max == nil {
			c.d.errAt(path+".range", "range needs min, max or both")
		}
		if r.Min != nil && r.Max != nil && *r.Min > *r.Max {
			c.d.errAt(path+".range", "range min %v is above max %v", *r.Min, *r.Max)
		}
		switch r.Action {
		case "", "flag":
		case "drop":
			s.rangeDrop = true
		default:
			c.d.errAt(path+".range.action", "range.action must be flag or drop, not %q", r.Action)
		}
		if s.obsType != sta.Measurement && s.obsType != sta.Count {
			c.d.errAt(path+".range", "a range check needs a numeric datastream")
		}
	}
	s.params = c.paramList(ds.Parameters, path+".parameters")
	return s
}

var severities = map[string]bool{"LOW": true, "MEDIUM": true, "HIGH": true, "CRITICAL": true}

func (c *compiler) alarm(ac *alarmConfig, path string) *alarmRule {
	a := &alarmRule{name: ac.Name, alarmType: ac.AlarmType, severity: ac.Severity, threshold: ac.ThresholdValue, unit: ac.Unit}
	if !nameRe.MatchString(ac.Name) {
		c.d.errAt(path+".name", "an alarm rule needs a name of letters, digits, '_', '.', '-' (it is part of the alarmId)")
	}
	if ac.AlarmType == "" {
		c.d.errAt(path+".alarmType", "alarmType is required (e.g. POWER_LOW, SENSOR_FAULT, HIGH_LEVEL)")
	}
	if !severities[ac.Severity] {
		c.d.errAt(path+".severity", "severity must be LOW, MEDIUM, HIGH or CRITICAL, not %q", ac.Severity)
	}
	if ac.Raise == "" {
		c.d.errAt(path+".raise", "raise (the condition that raises the alarm) is required")
	} else {
		a.raise = c.expr(ac.Raise, path+".raise")
	}
	if ac.Clear != "" {
		a.clear = c.expr(ac.Clear, path+".clear")
	}
	a.description = c.tpl(ac.Description, path+".description")
	if ac.CurrentValue != "" {
		a.current = c.expr(ac.CurrentValue, path+".currentValue")
	}
	if l := ac.Location; l != nil {
		if l.Latitude == "" || l.Longitude == "" {
			c.d.errAt(path+".location", "location needs latitude and longitude expressions")
		} else {
			a.lat = c.expr(l.Latitude, path+".location.latitude")
			a.lon = c.expr(l.Longitude, path+".location.longitude")
		}
	}
	if di := ac.DeviceInfo; di != nil {
		a.serial = c.tpl(di.SerialNumber, path+".deviceInfo.serialNumber")
		a.model = c.tpl(di.Model, path+".deviceInfo.model")
		a.firmware = c.tpl(di.FirmwareVersion, path+".deviceInfo.firmwareVersion")
	}
	return a
}

func (c *compiler) checkExample(ex *exampleConfig, path string) {
	n := 0
	if ex.Hex != "" {
		n++
		if _, err := hex.DecodeString(strings.Join(strings.Fields(ex.Hex), "")); err != nil {
			c.d.errAt(path+".hex", "not hex: %v", err)
		}
	}
	if ex.Text != nil {
		n++
	}
	if ex.File != "" {
		n++
	}
	if n != 1 {
		c.d.errAt(path, "an example needs exactly one of hex, text or file")
	}
	if ex.Line < 0 {
		c.d.errAt(path+".line", "line counts from 1")
	}
	if ex.Frame.Received != "" {
		if _, err := time.Parse(time.RFC3339Nano, ex.Frame.Received); err != nil {
			c.d.errAt(path+".frame.received", "not an RFC 3339 time: %v", err)
		}
	}
	for k := range ex.Expect.Counts {
		switch k {
		case "things", "datastreams", "observations", "alarms", "skipped":
		default:
			c.d.errAt(path+".expect.counts."+k, "counts can be given for things, datastreams, observations, alarms, skipped")
		}
	}
}
