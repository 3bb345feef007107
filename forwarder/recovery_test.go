package forwarder

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/deadletter"
)

// A crash in the middle of a window: one batch was accepted, the answer to
// the next was lost; the forwarder stops before committing. More records
// arrive while it is down. After the restart the same window is formed
// again: the accepted batch is not posted again, the lost one is posted
// with the identical batchId (the server answers 409), and each record
// arrives exactly once.
func TestCrashResendsWindowWithSameBatchIDs(t *testing.T) {
	e := newEnv(t)
	e.cfg.Retry = Retry{Min: Duration(time.Hour), Max: Duration(time.Hour)} // park after the lost answer
	lost := make(chan struct{})
	var once sync.Once
	e.fs.script = func(r *req) reply {
		if r.ep == "observations" && r.dev == "FST2" {
			var rp reply
			once.Do(func() { rp = reply{drop: true}; close(lost) })
			return rp
		}
		return reply{}
	}
	e.obs("FST1", 1, 2)
	e.obs("FST2", 3, 4)
	e.obs("FST1", 5)
	e.start()
	<-lost
	e.waitFor("forwarder parked in backoff", func() bool { return e.fwd.Status().State == "retrying" })
	before := e.fs.requests()
	if e.data.Cursor().Offset != 1 {
		t.Fatal("window committed before it was resolved")
	}
	// more records while the forwarder is down
	e.obs("FST2", 6)
	e.obs("FST1", 7)
	e.cfg.Retry = Retry{Min: Duration(5 * time.Millisecond), Max: Duration(50 * time.Millisecond)}
	e.restart()
	e.drained()

	after := e.fs.requests()[len(before):]
	if len(before) != 2 || before[0].dev != "FST1" || before[1].dev != "FST2" {
		t.Fatalf("before the crash: %s", e.describe())
	}
	if after[0].batchID != before[1].batchID || string(after[0].body) != string(before[1].body) {
		t.Fatalf("lost batch resent as %s (%s), was %s (%s)", after[0].batchID, after[0].body, before[1].batchID, before[1].body)
	}
	for _, r := range after {
		if r.batchID == before[0].batchID {
			t.Fatal("accepted batch was posted again after the restart")
		}
	}
	if len(e.logs.lines("batch already received")) == 0 {
		t.Fatal("the server's 409 was not seen")
	}
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2, 3, 4, 5, 6, 7})
	if len(e.deadSeqs()) != 0 {
		t.Fatal("dead letters")
	}
}

// Without the state of resolved batches (a crash between the server's 200
// and the state write), the whole window is resent with identical ids and
// the server's dedup makes it exactly once.
func TestCrashWithoutResolvedMarksResendsSameIDs(t *testing.T) {
	e := newEnv(t)
	e.obs("FST1", 1, 2)
	e.obs("FST2", 3)
	// Form and save the window as the forwarder would, deliver nothing
	// through it, then let a fresh forwarder take over.
	f, err := New(e.cfg, Deps{Data: e.data, Alarms: e.alarms, State: e.state, DeadLetters: e.dl, Log: e.log})
	if err != nil {
		t.Fatal(err)
	}
	es, _, err := f.formWindow(context.Background(), &f.data)
	if err != nil || len(es) != 3 {
		t.Fatalf("window %d %v", len(es), err)
	}
	var firstIDs []string
	for _, b := range f.makeBatches(&f.data, es) {
		firstIDs = append(firstIDs, b.id)
		// the server got them (the answers were lost)
		r := &req{ep: "observations", batchID: b.id, dev: b.dev}
		for _, it := range b.items {
			r.items = append(r.items, it.body)
		}
		e.fs.mu.Lock()
		e.fs.store(r)
		e.fs.mu.Unlock()
	}
	e.obs("FST1", 4) // appended meanwhile: not part of the window
	e.start()
	e.drained()
	reqs := e.fs.requests()
	if len(reqs) != 3 || reqs[0].batchID != firstIDs[0] || reqs[1].batchID != firstIDs[1] {
		t.Fatalf("ids %v, requests %s", firstIDs, e.describe())
	}
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2, 3, 4})
}

// 422 UNKNOWN_DATASTREAM then UNKNOWN_THING: the forwarder's state says
// both were sent, the server lost them. It posts the thing, the
// datastream, and resends the same batch.
func TestUnknownEntityRecovery(t *testing.T) {
	e := newEnv(t)
	e.fs.strict = true
	e.entities("FST1")
	ps, _ := e.state.unsent(Thing, 10)
	ds, _ := e.state.unsent(Datastream, 10)
	if err := e.state.setStatus(append(ps, ds...), statusSent, ""); err != nil {
		t.Fatal(err)
	}
	e.obs("FST1", 1, 2)
	e.start()
	e.drained()
	var seq []string
	for _, r := range e.fs.requests() {
		seq = append(seq, r.ep)
	}
	// observations 422 → datastreams 422 (thing unknown) → things →
	// datastreams → observations
	if got := strings.Join(seq, " "); got != "observations datastreams things datastreams observations" {
		t.Fatalf("requests: %s", got)
	}
	reqs := e.fs.requests()
	if reqs[0].batchID != reqs[4].batchID {
		t.Fatal("batch id changed after 422")
	}
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2})
}

// A reference the state store does not know either: those records are dead
// letters with a clear reason; the others of the batch arrive.
func TestUnknownEntityNotInState(t *testing.T) {
	e := newEnv(t)
	e.fs.strict = true
	e.entities("FST1")
	e.obs("FST1", 1)
	orphan := obsRec("FST1", 2)
	orphan.Ref = "ghost@ai9@FST1@047"
	orphan.Body = []byte(strings.Replace(string(orphan.Body), dsID("FST1"), orphan.Ref, 1))
	e.data.Append(context.Background(), orphan)
	e.obs("FST1", 3)
	e.start()
	e.drained()
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 3})
	dead := e.deadSeqs()
	if len(dead) != 1 || !strings.Contains(dead[2].Reason, `UNKNOWN_DATASTREAM: the server does not know datastream "ghost@ai9@FST1@047" and vigd has no definition of it`) {
		t.Fatalf("dead letters: %+v", dead)
	}
}

// Per device the order is kept across batches, splits and retries.
func TestPerDeviceOrder(t *testing.T) {
	e := newEnv(t)
	e.cfg.Batch.MaxRecords = 3
	rng := rand.New(rand.NewPCG(1, 2))
	var mu sync.Mutex
	e.fs.script = func(r *req) reply {
		mu.Lock()
		defer mu.Unlock()
		e.fs.mu.Lock()
		dup := e.fs.seen[r.batchID]
		e.fs.mu.Unlock()
		if dup {
			return reply{} // a server checks for a duplicate first (409)
		}
		switch x := rng.IntN(10); {
		case x < 2:
			return reply{status: 503}
		case x < 3 && len(r.items) > 1:
			return reply{status: 413}
		case x < 4:
			return reply{drop: true} // answer lost after the server stored it
		}
		return reply{}
	}
	devs := []string{"FST1", "FST2", "FST3"}
	want := map[string][]int{}
	for i := 1; i <= 60; i++ {
		d := devs[rng.IntN(3)]
		e.obs(d, i)
		want[d] = append(want[d], i)
	}
	e.start()
	e.drained()
	got := map[string][]int{}
	e.fs.mu.Lock()
	for _, it := range e.fs.got["observations"] {
		s := seqOf(it)
		for _, d := range devs {
			if strings.Contains(string(it), dsID(d)) {
				got[d] = append(got[d], s)
			}
		}
	}
	e.fs.mu.Unlock()
	for _, d := range devs {
		if fmt.Sprint(got[d]) != fmt.Sprint(want[d]) {
			t.Errorf("%s: got %v want %v", d, got[d], want[d])
		}
	}
}

// After an outage the alarms go before the observations that waited
// longer.
func TestAlarmsFirstAfterOutage(t *testing.T) {
	e := newEnv(t)
	var down atomic.Bool
	down.Store(true)
	e.fs.script = func(r *req) reply {
		if down.Load() {
			return reply{status: 503}
		}
		return reply{}
	}
	e.obs("FST1", 1, 2)
	e.start()
	e.waitFor("outage", func() bool { return len(e.fs.requests()) >= 2 })
	e.alarms.Append(context.Background(), alarmRec("FST1", 10))
	e.obs("FST1", 3)
	time.Sleep(50 * time.Millisecond)
	down.Store(false)
	e.drained()
	e.fs.mu.Lock()
	order := append([]string(nil), e.fs.order...)
	e.fs.mu.Unlock()
	if len(order) < 2 || order[0] != "alarms:FST1" {
		t.Fatalf("accepted in order %v", order)
	}
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2, 3})
}

// A device that appears while running: its thing and datastream are
// posted before its observations (no 422 on the way).
func TestNewDeviceEntitiesFirst(t *testing.T) {
	e := newEnv(t)
	e.fs.strict = true
	e.start()
	for i, d := range []string{"FST7", "FST8"} {
		e.entities(d)
		e.obs(d, i+1)
	}
	e.drained()
	for _, r := range e.fs.requests() {
		if r.ep == "observations" && len(e.fs.got["things"]) == 0 {
			t.Fatal("observation before thing")
		}
	}
	for _, r := range e.fs.requests() {
		if strings.Contains(string(r.body), "UNKNOWN") {
			t.Fatal("422")
		}
	}
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2})
	e.fs.mu.Lock()
	defer e.fs.mu.Unlock()
	if len(e.fs.things) != 2 || len(e.fs.dss) != 2 {
		t.Fatalf("things %d datastreams %d", len(e.fs.things), len(e.fs.dss))
	}
	for _, o := range e.fs.order {
		if o == "observations:" {
			t.Fatal("observation without device")
		}
	}
}

// A dead-lettered record replayed goes back to its queue and arrives.
func TestReplayRecord(t *testing.T) {
	e := newEnv(t)
	var fixed atomic.Bool
	e.fs.script = func(r *req) reply {
		if !fixed.Load() && r.ep == "alarms" {
			return reply{status: 400, body: `{"error":"VALIDATION_ERROR","message":"nope"}`}
		}
		return reply{}
	}
	e.alarms.Append(context.Background(), alarmRec("FST1", 5))
	e.start()
	e.drained()
	dead := e.deadSeqs()
	if len(dead) != 1 {
		t.Fatalf("dead %v", dead)
	}
	fixed.Store(true)
	if err := e.fwd.ReplayRecord(context.Background(), dead[5]); err != nil {
		t.Fatal(err)
	}
	e.drained()
	assertSeqs(t, "alarms", e.fs.seqs("alarms"), []int{5})
}

// Stop while a request is in flight: Run waits for its answer, resolves
// and commits the window, and a restart sends nothing again.
func TestStopWaitsForInFlight(t *testing.T) {
	e := newEnv(t)
	inFlight := make(chan struct{})
	var once sync.Once
	e.fs.script = func(r *req) reply {
		once.Do(func() { close(inFlight) })
		time.Sleep(300 * time.Millisecond)
		return reply{}
	}
	e.obs("FST1", 1, 2)
	e.start()
	<-inFlight
	t0 := time.Now()
	e.stop()
	if d := time.Since(t0); d < 200*time.Millisecond {
		t.Fatalf("Run returned after %s, before the answer", d)
	}
	if backlog(e.data) != 0 {
		t.Fatal("answered window not committed")
	}
	e.fs.script = nil
	e.restart()
	time.Sleep(50 * time.Millisecond)
	if n := len(e.fs.requests()); n != 1 {
		t.Fatalf("requests after restart: %s", e.describe())
	}
	if st := e.fwd.Status(); st.State != "idle" || !strings.HasPrefix(st.String(), "forwarder idle") {
		t.Fatalf("status %+v", st)
	}
}

// A server that never answers: Run gives up the request after the stop
// grace, commits nothing, and the records go after the restart.
func TestStopGraceBoundsHungRequest(t *testing.T) {
	old := stopGrace
	stopGrace = 100 * time.Millisecond
	t.Cleanup(func() { stopGrace = old })
	e := newEnv(t)
	release := make(chan struct{})
	inFlight := make(chan struct{})
	var once sync.Once
	e.fs.script = func(r *req) reply {
		once.Do(func() { close(inFlight) })
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
		return reply{status: 503}
	}
	e.obs("FST1", 1)
	e.start()
	<-inFlight
	t0 := time.Now()
	e.stop()
	close(release)
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("Run took %s to stop", d)
	}
	if backlog(e.data) != 1 {
		t.Fatal("unanswered record committed")
	}
	e.fs.script = nil
	e.restart()
	e.drained()
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1})
}

// `vigd deadletters replay` with the daemon running: the CLI (another
// Store on the same folder) moves the entry to replay/; the idle forwarder
// re-queues and delivers it, and deletes the entry.
func TestReplayThroughFolder(t *testing.T) {
	old := replayEvery
	replayEvery = 20 * time.Millisecond
	t.Cleanup(func() { replayEvery = old })
	e := newEnv(t)
	var fixed atomic.Bool
	e.fs.script = func(r *req) reply {
		for _, it := range r.items {
			if !fixed.Load() && seqOf(it) == 2 {
				return reply{status: 400, body: `{"error":"VALIDATION_ERROR","message":"nope"}`}
			}
		}
		return reply{}
	}
	e.obs("FST1", 1, 2, 3)
	e.start()
	e.drained()
	dead := e.deadSeqs()
	if len(dead) != 1 {
		t.Fatalf("dead %v", dead)
	}
	fixed.Store(true)
	cli, err := deadletter.Open(e.dl.Dir(), deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.MarkReplay(dead[2].ID); err != nil {
		t.Fatal(err)
	}
	e.waitFor("replayed record delivered", func() bool { return len(e.fs.seqs("observations")) == 3 })
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 3, 2})
	e.waitFor("entry deleted", func() bool { es, _ := cli.List(deadletter.Filter{}); return len(es) == 0 })
}
