package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/devices"
	"github.com/vigd/vigd/forwarder"
	"github.com/vigd/vigd/forwarder/deadletter"
	"github.com/vigd/vigd/forwarder/queue"
)

// A CSV decoder with one datastream and a hysteresis alarm rule.
const decoderYAML = `
name: level
format: text
text:
  separator: ","
  columns: [ts, level]
  text_columns: [ts]
identity: frame.identity
time:
  value: ts
  layout: "2006-01-02T15:04:05Z07:00"
thing:
  description: Level sensor
datastreams:
  - name: level
    sensor: LS
    input: level
    observedProperty: Water level
    unit: {name: Metre, symbol: m, definition: "http://qudt.org/vocab/unit/M"}
alarms:
  - name: high
    alarmType: HIGH_LEVEL
    severity: HIGH
    raise: level > 5
    clear: level < 4
    currentValue: level
`

type fixture struct {
	p            *Pipeline
	data, alarms *queue.Memory
	state        *forwarder.State
	dl           *deadletter.Store
	dir          string
}

func newFixture(t *testing.T, dir string, unknown string) *fixture {
	t.Helper()
	set := loadDecoder(t, decoderYAML)
	reg, err := devices.Parse("devices.yaml", []byte("devices:\n  - identity: s1\n    device_id: LVL-1\n    customer_id: \"047\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := forwarder.OpenState(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dl, err := deadletter.Open(filepath.Join(dir, "dl"), deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{data: queue.NewMemory(queue.Options{}), alarms: queue.NewMemory(queue.Options{}), state: st, dl: dl, dir: dir}
	f.p, err = New(Options{
		Data: f.data, Alarms: f.alarms, State: st, DeadLetters: dl,
		RawFrames: "undecoded", DeviceType: "vigd", UnknownDevices: unknown,
		Log: logrus.NewEntry(logrus.New()),
	}, set, reg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func loadDecoder(t *testing.T, y string) *decoders.Set {
	t.Helper()
	d := t.TempDir()
	p := filepath.Join(d, "level.yaml")
	if err := writeFile(p, y); err != nil {
		t.Fatal(err)
	}
	set, err := decoders.LoadFiles(p)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func frame(identity, payload string) *adapters.Frame {
	return &adapters.Frame{Adapter: "in", Kind: "tcp", Source: "10.0.0.9:1234", Offset: 42, Identity: identity,
		Payload: []byte(payload), Received: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Meta: map[string]string{"remote_addr": "10.0.0.9"}}
}

func readAll(t *testing.T, q queue.Queue) []queue.Record {
	t.Helper()
	es, err := q.Read(q.Cursor(), 1000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]queue.Record, len(es))
	for i, e := range es {
		out[i] = e.Rec
	}
	return out
}

func TestEmitQueuesObservationsAndEntities(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	sink := f.p.For("in", "tcp", "level", "047")
	ctx := context.Background()
	for _, line := range []string{"2026-01-01T00:00:00Z,3.5", "2026-01-01T00:10:00Z,3.6"} {
		if err := sink.Emit(ctx, frame("s1", line)); err != nil {
			t.Fatalf("emit %q: %v", line, err)
		}
	}
	recs := readAll(t, f.data)
	if len(recs) != 2 {
		t.Fatalf("want 2 observation records, got %d", len(recs))
	}
	for i, want := range []string{`"result":3.5`, `"result":3.6`} {
		r := recs[i]
		if r.Kind != queue.Observation || r.DeviceID != "LVL-1" || r.CustomerID != "047" || r.Ref != "LS@level@LVL-1@047" {
			t.Fatalf("record %d: %+v", i, r)
		}
		if !strings.Contains(string(r.Body), want) || !strings.Contains(string(r.Body), `"sensusID":"LS@level@LVL-1@047"`) {
			t.Fatalf("record %d body: %s", i, r.Body)
		}
	}
	if known, unsent := f.state.EntityCounts(forwarder.Thing); known != 1 || unsent != 1 {
		t.Fatalf("things known %d unsent %d", known, unsent)
	}
	if known, _ := f.state.EntityCounts(forwarder.Datastream); known != 1 {
		t.Fatalf("datastreams known %d", known)
	}
	if n := len(readAll(t, f.alarms)); n != 0 {
		t.Fatalf("no alarm expected, got %d", n)
	}
}

// Raise once, nothing while high, clear once; the state survives a
// restart of the pipeline (a new process).
func TestAlarmsOncePerChangeAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir, "accept")
	sink := f.p.For("in", "tcp", "level", "047")
	ctx := context.Background()
	for _, line := range []string{"2026-01-01T00:00:00Z,3", "2026-01-01T00:10:00Z,6", "2026-01-01T00:20:00Z,7"} {
		if err := sink.Emit(ctx, frame("s1", line)); err != nil {
			t.Fatal(err)
		}
	}
	al := readAll(t, f.alarms)
	if len(al) != 1 || !strings.Contains(string(al[0].Body), `"status":"ACTIVE"`) || !strings.Contains(string(al[0].Body), `"triggeredAt":"2026-01-01T00:10:00Z"`) {
		t.Fatalf("want one ACTIVE at 00:10, got %d: %v", len(al), al)
	}
	f.state.Close()

	// Restart: a new pipeline over the same state store.
	g := newFixture(t, dir, "accept")
	sink = g.p.For("in", "tcp", "level", "047")
	for _, line := range []string{"2026-01-01T00:30:00Z,6.5", "2026-01-01T00:40:00Z,3.9", "2026-01-01T00:50:00Z,3"} {
		if err := sink.Emit(ctx, frame("s1", line)); err != nil {
			t.Fatal(err)
		}
	}
	al = readAll(t, g.alarms)
	if len(al) != 1 || !strings.Contains(string(al[0].Body), `"status":"CLEARED"`) || !strings.Contains(string(al[0].Body), `"triggeredAt":"2026-01-01T00:40:00Z"`) {
		t.Fatalf("after restart want one CLEARED at 00:40 and no second ACTIVE, got %d: %v", len(al), al)
	}
}

func TestUndecodableFrameIsDeadLetteredAndArchived(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	sink := f.p.For("in", "tcp", "level", "047")
	err := sink.Emit(context.Background(), frame("s1", "not,a,number,row"))
	var rej *adapters.RejectedError
	if !errors.As(err, &rej) || !adapters.Durable(err) {
		t.Fatalf("want a durable RejectedError, got %v", err)
	}
	es, err := f.dl.List(deadletter.Filter{})
	if err != nil || len(es) != 1 {
		t.Fatalf("dead letters: %v %d", err, len(es))
	}
	if es[0].Class != deadletter.ClassFrame || es[0].Where != "in/10.0.0.9:1234@42" || es[0].Reason == "" {
		t.Fatalf("entry: %+v", es[0])
	}
	var back adapters.Frame
	if err := json.Unmarshal(es[0].Data, &back); err != nil || string(back.Payload) != "not,a,number,row" || back.Decoder != "level" {
		t.Fatalf("kept frame: %+v %v", back, err)
	}
	raw := readAll(t, f.data)
	if len(raw) != 1 || raw[0].Kind != queue.Raw || !strings.Contains(string(raw[0].Body), `"payload":"6e6f742c612c6e756d6265722c726f77"`) {
		t.Fatalf("raw archive copy: %+v", raw)
	}

	// Replay with the decoders as they are now: a fixed decoder that
	// reads four columns takes the kept frame.
	fixed := strings.Replace(decoderYAML, "columns: [ts, level]", "columns: [ts, level, c, d]", 1)
	fixed = strings.Replace(fixed, "raise: level > 5", "raise: level > 5", 1)
	f.p.SetDecoders(loadDecoder(t, strings.Replace(fixed, "text_columns: [ts]", "text_columns: [ts, c, d]", 1)))
	err = f.p.Replay(context.Background(), es[0].Data)
	if !errors.As(err, &rej) {
		// "not" is no time: still rejected, and said so
		t.Fatalf("replaying an undecodable frame must be rejected again, got %v", err)
	}
	good, _ := json.Marshal(&adapters.Frame{Adapter: "in", Kind: "tcp", Source: "x", Identity: "s1", Decoder: "level",
		Payload: []byte("2026-01-01T00:00:00Z,2.5,c,d"), Received: time.Now()})
	if err := f.p.Replay(context.Background(), good); err != nil {
		t.Fatalf("replay with the fixed decoder: %v", err)
	}
	if recs := readAll(t, f.data); len(recs) != 2 || !strings.Contains(string(recs[1].Body), `"result":2.5`) {
		t.Fatalf("replayed frame not queued: %+v", recs)
	}
}

func TestUnknownDevicePolicy(t *testing.T) {
	f := newFixture(t, t.TempDir(), "deadletter")
	err := f.p.For("in", "tcp", "level", "047").Emit(context.Background(), frame("stranger", "2026-01-01T00:00:00Z,1"))
	var rej *adapters.RejectedError
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "stranger") {
		t.Fatalf("want rejection naming the identity, got %v", err)
	}
	g := newFixture(t, t.TempDir(), "accept")
	if err := g.p.For("in", "tcp", "level", "047").Emit(context.Background(), frame("stranger", "2026-01-01T00:00:00Z,1")); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, g.data)
	if len(recs) != 1 || recs[0].DeviceID != "stranger" {
		t.Fatalf("accepted unknown device: %+v", recs)
	}
}

func TestDiskErrorIsNotDurable(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	f.data.SetAppendError(syscall.ENOSPC)
	err := f.p.For("in", "tcp", "level", "047").Emit(context.Background(), frame("s1", "2026-01-01T00:00:00Z,1"))
	if err == nil || adapters.Durable(err) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("want a non-durable ENOSPC error, got %v", err)
	}
}

func TestNoDecoderConfigured(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	err := f.p.For("in", "tcp", "", "047").Emit(context.Background(), frame("s1", "x"))
	var rej *adapters.RejectedError
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "no decoder configured for adapter in") {
		t.Fatalf("got %v", err)
	}
}

func TestTransportParseErrorIsDeadLettered(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	fr := frame("s1", "2026-01-01T00:00:00Z,1")
	fr.Kind = "directip"
	fr.Meta["parse_error"] = "IE 0x01 length 40 overflows the message"
	err := f.p.For("in", "directip", "level", "047").Emit(context.Background(), fr)
	var rej *adapters.RejectedError
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "directip message could not be parsed: IE 0x01 length 40") {
		t.Fatalf("got %v", err)
	}
	if recs := readAll(t, f.data); len(recs) != 1 || recs[0].Kind != queue.Raw {
		t.Fatalf("want only the raw archive copy, got %+v", recs)
	}
}

// Ids that would corrupt sensusIDs upstream are refused, kept, and said so.
func TestBadDeviceIDsAreDeadLettered(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	sink := f.p.For("in", "tcp", "level", "047")
	for _, id := range []string{"N\x00L", "a@b", "\xff\xfe", "tab\there"} {
		err := sink.Emit(context.Background(), frame(id, "2026-01-01T00:00:00Z,1"))
		var rej *adapters.RejectedError
		if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "device id") {
			t.Errorf("identity %q: want a rejection naming the device id, got %v", id, err)
		}
	}
	for _, r := range readAll(t, f.data) {
		if r.Kind == queue.Observation {
			t.Fatalf("an observation was queued for a bad id: %+v", r)
		}
	}
	if err := sink.Emit(context.Background(), frame("ok-1", "2026-01-01T00:00:00Z,1")); err != nil {
		t.Fatalf("a good id after bad ones: %v", err)
	}
}
