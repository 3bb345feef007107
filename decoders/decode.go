package decoders

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders/sta"
)

// Device is what the device registry knows of a device.
type Device struct {
	ID          string         `json:"deviceId"`
	CustomerID  string         `json:"customerId"`
	Name        string         `json:"name,omitempty"`
	Description string         `json:"description,omitempty"`
	Properties  map[string]any `json:"properties,omitempty"`
}

// Env is what Decode needs from the daemon besides the frame. Decode only
// reads it.
type Env struct {
	// Lookup is the device registry: identity → device. nil means no
	// registry: the identity is the deviceId and the customer comes from
	// the frame (Frame.CustomerID) or DefaultCustomer.
	Lookup func(identity string) (Device, bool)
	// DefaultCustomer is used when neither the registry nor the frame gives one.
	DefaultCustomer string
	// Alarms is the persisted alarm state: key → active. Keys are
	// "{rule}@{deviceId}" (AlarmKey). nil: all inactive.
	Alarms map[string]bool
}

// Result is what one frame decodes to.
type Result struct {
	Device       Device
	Things       []sta.Thing
	Datastreams  []sta.Datastream
	Observations []sta.Observation
	Alarms       []sta.Alarm
	// AlarmChanges holds the new state of every alarm key whose state this
	// frame changed (true = active). The daemon persists it and passes the
	// merged state as Env.Alarms next time. A key raised and cleared within
	// one frame appears with false.
	AlarmChanges map[string]bool
	// Skipped says which values were left out and why ("line 33 WaterLvl_Min:
	// missing value \"NAN\"").
	Skipped []string
}

// record is one row / sentence / binary record as an engine produced it.
type record struct {
	off     int               // byte offset in the payload
	label   string            // "line 9", "sentence GGA", "record 3"
	group   string            // sentence type or switch case, for group computed values
	vars    map[string]any    // field values as expressions see them
	exact   map[string]string // exact JSON number text of numeric fields
	missing map[string]string // fields without a value, and why
	err     *parseError       // a bad record (see bad_records)
	failed  bool              // fail("…") refused it (bad_records: skip)
}

// records are reused from frame to frame (see Decode): their three maps
// were the largest allocation of a one-line frame.
var records = sync.Pool{New: func() any {
	return &record{vars: make(map[string]any, 16), exact: make(map[string]string, 8), missing: map[string]string{}}
}}

func newRecord(off int, label string) *record {
	r := records.Get().(*record)
	r.off, r.label = off, label
	return r
}

// recycle returns a frame's records to the pool once Decode is done with
// them. Nothing of a record outlives Decode — the Result holds strings and
// values, never a record's maps — unless an expression reads $env, which
// hands out the env map itself: then they are left to the collector.
func (d *Decoder) recycle(p *parsed) {
	if d.uses("$env") {
		return
	}
	for _, r := range p.records {
		clear(r.vars)
		clear(r.exact)
		clear(r.missing)
		*r = record{vars: r.vars, exact: r.exact, missing: r.missing}
		records.Put(r)
	}
}

// setNumber stores a numeric field with its exact text.
func (r *record) setNumber(name string, v any, text string) {
	r.vars[name] = v
	r.exact[name] = text
	delete(r.missing, name)
}

// setMissing marks a field as present without a value.
func (r *record) setMissing(name, why string) {
	r.vars[name] = nil
	r.missing[name] = why
	delete(r.exact, name)
}

// parsed is what an engine returns for a frame.
type parsed struct {
	vars    map[string]any // frame-level variables (header, units, doc)
	records []*record
}

// engine is one payload format.
type engine interface {
	parse(payload []byte) (*parsed, error)
}

type computed struct {
	name string
	prog *vm.Program
}

type stream struct {
	cfg         dsConfig
	name        string
	obsType     string
	unit        sta.Unit
	description *template
	sensor      *template
	input       *template
	property    *template
	sensusID    *template
	value       *vm.Program
	valueField  string // set when value is a bare field name
	phenTime    *vm.Program
	when        *vm.Program
	min, max    *float64
	rangeDrop   bool
	params      []computed
}

type alarmRule struct {
	name        string
	alarmType   string
	severity    string
	description *template
	raise       *vm.Program
	clear       *vm.Program
	threshold   *float64
	current     *vm.Program
	unit        string
	lat, lon    *vm.Program
	serial      *template
	model       *template
	firmware    *template
}

type timeSpec struct {
	value    *vm.Program
	nanos    *vm.Program
	layout   string
	zone     *time.Location
	epoch    time.Time
	unit     time.Duration
	fallback bool
}

// Decoder is one compiled decoder file. It is immutable and safe for
// concurrent use.
type Decoder struct {
	name        string
	file        string
	description string
	format      string
	engine      engine
	groups      map[string][]computed
	computed    []computed
	identity    *vm.Program
	time        timeSpec
	badSkip     bool
	thingName   *template
	thingDesc   *template
	thingProps  []namedTemplate
	feature     *template
	params      []computed
	streams     []*stream
	alarms      []*alarmRule
	ents        entityCache     // entities per device, when only the device shapes them
	reads       map[string]bool // every name the decoder's expressions read (see uses)
	nameVal     any             // name, boxed once for the envs
	examples    []exampleConfig
	exampleAt   []pos
	dir         string
	namePos     pos
}

type namedTemplate struct {
	name string
	t    *template
}

// uses reports whether an expression of the decoder may read the variable:
// Decode does not build the ones none reads.
func (d *Decoder) uses(name string) bool { return d.reads[name] || d.reads["$env"] }

// Name is the decoder's name.
func (d *Decoder) Name() string { return d.name }

// File is the file the decoder was loaded from.
func (d *Decoder) File() string { return d.file }

// Description is the decoder's description.
func (d *Decoder) Description() string { return d.description }

// Format is the payload format (text, nmea, json, binary).
func (d *Decoder) Format() string { return d.format }

func (d *Decoder) fail(off int, err error, format string, args ...any) *DecodeError {
	return &DecodeError{Decoder: d.name, Offset: off, Msg: fmt.Sprintf(format, args...), Err: err}
}

func frameVars(f *adapters.Frame) map[string]any {
	meta := make(map[string]any, len(f.Meta))
	for k, v := range f.Meta {
		meta[k] = v
	}
	return map[string]any{
		"adapter":    f.Adapter,
		"kind":       f.Kind,
		"source":     f.Source,
		"identity":   f.Identity,
		"customerId": f.CustomerID,
		"received":   f.Received.UTC(),
		"offset":     int(f.Offset),
		"meta":       meta,
	}
}

// Decode turns one frame into SensorThings records and alarm changes. It
// does no I/O and reads no clock.
func (d *Decoder) Decode(f *adapters.Frame, env Env) (*Result, error) {
	if f == nil {
		return nil, d.fail(-1, nil, "no frame")
	}
	if len(f.Payload) == 0 {
		return nil, d.fail(0, nil, "empty payload")
	}
	p, err := d.engine.parse(f.Payload)
	if err != nil {
		var pe *parseError
		if errors.As(err, &pe) {
			return nil, d.fail(pe.off, nil, "%s", pe.msg)
		}
		return nil, d.fail(-1, err, "%v", err)
	}
	defer d.recycle(p)
	res := &Result{}
	// The variables no expression of the decoder reads are not built.
	var frameVal any
	if d.uses("frame") {
		frameVal = frameVars(f)
	}
	newEnv := func(size int) map[string]any {
		e := make(map[string]any, len(p.vars)+size+8)
		e["decoder"] = d.name
		if frameVal != nil {
			e["frame"] = frameVal
		}
		maps.Copy(e, p.vars)
		return e
	}

	// Fields and computed values of each record.
	var recs []*record
	envs := []map[string]any{}
	for _, r := range p.records {
		if r.err != nil {
			if d.badSkip {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s: bad record skipped: %s", r.label, r.err.msg))
				continue
			}
			return nil, d.fail(r.err.off, nil, "%s: %s", r.label, r.err.msg)
		}
		// The record's own map becomes its env (the engine is done with
		// it): the frame-level variables join it where the record has no
		// field of that name, as a field always won.
		e := r.vars
		for k, v := range p.vars {
			if _, ok := e[k]; !ok {
				e[k] = v
			}
		}
		if _, ok := e["decoder"]; !ok {
			e["decoder"] = d.nameVal
		}
		if _, ok := e["frame"]; !ok && frameVal != nil {
			e["frame"] = frameVal
		}
		for _, c := range d.computedFor(r.group) {
			v, err := run(c.prog, e)
			var fe *FailError
			if errors.As(err, &fe) {
				// fail("…"): the decoder refuses this record.
				if d.badSkip {
					res.Skipped = append(res.Skipped, fmt.Sprintf("%s: bad record skipped: %s", r.label, fe.Msg))
					r.failed = true
					break
				}
				return nil, d.fail(-1, nil, "%s: %s", r.label, fe.Msg)
			}
			if err != nil {
				e[c.name] = nil
				r.missing[c.name] = "computed: " + err.Error()
				continue
			}
			if fv, ok := v.(float64); ok && (math.IsNaN(fv) || math.IsInf(fv, 0)) {
				e[c.name] = nil
				r.missing[c.name] = fmt.Sprintf("computed: %v", fv)
				continue
			}
			e[c.name] = v
			delete(r.missing, c.name)
			delete(r.exact, c.name)
		}
		if r.failed {
			continue
		}
		recs = append(recs, r)
		envs = append(envs, e)
	}

	// Identity and device. Without records, the frame-level variables
	// are what the identity and the templates see.
	var base map[string]any
	if len(envs) == 0 {
		base = newEnv(0)
	}
	idEnv := base
	if len(envs) > 0 {
		idEnv = envs[0]
	}
	idv, err := run(d.identity, idEnv)
	if err != nil {
		var fe *FailError
		if errors.As(err, &fe) {
			return nil, d.fail(-1, nil, "%s", fe.Msg)
		}
		return nil, d.fail(-1, nil, "identity: %v", err)
	}
	identity := strings.TrimSpace(display(idv))
	if identity == "" {
		return nil, d.fail(-1, nil, "no device identity (the frame has none and the identity expression gave none)")
	}
	dev := Device{ID: identity}
	if env.Lookup != nil {
		got, ok := env.Lookup(identity)
		if !ok {
			return nil, d.fail(-1, ErrUnknownDevice, "identity %q: %v", identity, ErrUnknownDevice)
		}
		dev = got
		if dev.ID == "" {
			dev.ID = identity
		}
	}
	if dev.CustomerID == "" {
		dev.CustomerID = f.CustomerID
	}
	if dev.CustomerID == "" {
		dev.CustomerID = env.DefaultCustomer
	}
	if dev.CustomerID == "" {
		return nil, d.fail(-1, nil, "device %q has no customerId (set it in the device registry, the adapter or the default customer)", dev.ID)
	}
	res.Device = dev
	var device map[string]any
	if d.uses("device") {
		device = map[string]any{
			"id": dev.ID, "customerId": dev.CustomerID, "name": dev.Name,
			"description": dev.Description, "properties": dev.Properties,
		}
	}
	setDev := func(e map[string]any) {
		e["identity"], e["deviceId"], e["customerId"] = identity, dev.ID, dev.CustomerID
		if device != nil {
			e["device"] = device
		}
	}
	if base != nil {
		setDev(base)
	}
	for _, e := range envs {
		setDev(e)
	}
	// Thing, datastream and feature templates see the frame, the device
	// and the fields of the first record (a serial number in the payload).
	tplEnv := base
	if len(envs) > 0 {
		tplEnv = envs[0]
	}

	// Thing, datastreams, feature of interest.
	ents, err := d.entitiesFor(tplEnv, dev, identity)
	if err != nil {
		return nil, err
	}
	res.Things, res.Datastreams = ents.things, ents.dss
	refs, feature := ents.refs, ents.feature

	// Observations and alarms, record by record.
	state := alarmState{in: env.Alarms}
	res.Observations = make([]sta.Observation, 0, len(recs)*len(d.streams))
	for i, r := range recs {
		e := envs[i]
		t, ok, why := d.recordTime(e, f)
		if !ok {
			res.Skipped = append(res.Skipped, fmt.Sprintf("%s: record left out: %s", r.label, why))
			continue
		}
		if d.uses("recordTime") {
			e["recordTime"] = t
		}
		common, perr := evalParams(d.params, e)
		if perr != nil {
			res.Skipped = append(res.Skipped, fmt.Sprintf("%s: parameters: %v", r.label, perr))
		}
		ts := rfc3339(t)
		for si, s := range d.streams {
			obs, ok, skip := d.observe(s, r, e, t, ts, common)
			if skip != "" {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s %s: %s", r.label, s.name, skip))
			}
			if ok {
				obs.Datastream = refs[si]
				obs.FeatureOfInterest = feature
				res.Observations = append(res.Observations, obs)
			}
		}
		for _, a := range d.alarms {
			al, skip := d.evalAlarm(a, r, e, t, dev, &state)
			if skip != "" {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s alarm %s: %s", r.label, a.name, skip))
			}
			if al != nil {
				res.Alarms = append(res.Alarms, *al)
			}
		}
	}
	if len(state.changes) > 0 {
		res.AlarmChanges = state.changes
	}
	return res, nil
}

// computedFor lists the computed values of a record group, then the decoder's.
func (d *Decoder) computedFor(group string) []computed {
	g := d.groups[group]
	if len(g) == 0 {
		return d.computed
	}
	out := make([]computed, 0, len(g)+len(d.computed))
	return append(append(out, g...), d.computed...)
}

func (d *Decoder) thing(env map[string]any, dev Device) (sta.Thing, error) {
	th := sta.Thing{CustomerID: dev.CustomerID, SensusID: dev.ID + "@" + dev.CustomerID}
	var err error
	if th.Name, err = d.thingName.eval(env); err != nil {
		return th, err
	}
	if th.Name == "" {
		th.Name = dev.Name
	}
	if th.Name == "" {
		th.Name = dev.ID
	}
	if th.Description, err = d.thingDesc.eval(env); err != nil {
		return th, err
	}
	if th.Description == "" {
		th.Description = dev.Description
	}
	if th.Description == "" {
		th.Description = d.description
	}
	if th.Description == "" {
		th.Description = d.name
	}
	props := map[string]any{}
	for _, p := range d.thingProps {
		v, err := p.t.eval(env)
		if err != nil {
			return th, fmt.Errorf("properties.%s: %w", p.name, err)
		}
		if v != "" {
			props[p.name] = v
		}
	}
	maps.Copy(props, dev.Properties) // the registry knows best
	if len(props) > 0 {
		th.Properties = props
	}
	return th, nil
}

// datastream renders one datastream; e is a scratch env whose name,
// sensor, input and observedProperty keys it sets.
func (d *Decoder) datastream(s *stream, e map[string]any, thing sta.Thing) (sta.Datastream, error) {
	e["name"] = s.name
	delete(e, "sensor")
	delete(e, "input")
	delete(e, "observedProperty")
	ds := sta.Datastream{
		Name: s.name, ObservationType: s.obsType, UnitOfMeasurement: s.unit,
		Thing: sta.Ref{Name: thing.Name, SensusID: thing.SensusID},
	}
	var err error
	if ds.Description, err = s.description.eval(e); err != nil {
		return ds, err
	}
	if ds.Description == "" {
		ds.Description = s.name
	}
	sensor, err := s.sensor.eval(e)
	if err != nil {
		return ds, err
	}
	e["sensor"] = sensor
	input, err := s.input.eval(e)
	if err != nil {
		return ds, err
	}
	e["input"] = input
	prop, err := s.property.eval(e)
	if err != nil {
		return ds, err
	}
	e["observedProperty"] = prop
	if ds.SensusID, err = s.sensusID.eval(e); err != nil {
		return ds, err
	}
	ds.Sensor = sta.Ref{Name: sensor}
	ds.ObservedProperty = sta.Ref{Name: prop}
	return ds, nil
}

// toTime converts an expression value to a time with the decoder's layout,
// zone, epoch and unit.
func (ts *timeSpec) toTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x.UTC(), nil
	case nil:
		return time.Time{}, fmt.Errorf("no time value")
	case string:
		s := strings.TrimSpace(x)
		if ts.layout != "" {
			t, err := time.ParseInLocation(ts.layout, s, ts.zone)
			if err != nil {
				return time.Time{}, fmt.Errorf("time %q does not match layout %q", s, ts.layout)
			}
			return t.UTC(), nil
		}
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC(), nil
		}
		if t, err := time.ParseInLocation("2006-01-02 15:04:05", s, ts.zone); err == nil {
			return t.UTC(), nil
		}
		if n, ok := toFloat(s); ok {
			return ts.fromNumber(n), nil
		}
		return time.Time{}, fmt.Errorf("time %q is not RFC 3339 or \"2006-01-02 15:04:05\" (set time.layout)", s)
	}
	if n, ok := toFloat(v); ok {
		if math.IsNaN(n) || math.IsInf(n, 0) || math.Abs(n) > 1e15 {
			return time.Time{}, fmt.Errorf("time %v out of range", n)
		}
		return ts.fromNumber(n), nil
	}
	return time.Time{}, fmt.Errorf("%v (%T) is not a time", v, v)
}

func (ts *timeSpec) fromNumber(n float64) time.Time {
	whole := math.Floor(n)
	d := time.Duration(whole)*ts.unit + time.Duration(math.Round((n-whole)*float64(ts.unit)))
	return ts.epoch.Add(d).UTC()
}

// recordTime is the record's time: the time expression, or the frame's
// received time when the decoder has none (or falls back to it).
func (d *Decoder) recordTime(e map[string]any, f *adapters.Frame) (time.Time, bool, string) {
	ts := &d.time
	if ts.value == nil {
		if f.Received.IsZero() {
			return time.Time{}, false, "the payload has no time and the frame no received time"
		}
		return f.Received.UTC(), true, ""
	}
	v, err := run(ts.value, e)
	var t time.Time
	if err == nil {
		t, err = ts.toTime(v)
	}
	if err == nil && ts.nanos != nil {
		var nv any
		if nv, err = run(ts.nanos, e); err == nil {
			if n, ok := toFloat(nv); ok {
				t = t.Add(time.Duration(n))
			} else if nv != nil {
				err = fmt.Errorf("nanos %v is not a number", nv)
			}
		}
	}
	if err != nil {
		if ts.fallback && !f.Received.IsZero() {
			return f.Received.UTC(), true, ""
		}
		return time.Time{}, false, "time: " + err.Error()
	}
	return t, true, ""
}

func evalParams(ps []computed, e map[string]any) (map[string]any, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	out := map[string]any{}
	for _, p := range ps {
		v, err := run(p.prog, e)
		if err != nil {
			return out, fmt.Errorf("%s: %w", p.name, err)
		}
		if v == nil {
			continue
		}
		if t, ok := v.(time.Time); ok {
			v = rfc3339(t)
		}
		out[p.name] = v
	}
	return out, nil
}

// observe makes the observation of one datastream for one record. No
// observation (false) with an empty reason means the record has nothing for this
// datastream (a GGA has no speed); a reason says why a value was left out.
func (d *Decoder) observe(s *stream, r *record, e map[string]any, t time.Time, ts string, common map[string]any) (sta.Observation, bool, string) {
	var none sta.Observation
	if s.when != nil {
		v, err := run(s.when, e)
		if err != nil {
			return none, false, "when: " + err.Error()
		}
		if b, _ := v.(bool); !b {
			return none, false, ""
		}
	}
	var v any
	exact := ""
	if s.valueField != "" {
		var present bool
		v, present = e[s.valueField]
		if why, ok := r.missing[s.valueField]; ok {
			return none, false, why
		}
		if !present || v == nil {
			return none, false, ""
		}
		exact = r.exact[s.valueField]
	} else {
		var err error
		if v, err = run(s.value, e); err != nil {
			return none, false, "value: " + err.Error()
		}
		if v == nil {
			return none, false, ""
		}
	}
	result, num, isNum, err := encodeResult(s.obsType, v, exact)
	if err != nil {
		return none, false, err.Error()
	}
	obs := sta.Observation{PhenomenonTime: ts, ResultTime: ts, Result: result}
	if s.phenTime != nil {
		pv, err := run(s.phenTime, e)
		if err == nil && pv != nil {
			var pt time.Time
			if pt, err = d.time.toTime(pv); err == nil {
				obs.PhenomenonTime = rfc3339(pt)
			}
		}
		if err != nil {
			return none, false, "phenomenonTime: " + err.Error()
		}
	}
	params := maps.Clone(common)
	if isNum && (s.min != nil || s.max != nil) {
		flag := ""
		if s.min != nil && num < *s.min {
			flag = "below_min"
		} else if s.max != nil && num > *s.max {
			flag = "above_max"
		}
		if flag != "" {
			if s.rangeDrop {
				return none, false, fmt.Sprintf("%s outside range %s", string(result), rangeText(s.min, s.max))
			}
			if params == nil {
				params = map[string]any{}
			}
			params["rangeCheck"] = flag
		}
	}
	if len(s.params) > 0 {
		p, err := evalParams(s.params, e)
		if err != nil {
			return none, false, "parameters: " + err.Error()
		}
		if params == nil && len(p) > 0 {
			params = map[string]any{}
		}
		maps.Copy(params, p)
	}
	if len(params) > 0 {
		obs.Parameters = params
	}
	return obs, true, ""
}

func rangeText(min, max *float64) string {
	lo, hi := "-inf", "+inf"
	if min != nil {
		lo = formatFloat(*min, 64)
	}
	if max != nil {
		hi = formatFloat(*max, 64)
	}
	return "[" + lo + ", " + hi + "]"
}

// encodeResult renders a value as the JSON result of an observation type.
// num is the numeric value for range checks (isNum false for non-numbers).
func encodeResult(obsType string, v any, exact string) (json.RawMessage, float64, bool, error) {
	switch obsType {
	case sta.Measurement, sta.Count:
		text := exact
		if text == "" {
			var err error
			if text, err = numberText(v); err != nil {
				return nil, 0, false, err
			}
		}
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, 0, false, fmt.Errorf("%q is not a number", text)
		}
		if obsType == sta.Count {
			if f != math.Trunc(f) || math.Abs(f) > 1<<53 {
				return nil, 0, false, fmt.Errorf("%s is not an integer count", text)
			}
			if strings.ContainsAny(text, ".eE") {
				text = strconv.FormatInt(int64(f), 10)
			}
		}
		return json.RawMessage(text), f, true, nil
	case sta.Truth:
		switch x := v.(type) {
		case bool:
			return json.RawMessage(strconv.FormatBool(x)), 0, false, nil
		case string:
			switch strings.ToLower(strings.TrimSpace(x)) {
			case "true", "1":
				return json.RawMessage("true"), 0, false, nil
			case "false", "0":
				return json.RawMessage("false"), 0, false, nil
			}
			return nil, 0, false, fmt.Errorf("%q is not a truth value", x)
		}
		if f, ok := toFloat(v); ok {
			return json.RawMessage(strconv.FormatBool(f != 0)), 0, false, nil
		}
		return nil, 0, false, fmt.Errorf("%v is not a truth value", v)
	case sta.Category:
		s := display(v)
		if exact != "" {
			s = exact
		}
		b, _ := json.Marshal(s)
		return b, 0, false, nil
	default: // OM_Observation: any JSON
		if exact != "" {
			return json.RawMessage(exact), 0, false, nil
		}
		switch x := v.(type) {
		case time.Time:
			v = rfc3339(x)
		case float64:
			t, err := numberText(x)
			if err != nil {
				return nil, 0, false, err
			}
			return json.RawMessage(t), 0, false, nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, 0, false, fmt.Errorf("result: %v", err)
		}
		return b, 0, false, nil
	}
}

// alarmState tracks alarm keys through one frame.
type alarmState struct {
	in      map[string]bool
	changes map[string]bool
}

func (s *alarmState) active(key string) bool {
	if v, ok := s.changes[key]; ok {
		return v
	}
	return s.in[key]
}

func (s *alarmState) set(key string, v bool) {
	if s.changes == nil {
		s.changes = map[string]bool{}
	}
	s.changes[key] = v
}

// AlarmKey is the key of an alarm rule's state for a device in Env.Alarms
// and Result.AlarmChanges: "{rule}@{deviceId}". It leaves the decoder out
// on purpose: a device moved to another decoder with the same rule (TOA5 to
// TOB1) keeps its alarm state.
func AlarmKey(rule, deviceID string) string {
	return rule + "@" + deviceID
}

func evalBool(p *vm.Program, e map[string]any) (bool, error) {
	v, err := run(p, e)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("condition gave %v (%T), not true/false", v, v)
	}
	return b, nil
}

// evalAlarm applies the raise/clear hysteresis of one rule to one record:
// ACTIVE once when raise becomes true, CLEARED once when clear becomes
// true. A condition that cannot be evaluated (a missing value) changes
// nothing.
func (d *Decoder) evalAlarm(a *alarmRule, r *record, e map[string]any, t time.Time, dev Device, st *alarmState) (*sta.Alarm, string) {
	key := AlarmKey(a.name, dev.ID)
	active := st.active(key)
	var fire bool
	var err error
	if !active {
		fire, err = evalBool(a.raise, e)
	} else if a.clear != nil {
		fire, err = evalBool(a.clear, e)
	} else {
		var raised bool
		raised, err = evalBool(a.raise, e)
		fire = !raised
	}
	if err != nil {
		return nil, "condition not evaluated: " + err.Error()
	}
	if !fire {
		return nil, ""
	}
	st.set(key, !active)
	at := rfc3339(t)
	al := &sta.Alarm{
		AlarmID:        a.name + "@" + dev.ID + "@" + at,
		AlarmType:      a.alarmType,
		Severity:       a.severity,
		Status:         sta.AlarmActive,
		TriggeredAt:    at,
		ThresholdValue: a.threshold,
		Unit:           a.unit,
	}
	if active {
		al.Status = sta.AlarmCleared
		al.AlarmID += "/cleared"
	}
	var skip []string
	if al.Description, err = a.description.eval(e); err != nil {
		skip = append(skip, err.Error())
	}
	if a.current != nil {
		if v, err := run(a.current, e); err != nil {
			skip = append(skip, "currentValue: "+err.Error())
		} else if f, ok := toFloat(v); ok && !math.IsNaN(f) && !math.IsInf(f, 0) {
			al.CurrentValue = &f
		}
	}
	if a.lat != nil && a.lon != nil {
		lv, err1 := run(a.lat, e)
		ov, err2 := run(a.lon, e)
		lat, ok1 := toFloat(lv)
		lon, ok2 := toFloat(ov)
		if err1 == nil && err2 == nil && ok1 && ok2 {
			al.Location = &sta.Location{Latitude: lat, Longitude: lon}
		}
	}
	if a.serial != nil || a.model != nil || a.firmware != nil {
		di := &sta.DeviceInfo{}
		di.SerialNumber, _ = a.serial.eval(e)
		di.Model, _ = a.model.eval(e)
		di.FirmwareVersion, _ = a.firmware.eval(e)
		if *di != (sta.DeviceInfo{}) {
			al.DeviceInfo = di
		}
	}
	if len(skip) > 0 {
		sort.Strings(skip)
		return al, strings.Join(skip, "; ")
	}
	return al, ""
}
