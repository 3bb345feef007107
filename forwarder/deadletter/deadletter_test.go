package deadletter

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

type tick struct{ t time.Time }

func (c *tick) now() time.Time { c.t = c.t.Add(time.Second); return c.t }

func open(t *testing.T, dir string, max int64) (*Store, *test.Hook) {
	t.Helper()
	l, hook := test.NewNullLogger()
	c := &tick{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s, err := Open(dir, Options{MaxBytes: max, Log: logrus.NewEntry(l), Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return s, hook
}

func rec(i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"kind":"observation","deviceId":"FST1","body":{"seq":%d}}`, i))
}

func TestPutGetListFilter(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, 0)
	a, err := s.Put(Entry{Class: ClassRecord, Reason: "VALIDATION_ERROR: bad time", Where: "observations/400", Data: rec(1)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Put(Entry{Class: ClassFrame, Reason: "no decoder matched", Where: "tcp/10.0.0.1:5000@0", Data: json.RawMessage(`{"payload":"0a0b"}`)})
	c, _ := s.Put(Entry{Class: ClassRecord, Reason: "413 request too large", Where: "alarms/413", Data: rec(3)})
	if !(a.ID < b.ID && b.ID < c.ID) || !strings.HasPrefix(a.ID, "20260102T030406.000000000Z-") {
		t.Fatalf("ids not sortable by time: %s %s %s", a.ID, b.ID, c.ID)
	}
	// one file per entry, exactly the JSON of the entry
	raw, err := os.ReadFile(filepath.Join(dir, a.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var onDisk Entry
	if err := json.Unmarshal(raw, &onDisk); err != nil || onDisk.Reason != a.Reason || string(onDisk.Data) != string(rec(1)) {
		t.Fatalf("file: %s (%v)", raw, err)
	}
	got, err := s.Get(b.ID)
	if err != nil || got.Class != ClassFrame || got.Where != "tcp/10.0.0.1:5000@0" || !got.Time.Equal(b.Time) {
		t.Fatalf("get: %+v %v", got, err)
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want []string
	}{
		{"all", Filter{}, []string{a.ID, b.ID, c.ID}},
		{"class", Filter{Class: ClassRecord}, []string{a.ID, c.ID}},
		{"reason", Filter{Reason: "validation"}, []string{a.ID}},
		{"since", Filter{Since: b.Time}, []string{b.ID, c.ID}},
		{"none", Filter{Class: ClassFrame, Reason: "413"}, nil},
	} {
		es, err := s.List(tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range es {
			ids = append(ids, e.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %v want %v", tc.name, ids, tc.want)
		}
	}
	// a second Store on the same folder (the CLI) sees the same
	s2, _ := open(t, dir, 0)
	if es, _ := s2.List(Filter{}); len(es) != 3 || s2.Size() != s.Size() {
		t.Fatalf("second store: %d entries, size %d vs %d", len(es), s2.Size(), s.Size())
	}
	if err := s.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if n, err := s.Purge(Filter{Class: ClassRecord}); n != 1 || err != nil {
		t.Fatalf("purge: %d %v", n, err)
	}
	if es, _ := s.List(Filter{}); len(es) != 1 || es[0].ID != b.ID {
		t.Fatalf("after purge: %+v", es)
	}
	for _, bad := range []string{"../x", "", ".tmp-1", "a/b"} {
		if _, err := s.Get(bad); !errors.Is(err, ErrBadID) {
			t.Errorf("Get(%q): %v", bad, err)
		}
	}
}

// Writes are atomic: a leftover temporary file from a crash is not an
// entry and is cleaned on Open; no temporary file survives a Put.
func TestAtomicFiles(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, 0)
	if _, err := s.Put(Entry{Class: ClassRecord, Reason: "r", Data: rec(1)}); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		des, _ := os.ReadDir(dir)
		var out []string
		for _, d := range des {
			out = append(out, d.Name())
		}
		return out
	}
	for _, n := range names() {
		if strings.HasPrefix(n, tmpPrefix) {
			t.Fatalf("temporary file left: %s", n)
		}
	}
	// a torn write of a crashed process
	if err := os.WriteFile(filepath.Join(dir, tmpPrefix+"123"), []byte(`{"id":"x","cla`), 0o600); err != nil {
		t.Fatal(err)
	}
	s2, _ := open(t, dir, 0)
	es, _ := s2.List(Filter{})
	if len(es) != 1 {
		t.Fatalf("entries %d", len(es))
	}
	for _, n := range names() {
		if strings.HasPrefix(n, tmpPrefix) {
			t.Fatalf("torn file not cleaned: %s", n)
		}
	}
}

func TestReplayFolder(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, 0)
	var ids []string
	for i := 0; i < 3; i++ {
		e, _ := s.Put(Entry{Class: ClassRecord, Reason: "r", Data: rec(i)})
		ids = append(ids, e.ID)
	}
	// the CLI marks two for replay, with the daemon stopped or not
	cli, _ := open(t, dir, 0)
	if err := cli.MarkReplay(ids[2]); err != nil {
		t.Fatal(err)
	}
	if err := cli.MarkReplay(ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := cli.MarkReplay(ids[0]); err != nil {
		t.Fatalf("marking twice: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, replayDir, ids[0]+".json")); err != nil {
		t.Fatal("not moved to replay/")
	}
	rs, err := s.TakeReplays()
	if err != nil || len(rs) != 2 || rs[0].ID != ids[0] || rs[1].ID != ids[2] || !rs[0].Replay {
		t.Fatalf("replays: %+v %v", rs, err)
	}
	if string(rs[1].Data) != string(rec(2)) {
		t.Fatalf("data: %s", rs[1].Data)
	}
	// the daemon deletes each after re-injecting it
	for _, r := range rs {
		if err := s.Delete(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if rs, _ := s.TakeReplays(); len(rs) != 0 {
		t.Fatalf("replays left: %v", rs)
	}
	if es, _ := s.List(Filter{}); len(es) != 1 || es[0].ID != ids[1] {
		t.Fatalf("left: %+v", es)
	}
	if err := s.MarkReplay("20990101T000000.000000000Z-00000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

// Over the size bound the oldest entries go first; each is counted and
// logged at error.
func TestSizeBoundEvictsOldest(t *testing.T) {
	dir := t.TempDir()
	one := int64(len(mustJSON(t, Entry{ID: "20260102T030406.000000000Z-00000000", Time: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
		Class: ClassRecord, Reason: "r", Where: "w", Data: rec(0)})))
	s, hook := open(t, dir, 3*one+one/2) // room for three
	before := value(evictedTotal)
	var ids []string
	for i := 0; i < 5; i++ {
		e, err := s.Put(Entry{Class: ClassRecord, Reason: "r", Where: "w", Data: rec(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	es, _ := s.List(Filter{})
	var got []string
	for _, e := range es {
		got = append(got, e.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(ids[2:]) {
		t.Fatalf("kept %v, want the newest three %v", got, ids[2:])
	}
	if d := value(evictedTotal) - before; d != 2 {
		t.Fatalf("evicted metric +%v", d)
	}
	if s.Size() > 3*one+one/2 || value(bytesGauge) != float64(s.Size()) {
		t.Fatalf("size %d gauge %v", s.Size(), value(bytesGauge))
	}
	var errs int
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel && strings.Contains(e.Message, "evicted") {
			errs++
		}
	}
	if errs != 2 {
		t.Fatalf("error logs %d", errs)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
