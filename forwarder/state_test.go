package forwarder

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vigd/vigd/forwarder/queue"
)

func TestStateEntities(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenState(path)
	if err != nil {
		t.Fatal(err)
	}
	epoch := s.Epoch()
	thing := []byte(`{"@iot.id":2235,"name":"FST1","description":"d","customerId":"047","sensusID":"FST1@047"}`)
	for i, want := range []bool{true, false, false} {
		ch, err := s.UpsertThing("FST1@047", thing)
		if err != nil || ch != want {
			t.Fatalf("upsert %d: changed %v err %v", i, ch, err)
		}
	}
	if _, err := s.UpsertThing("x", []byte(`{not json`)); err == nil {
		t.Fatal("invalid JSON stored")
	}
	ds := []byte(`{"name":"T","sensusID":"a@b@FST1@047"}`)
	if ch, _ := s.UpsertDatastream("a@b@FST1@047", "FST1@047", ds); !ch {
		t.Fatal("new datastream not changed")
	}
	// the same body under another thing is a change
	if ch, _ := s.UpsertDatastream("a@b@FST1@047", "FST9@047", ds); !ch {
		t.Fatal("moved datastream not changed")
	}
	ps, _ := s.unsent(Thing, 10)
	if len(ps) != 1 || string(ps[0].Body) != string(thing) || ps[0].IotID != "2235" {
		t.Fatalf("unsent things %+v", ps)
	}
	// a definition that changes while it is posted stays unsent
	if _, err := s.UpsertThing("FST1@047", []byte(`{"name":"FST1","description":"new","customerId":"047","sensusID":"FST1@047"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.setStatus(ps, statusSent, ""); err != nil {
		t.Fatal(err)
	}
	if _, u := s.EntityCounts(Thing); u != 1 {
		t.Fatal("changed-while-posted thing marked sent")
	}
	ps, _ = s.unsent(Thing, 10)
	s.setStatus(ps, statusSent, "")
	if k, u := s.EntityCounts(Thing); k != 1 || u != 0 {
		t.Fatalf("known %d unsent %d", k, u)
	}
	// by @iot.id (the index keeps the id the server knows it by) and by
	// sensusID
	if sid, _, _, ok := s.resolveEntity(Thing, "2235"); !ok || sid != "FST1@047" {
		t.Fatalf("by @iot.id: %q %v", sid, ok)
	}
	if sid, st, _, ok := s.resolveEntity(Thing, "FST1@047"); !ok || sid != "FST1@047" || st != statusSent {
		t.Fatalf("resolve: %s %d %v", sid, st, ok)
	}
	if _, _, _, ok := s.resolveEntity(Datastream, "nope"); ok {
		t.Fatal("unknown resolved")
	}
	if n, _ := s.MarkUnsent(Thing, "FST1@047", "unknown@1"); n != 1 {
		t.Fatalf("marked %d", n)
	}
	s.setStatus(ps, statusSent, "")
	if err := s.MarkAllUnsent(); err != nil {
		t.Fatal(err)
	}
	if _, u := s.EntityCounts(Datastream); u != 1 {
		t.Fatal("MarkAllUnsent")
	}
	// everything survives a reopen; an unchanged upsert after it writes
	// nothing
	s.Close()
	s, err = OpenState(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Epoch() != epoch {
		t.Fatal("epoch changed on reopen")
	}
	if ch, _ := s.UpsertDatastream("a@b@FST1@047", "FST9@047", ds); ch {
		t.Fatal("unchanged after reopen reported changed")
	}
	if k, u := s.EntityCounts(Datastream); k != 1 || u != 1 {
		t.Fatalf("after reopen: known %d unsent %d", k, u)
	}
}

// Concurrent upserts of one entity: whatever the cache says is what the
// file holds.
func TestStateConcurrentUpserts(t *testing.T) {
	s, err := OpenState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				body := fmt.Sprintf(`{"v":%d}`, (g+i)%3)
				if _, err := s.UpsertThing("T@1", []byte(body)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	ps, _ := s.unsent(Thing, 1)
	if len(ps) != 1 {
		t.Fatal("not unsent")
	}
	if ch, _ := s.UpsertThing("T@1", ps[0].Body); ch {
		t.Fatalf("stored body %s differs from the cache", ps[0].Body)
	}
}

func TestStateKVAndWindow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenState(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get("alarms", "x"); v != nil || err != nil {
		t.Fatalf("missing: %q %v", v, err)
	}
	if err := s.Put("alarms", "FST1/high", []byte("ACTIVE")); err != nil {
		t.Fatal(err)
	}
	s.Put("alarms", "FST1/low", []byte("CLEARED"))
	s.Put("marks", "orbcomm", []byte("2026-01-01"))
	// user buckets never see the forwarder's own
	if v, _ := s.Get("things", "x"); v != nil {
		t.Fatal("leak")
	}
	var keys []string
	s.ForEach("alarms", func(k string, v []byte) error { keys = append(keys, k+"="+string(v)); return nil })
	if fmt.Sprint(keys) != "[FST1/high=ACTIVE FST1/low=CLEARED]" {
		t.Fatalf("keys %v", keys)
	}
	if err := s.Put("alarms", "FST1/low", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("", "k", []byte("v")); err == nil {
		t.Fatal("empty bucket accepted")
	}
	w := window{Start: queue.Position{Segment: 3, Offset: 4096}, End: queue.Position{Segment: 4, Offset: 17}, N: 9}
	if err := s.saveWindow("data", w); err != nil {
		t.Fatal(err)
	}
	s.markResolved("data", "b1")
	s.Close()
	s, _ = OpenState(path)
	defer s.Close()
	if v, _ := s.Get("alarms", "FST1/high"); string(v) != "ACTIVE" {
		t.Fatalf("after reopen %q", v)
	}
	if v, _ := s.Get("alarms", "FST1/low"); v != nil {
		t.Fatal("deleted key back")
	}
	got, ok, err := s.loadWindow("data")
	if err != nil || !ok || got != w {
		t.Fatalf("window %+v %v %v", got, ok, err)
	}
	if r, _ := s.resolved("data"); !r["b1"] || len(r) != 1 {
		t.Fatalf("resolved %v", r)
	}
	s.clearWindow("data")
	if _, ok, _ := s.loadWindow("data"); ok {
		t.Fatal("window not cleared")
	}
	if r, _ := s.resolved("data"); len(r) != 0 {
		t.Fatal("resolved not cleared")
	}
}

// UpsertAll writes what changed, together, and reports how much.
func TestUpsertAll(t *testing.T) {
	s, err := OpenState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	us := []Upsert{
		{Kind: Thing, SensusID: "D1@047", Body: []byte(`{"name":"D1","sensusID":"D1@047"}`)},
		{Kind: Datastream, SensusID: "s@a@D1@047", Thing: "D1@047", Body: []byte(`{"name":"a","sensusID":"s@a@D1@047"}`)},
		{Kind: Datastream, SensusID: "s@b@D1@047", Thing: "D1@047", Body: []byte(`{"name":"b","sensusID":"s@b@D1@047"}`)},
	}
	if n, err := s.UpsertAll(us); err != nil || n != 3 {
		t.Fatalf("first: %d %v", n, err)
	}
	if n, err := s.UpsertAll(us); err != nil || n != 0 {
		t.Fatalf("unchanged: %d %v", n, err)
	}
	us[2].Body = []byte(`{"name":"b2","sensusID":"s@b@D1@047"}`)
	if n, err := s.UpsertAll(us); err != nil || n != 1 {
		t.Fatalf("one changed: %d %v", n, err)
	}
	if known, unsent := s.EntityCounts(Datastream); known != 2 || unsent != 2 {
		t.Fatalf("datastreams known %d unsent %d", known, unsent)
	}
	if _, err := s.UpsertAll([]Upsert{{Kind: Thing, SensusID: "x", Body: []byte("{")}}); err == nil {
		t.Fatal("a body that is not JSON was taken")
	}
}
