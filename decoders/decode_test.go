package decoders_test

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
)

func mustLoad(t testing.TB, src string) *decoders.Decoder {
	t.Helper()
	d, err := decoders.LoadBytes("t.yaml", []byte(src))
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	return d
}

func frame(payload string) *adapters.Frame {
	return &adapters.Frame{Adapter: "a", Source: "s", Payload: []byte(payload), Identity: "dev1", CustomerID: "c1",
		Received: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Meta: map[string]string{"momsn": "42"}}
}

const levelDecoder = `name: level
format: text
text: {columns: [t, level, mode]}
time: {value: t}
thing:
  name: "Pump {deviceId}"
  properties: {model: FST-2000, source: "{frame.source}"}
parameters:
  momsn: frame.meta.momsn
datastreams:
  - name: level
    unit: {name: Metre, symbol: m}
    sensor: "Q4000_AI0_0-1024"
    input: analogInput
  - {name: level_count, value: level, observationType: OM_CountObservation}
  - {name: wet, value: level > 0, observationType: OM_TruthObservation}
  - {name: mode, observationType: OM_CategoryObservation}
  - {name: raw, value: '{"l": level, "m": mode}', observationType: OM_Observation}
alarms:
  - name: low
    alarmType: LOW_LEVEL
    severity: HIGH
    description: "level {level} m"
    raise: level < 6
    clear: level >= 8
    thresholdValue: 6
    currentValue: level
    unit: m
  - name: high
    alarmType: HIGH_LEVEL
    severity: LOW
    raise: level > 100
`

func TestDecodeRecordsAndDevice(t *testing.T) {
	d := mustLoad(t, levelDecoder)
	res, err := d.Decode(frame("2024-01-01T10:00:00Z,3.0,auto\n"), decoders.Env{})
	if err != nil {
		t.Fatal(err)
	}
	th := res.Things[0]
	if th.Name != "Pump dev1" || th.SensusID != "dev1@c1" || th.CustomerID != "c1" || th.Properties["source"] != "s" || th.Properties["model"] != "FST-2000" {
		t.Errorf("thing %+v", th)
	}
	ds := res.Datastreams[0]
	if ds.SensusID != "Q4000_AI0_0-1024@analogInput@dev1@c1" || *ds.UnitOfMeasurement.Symbol != "m" || ds.UnitOfMeasurement.Definition != nil || ds.Thing.SensusID != "dev1@c1" {
		t.Errorf("datastream %s", jsonOf(t, ds))
	}
	if u := res.Datastreams[2].UnitOfMeasurement; u.Name != nil || u.Symbol != nil {
		t.Errorf("truth unit %+v", u)
	}
	want := map[string]string{"level": "3.0", "level_count": "3", "wet": "true", "mode": `"auto"`, "raw": `{"l":3,"m":"auto"}`}
	if got := results(res.Observations); jsonOf(t, got) != jsonOf(t, want) {
		t.Errorf("results %v, want %v", got, want)
	}
	o := res.Observations[0]
	if o.PhenomenonTime != "2024-01-01T10:00:00Z" || o.ResultTime != o.PhenomenonTime || o.Parameters["momsn"] != "42" {
		t.Errorf("observation %s", jsonOf(t, o))
	}
	if len(res.Alarms) != 1 || res.Alarms[0].AlarmID != "low@dev1@2024-01-01T10:00:00Z" || res.Alarms[0].Description != "level 3 m" ||
		*res.Alarms[0].CurrentValue != 3 || *res.Alarms[0].ThresholdValue != 6 || res.Alarms[0].Severity != "HIGH" {
		t.Errorf("alarms %s", jsonOf(t, res.Alarms))
	}
	if jsonOf(t, res.AlarmChanges) != `{"low@dev1":true}` {
		t.Errorf("changes %v", res.AlarmChanges)
	}
}

func TestDecodeRegistry(t *testing.T) {
	d := mustLoad(t, levelDecoder)
	f := frame("2024-01-01T10:00:00Z,9,auto\n")
	reg := func(id string) (decoders.Device, bool) {
		if id != "dev1" {
			return decoders.Device{}, false
		}
		return decoders.Device{ID: "FST300234030000001", CustomerID: "047", Properties: map[string]any{"model": "FST-3000"}}, true
	}
	res, err := d.Decode(f, decoders.Env{Lookup: reg})
	if err != nil {
		t.Fatal(err)
	}
	if res.Device.ID != "FST300234030000001" || res.Things[0].SensusID != "FST300234030000001@047" || res.Things[0].Properties["model"] != "FST-3000" {
		t.Errorf("device %+v thing %+v", res.Device, res.Things[0])
	}
	f.Identity = "stranger"
	_, err = d.Decode(f, decoders.Env{Lookup: reg})
	var de *decoders.DecodeError
	if !errors.Is(err, decoders.ErrUnknownDevice) || !errors.As(err, &de) || de.Offset != -1 || !strings.Contains(err.Error(), `"stranger"`) {
		t.Errorf("unknown device: %v", err)
	}
	// No customer anywhere.
	f = frame("2024-01-01T10:00:00Z,9,auto\n")
	f.CustomerID = ""
	if _, err := d.Decode(f, decoders.Env{}); err == nil || !strings.Contains(err.Error(), "no customerId") {
		t.Errorf("no customer: %v", err)
	}
	res, err = d.Decode(f, decoders.Env{DefaultCustomer: "dflt"})
	if err != nil || res.Device.CustomerID != "dflt" {
		t.Errorf("default customer: %v %+v", err, res)
	}
	f.Identity = ""
	if _, err := d.Decode(f, decoders.Env{DefaultCustomer: "dflt"}); err == nil || !strings.Contains(err.Error(), "no device identity") {
		t.Errorf("no identity: %v", err)
	}
}

// TestAlarmHysteresis carries the state from frame to frame as the daemon does.
func TestAlarmHysteresis(t *testing.T) {
	d := mustLoad(t, levelDecoder)
	state := map[string]bool{}
	var seq []string
	for i, lv := range []string{"10", "5", "4", "7", "8", "7", "5", "NAN", "9", "200", "150", "50"} {
		ts := time.Date(2024, 1, 1, i, 0, 0, 0, time.UTC).Format(time.RFC3339)
		res, err := d.Decode(frame(ts+","+lv+",auto\n"), decoders.Env{Alarms: state})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range res.Alarms {
			seq = append(seq, lv+":"+a.AlarmType+"/"+a.Status)
		}
		for k, v := range res.AlarmChanges {
			state[k] = v
		}
	}
	want := "5:LOW_LEVEL/ACTIVE 8:LOW_LEVEL/CLEARED 5:LOW_LEVEL/ACTIVE 9:LOW_LEVEL/CLEARED 200:HIGH_LEVEL/ACTIVE 50:HIGH_LEVEL/CLEARED"
	if got := strings.Join(seq, " "); got != want {
		t.Errorf("alarm sequence\n got %s\nwant %s", got, want)
	}
	if state["low@dev1"] || state["high@dev1"] {
		t.Errorf("final state %v", state)
	}
}

func TestDecodeSkipsAndTypes(t *testing.T) {
	d := mustLoad(t, levelDecoder)
	res, err := d.Decode(frame("2024-01-01T10:00:00Z,2.5,\nnot-a-time,1,x\n"), decoders.Env{})
	if err != nil {
		t.Fatal(err)
	}
	got := results(res.Observations)
	if got["level"] != "2.5" || got["wet"] != "true" || got["level_count"] != "" {
		t.Errorf("results %v", got)
	}
	for _, w := range []string{
		"line 1 level_count: 2.5 is not an integer count",
		"line 1 mode: empty",
		`line 2: record left out: time: time "not-a-time" is not RFC 3339`,
	} {
		if !strings.Contains(strings.Join(res.Skipped, "\n"), w) {
			t.Errorf("skipped %q lacks %q", res.Skipped, w)
		}
	}
}

func TestTimeSettings(t *testing.T) {
	base := "name: t\nformat: text\ntext: {columns: [a, v]}\ndatastreams: [{name: v}]\n"
	cases := []struct{ time, in, want string }{
		{"time: {value: a, layout: '2006-01-02 15:04:05', zone: Etc/GMT+6}", "2014-04-11 00:00:00,1", "2014-04-11T06:00:00Z"},
		{"time: {value: a}", "1700000000,1", "2023-11-14T22:13:20Z"},
		{"time: {value: a, unit: ms, epoch: '2000-01-01T00:00:00Z'}", "1500,1", "2000-01-01T00:00:01.5Z"},
		{"time: {value: a, fallback: received}", ",1", "2024-01-02T03:04:05Z"},
		{"", "x,1", "2024-01-02T03:04:05Z"},
		{"time: {value: 'epoch(\"1990-01-01\", 0, 5e8)'}", "x,1", "1990-01-01T00:00:00.5Z"},
		{"time: {value: 'parseTime(a, \"02.01.2006\", \"Europe/Berlin\")'}", "01.07.2024,1", "2024-06-30T22:00:00Z"},
	}
	for _, c := range cases {
		d := mustLoad(t, base+c.time+"\n")
		res, err := d.Decode(frame(c.in), decoders.Env{})
		if err != nil {
			t.Fatalf("%s: %v", c.time, err)
		}
		if len(res.Observations) != 1 || res.Observations[0].PhenomenonTime != c.want {
			t.Errorf("%s on %q: %s (skipped %q), want %s", c.time, c.in, jsonOf(t, res.Observations), res.Skipped, c.want)
		}
	}
}

func TestRangeDrop(t *testing.T) {
	d := mustLoad(t, `name: r
format: text
text: {columns: [v]}
datastreams:
  - {name: v, range: {min: 0, max: 10, action: drop}}
  - {name: w, value: v, range: {max: 10}}
`)
	res, err := d.Decode(frame("11\n5\n"), decoders.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Observations) != 3 || res.Skipped[0] != "line 1 v: 11 outside range [0, 10]" {
		t.Fatalf("obs %s skipped %q", jsonOf(t, res.Observations), res.Skipped)
	}
	if res.Observations[0].Parameters["rangeCheck"] != "above_max" {
		t.Errorf("flagged %s", jsonOf(t, res.Observations[0]))
	}
}

// TestDecodeConcurrentAndDeterministic runs one decoder from many
// goroutines (under -race) and checks every result is the same.
func TestDecodeConcurrentAndDeterministic(t *testing.T) {
	d := mustLoad(t, levelDecoder)
	payload := "2024-01-01T10:00:00Z,3.0,auto\n2024-01-01T11:00:00Z,9,man\n"
	first, err := d.Decode(frame(payload), decoders.Env{})
	if err != nil {
		t.Fatal(err)
	}
	want := jsonOf(t, first)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				res, err := d.Decode(frame(payload), decoders.Env{Alarms: map[string]bool{}})
				if err != nil {
					errs <- err.Error()
					return
				}
				b, _ := json.Marshal(res)
				if string(b) != want {
					errs <- "result differs: " + string(b)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestTextEngineCases(t *testing.T) {
	cases := []struct {
		name, text, in string
		want           map[string]string
		wantErr        string
		skipped        string
	}{
		{name: "rfc4180 quoting", text: "{columns: [a, b, c]}", in: "\"x,1\",\"say \"\"hi\"\"\",\"line1\nline2\"\r\n",
			want: map[string]string{"a": `"x,1"`, "b": `"say \"hi\""`, "c": `"line1\nline2"`}},
		{name: "bare CR lines", text: "{columns: [a]}", in: "1\r2\r\n3\n", want: map[string]string{"a": "1,2,3"}},
		{name: "tab separator, spaces trimmed", text: "{columns: [a, b], separator: tab, trim_space: true}", in: " 1 \t x \n",
			want: map[string]string{"a": "1", "b": `"x"`}},
		{name: "no quoting", text: "{columns: [a, b], quoting: none, separator: ';'}", in: "\"1;2\n",
			want: map[string]string{"a": `"\"1"`, "b": "2"}},
		{name: "skip lines and comments", text: "{columns: [a], skip_lines: 1, comment: '#'}", in: "junk,,\n#c\n7\n",
			want: map[string]string{"a": "7"}},
		{name: "header names the columns", text: "{header: {lines: 2, names: 1, units: 2}}", in: "a,b\nV,m\n1,2\n",
			want: map[string]string{"a": "1", "b": "2"}},
		{name: "header match absent uses columns", text: "{header: {match: '^H', lines: 1, names: 1}, columns: [a, b]}", in: "5,6\n",
			want: map[string]string{"a": "5", "b": "6"}},
		{name: "header match present", text: "{header: {match: '^H', lines: 1, names: 1}, columns: [a, b]}", in: "H,a\n5,6\n",
			want: map[string]string{"a": "6"}},
		{name: "text column stays text", text: "{columns: [a, b], text_columns: [a]}", in: "007,1.50\n",
			want: map[string]string{"a": `"007"`, "b": "1.50"}},
		{name: "non-JSON decimals normalised", text: "{columns: [a, b]}", in: "+1.5,.5\n",
			want: map[string]string{"a": "1.5", "b": "0.5"}},
		{name: "missing markers", text: "{columns: [a, b], missing: ['-999']}", in: "-999,NAN\n",
			want: map[string]string{"b": `"NAN"`}, skipped: `line 1 a: missing value "-999"`},
		{name: "unterminated quote", text: "{columns: [a]}", in: "\"abc\n", wantErr: "extraneous or missing \" in quoted-field"},
		{name: "bad record fails the frame", text: "{columns: [a, b]}", in: "1,2\n3\n", wantErr: "at byte 4: line 2: 1 fields, want 2"},
		{name: "header cut short", text: "{header: {lines: 3, names: 1}}", in: "a\nb\n", wantErr: "inside the 3-line header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := "name: t\nformat: text\ntext: " + c.text + "\ndatastreams:\n"
			for _, n := range []string{"a", "b", "c"} {
				if regexp.MustCompile(`[\[ ]`+n+`[,\]]`).MatchString(c.text) || !strings.Contains(c.text, "columns") {
					src += "  - {name: " + n + ", observationType: OM_Observation}\n"
				} else {
					src += "  - {name: " + n + ", value: '$env[\"" + n + "\"]', observationType: OM_Observation}\n"
				}
			}
			d, err := decoders.LoadBytes("t.yaml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			res, err := d.Decode(frame(c.in), decoders.Env{})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, o := range res.Observations {
				got[o.Datastream.Name] = append(got[o.Datastream.Name], string(o.Result))
			}
			if len(got) != len(c.want) {
				t.Errorf("got %v want %v", got, c.want)
			}
			for k, v := range c.want {
				if g := strings.Join(got[k], ","); g != v {
					t.Errorf("%s = %s want %s", k, g, v)
				}
			}
			if c.skipped != "" && !strings.Contains(strings.Join(res.Skipped, "\n"), c.skipped) {
				t.Errorf("skipped %q lacks %q", res.Skipped, c.skipped)
			}
		})
	}
}

func TestBadRecordsSkip(t *testing.T) {
	d := mustLoad(t, "name: t\nformat: text\nbad_records: skip\ntext: {columns: [a, b]}\ndatastreams: [{name: a}]\n")
	res, err := d.Decode(frame("1,2\n3\n4,5\n"), decoders.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if got := results(res.Observations); len(res.Observations) != 2 || got["a"] != "4" {
		t.Errorf("obs %s", jsonOf(t, res.Observations))
	}
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "line 2: bad record skipped: 1 fields, want 2") {
		t.Errorf("skipped %q", res.Skipped)
	}
}

func TestHelpers(t *testing.T) {
	d := mustLoad(t, `name: h
format: text
text: {columns: [v]}
computed:
  - {name: r6, value: 'round(43.76518666666667, 6)'}
  - {name: r0, value: round(2.5)}
  - {name: c, value: 'coalesce(nil, "", "x")'}
  - {name: cl, value: 'cell([[1, 2]], 0, 1)'}
  - {name: clx, value: 'cell([[1, 2]], 5, 1) ?? "none"'}
  - {name: hw, value: 'hemi(1.5, "W")'}
  - {name: n, value: 'num(" 12.5 ")'}
  - {name: b, value: 'bit(5, 2)'}
  - {name: clock, value: 'nmeaClock("235959.5", frame.received)'}
  - {name: date, value: 'nmeaDate("230394", "123519")'}
  - {name: ux, value: 'unix(1, 5e8)'}
  - {name: bad, value: 'hemi(1, "Q")'}
datastreams:
  - {name: out, value: '[r6, r0, c, cl, clx, hw, n, b, clock, date, ux]', observationType: OM_Observation}
  - {name: bad}
`)
	f := frame("1\n")
	f.Received = time.Date(2024, 1, 2, 0, 0, 10, 0, time.UTC) // just after midnight: 23:59:59.5 is yesterday
	res, err := d.Decode(f, decoders.Env{})
	if err != nil {
		t.Fatal(err)
	}
	want := `[43.765187,3,"x",2,"none",-1.5,12.5,true,"2024-01-01T23:59:59.5Z","1994-03-23T12:35:19Z","1970-01-01T00:00:01.5Z"]`
	if len(res.Observations) != 1 || string(res.Observations[0].Result) != want {
		t.Errorf("got %s\nwant %s", jsonOf(t, res.Observations), want)
	}
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], `hemi: "Q" is not N, S, E or W`) {
		t.Errorf("skipped %q", res.Skipped)
	}
	// now() is not available: decoders are pure.
	if _, err := decoders.LoadBytes("t.yaml", []byte("name: t\nformat: text\ntext: {columns: [v]}\ntime: {value: now()}\n")); err == nil {
		t.Error("now() compiled")
	}
}

func TestEmptyInputs(t *testing.T) {
	d := mustLoad(t, "name: t\nformat: text\ntext: {columns: [], header: {match: '^H', lines: 1, names: 1}}\ndatastreams: [{name: a, value: '$env.a'}]\n")
	if _, err := d.Decode(frame("1,2\n"), decoders.Env{}); err == nil || !strings.Contains(err.Error(), "no column names") {
		t.Errorf("no names: %v", err)
	}
	if _, err := d.Decode(frame(""), decoders.Env{}); err == nil || !strings.Contains(err.Error(), "at byte 0: empty payload") {
		t.Errorf("empty: %v", err)
	}
	res, err := d.Decode(frame("H,a\n"), decoders.Env{})
	if err != nil || len(res.Observations) != 0 || len(res.Datastreams) != 1 {
		t.Errorf("header only: %v %+v", err, res)
	}
}
