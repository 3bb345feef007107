package forwarder

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/queue"
	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/sim"
)

// simEnv is env posting to the project's eventstore simulator.
type simEnv struct {
	*env
	sim *sim.Server
	c   *sim.Client
}

func newSimEnv(t *testing.T, cfg sim.Config) *simEnv {
	t.Helper()
	e := newEnv(t)
	cfg.Services = map[string]signer.Secret{"svc-test": signer.NewSecret(testSecret)}
	s := sim.StartTest(t, cfg)
	// Cleanups run last-in first-out: stop the forwarder before the
	// simulator waits for its connections.
	t.Cleanup(e.stop)
	e.cfg.URL = s.URL()
	return &simEnv{env: e, sim: s, c: s.Client()}
}

// simSeqs are the seqs of what the simulator stored for a kind, in order.
func (e *simEnv) simSeqs(kind string) []int {
	e.t.Helper()
	recs, err := e.c.Records(context.Background(), sim.Query{Kind: kind})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []int
	for _, r := range recs {
		out = append(out, seqOf(r.Record))
	}
	return out
}

func (e *simEnv) requests() []sim.RequestLog {
	e.t.Helper()
	rs, err := e.c.Requests(context.Background(), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

func (e *simEnv) describeSim() string {
	var b strings.Builder
	for _, r := range e.requests() {
		fmt.Fprintf(&b, "\n  %s %d %s %s n=%d acc=%d", r.Endpoint, r.Status, r.Error, r.BatchID, r.Records, r.Accepted)
	}
	return b.String()
}

func (e *simEnv) fault(f sim.Fault) {
	e.t.Helper()
	if _, err := e.c.InjectFault(context.Background(), f); err != nil {
		e.t.Fatal(err)
	}
}

func (e *simEnv) counts() sim.Counts {
	e.t.Helper()
	c, err := e.c.Counts(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// Every kind, signed, against the simulator's validation and integrity:
// things, datastreams, observations, alarms (201), raw.
func TestSimAccepted(t *testing.T) {
	e := newSimEnv(t, sim.Config{})
	e.cfg.Gzip = true
	for _, d := range []string{"FST1", "FST2"} {
		e.entities(d)
	}
	e.obs("FST1", 1, 2, 3)
	e.obs("FST2", 4)
	e.data.Append(context.Background(), rawRec("FST1", 5))
	e.alarms.Append(context.Background(), alarmRec("FST2", 6))
	e.start()
	e.drained()
	if got := fmt.Sprint(e.simSeqs("observations")); got != "[1 2 3 4]" {
		t.Fatalf("observations %s%s", got, e.describeSim())
	}
	assertSeqs(t, "alarms", e.simSeqs("alarms"), []int{6})
	assertSeqs(t, "raw", e.simSeqs("raw"), []int{5})
	c := e.counts()
	if c.Entities["things"] != 2 || c.Entities["datastreams"] != 2 || c.Duplicates != 0 {
		t.Fatalf("counts %+v", c)
	}
	for _, r := range e.requests() {
		if r.Status/100 != 2 || !r.Gzip {
			t.Fatalf("request %+v", r)
		}
	}
	// alarms were posted first
	if rs := e.requests(); rs[0].Endpoint != "things" || rs[2].Endpoint != "alarms" {
		t.Fatalf("order:%s", e.describeSim())
	}
}

// 202: the simulator refuses records by rule; they are dead letters with
// its message, the rest stored once.
func TestSimPartial(t *testing.T) {
	e := newSimEnv(t, sim.Config{})
	e.entities("FST1")
	e.fault(sim.Fault{Kind: sim.FaultReject, Endpoint: "observations", Field: "parameters.seq",
		Equals: json.RawMessage("3"), Message: "seq 3 is not allowed"})
	e.obs("FST1", 1, 2, 3, 4)
	e.start()
	e.drained()
	assertSeqs(t, "stored", e.simSeqs("observations"), []int{1, 2, 4})
	dead := e.deadSeqs()
	if len(dead) != 1 || dead[3].Reason != "VALIDATION_ERROR: seq 3 is not allowed" || dead[3].Where != "observations/202" {
		t.Fatalf("dead %+v", dead)
	}
	if c := e.counts(); c.Requests != 3 {
		t.Fatalf("requests:%s", e.describeSim())
	}
}

// 400 for the whole batch because of one record: split down to it.
func TestSimBadRequestSplit(t *testing.T) {
	e := newSimEnv(t, sim.Config{})
	e.entities("FST1")
	e.fault(sim.Fault{Kind: sim.FaultReject, Endpoint: "observations", Field: "parameters.seq",
		Equals: json.RawMessage("6"), Action: "batch", Message: "poison record"})
	e.obs("FST1", seqRange(1, 9)...)
	e.start()
	e.drained()
	if got := fmt.Sprint(e.simSeqs("observations")); got != "[1 2 3 4 5 7 8 9]" {
		t.Fatalf("stored %s%s", got, e.describeSim())
	}
	dead := e.deadSeqs()
	if len(dead) != 1 || !strings.Contains(dead[6].Reason, "poison record") {
		t.Fatalf("dead %+v", dead)
	}
}

// 401, 403, 404: nothing lost, delivered when the server takes it again.
func TestSimRefused(t *testing.T) {
	for _, st := range []int{401, 403, 404} {
		t.Run(fmt.Sprint(st), func(t *testing.T) {
			e := newSimEnv(t, sim.Config{})
			e.entities("FST1")
			e.fault(sim.Fault{Kind: sim.FaultFail, Status: st, Count: 4})
			e.obs("FST1", 1, 2)
			e.start()
			e.drained()
			assertSeqs(t, "stored", e.simSeqs("observations"), []int{1, 2})
			if n := len(e.logs.lines("eventstore refused")); n != 1 {
				t.Fatalf("error logs %d", n)
			}
			if len(e.deadSeqs()) != 0 {
				t.Fatal("dead letters")
			}
		})
	}
	// a wrong secret: the simulator's verifier refuses, nothing moves
	e := newSimEnv(t, sim.Config{})
	e.cfg.ServiceID = "svc-unknown"
	e.obs("FST1", 1)
	e.start()
	e.waitFor("refusals", func() bool { return len(e.requests()) >= 2 })
	e.stop()
	if backlog(e.data) != 1 || e.requests()[0].Status != 401 || e.requests()[0].Error != "UNKNOWN_SERVICE" {
		t.Fatalf("backlog %d:%s", backlog(e.data), e.describeSim())
	}
}

// 413: the simulator takes at most 3 records a request.
func TestSimTooLarge(t *testing.T) {
	e := newSimEnv(t, sim.Config{MaxRecords: 3})
	e.entities("FST1")
	e.obs("FST1", seqRange(1, 10)...)
	e.start()
	e.drained()
	if got := fmt.Sprint(e.simSeqs("observations")); got != "[1 2 3 4 5 6 7 8 9 10]" {
		t.Fatalf("stored %s", got)
	}
}

// 422: the simulator lost its entities (reset); the forwarder's state says
// they were sent. It posts them again and resends the same batches.
func TestSimUnknownEntities(t *testing.T) {
	e := newSimEnv(t, sim.Config{})
	e.entities("FST1")
	e.obs("FST1", 1)
	e.alarms.Append(context.Background(), alarmRec("FST1", 2))
	e.start()
	e.drained()
	if err := e.c.Reset(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	e.obs("FST1", 3, 4)
	e.alarms.Append(context.Background(), alarmRec("FST1", 5))
	e.drained()
	assertSeqs(t, "observations", e.simSeqs("observations"), []int{3, 4})
	assertSeqs(t, "alarms", e.simSeqs("alarms"), []int{5})
	var eps []string
	for _, r := range e.requests() {
		eps = append(eps, fmt.Sprintf("%s:%d", r.Endpoint, r.Status))
	}
	// alarms 422 (thing unknown) → thing → alarms; observations 422 →
	// datastream → observations. The two chains may interleave (the test
	// appends the observations and the alarm while the forwarder runs), so
	// each is checked as an ordered subsequence of all the requests.
	for _, chain := range [][]string{
		{"alarms:422", "things:200", "alarms:201"},
		{"observations:422", "datastreams:200", "observations:200"},
	} {
		i := 0
		for _, ep := range eps {
			if i < len(chain) && ep == chain[i] {
				i++
			}
		}
		if i != len(chain) {
			t.Fatalf("requests %s\ndo not contain, in order, %s", strings.Join(eps, " "), strings.Join(chain, " "))
		}
	}
	if len(eps) != 6 {
		t.Fatalf("want exactly 6 requests, got %s", strings.Join(eps, " "))
	}
}

// 422 for a datastream vigd never had: the records are dead letters.
func TestSimUnknownEverywhere(t *testing.T) {
	e := newSimEnv(t, sim.Config{})
	e.entities("FST1")
	ghost := obsRec("FST1", 2)
	ghost.Ref = "ghost@x@FST1@047"
	ghost.Body = []byte(strings.Replace(string(ghost.Body), dsID("FST1"), ghost.Ref, 1))
	e.obs("FST1", 1)
	e.data.Append(context.Background(), ghost)
	e.start()
	e.drained()
	assertSeqs(t, "stored", e.simSeqs("observations"), []int{1})
	dead := e.deadSeqs()
	if len(dead) != 1 || !strings.Contains(dead[2].Reason, "vigd has no definition") {
		t.Fatalf("dead %+v", dead)
	}
}

// 503 with Retry-After, 429 from the simulator's own rate limit, closed
// connections and timeouts: retried, each batch under one batchId, every
// record stored once, and the wait after a Retry-After at least that long.
func TestSimTransient(t *testing.T) {
	e := newSimEnv(t, sim.Config{})
	e.cfg.Timeout = Duration(300 * time.Millisecond)
	e.entities("FST1")
	e.fault(sim.Fault{Kind: sim.FaultFail, Endpoint: "observations", Status: 503, RetryAfter: "1", Count: 1})
	e.fault(sim.Fault{Kind: sim.FaultFail, Endpoint: "observations", Mode: "close", Count: 1})
	e.fault(sim.Fault{Kind: sim.FaultFail, Endpoint: "observations", Status: 408, Count: 1})
	e.fault(sim.Fault{Kind: sim.FaultLatency, Endpoint: "observations", Skip: 3, Latency: sim.Duration(time.Second), Count: 1})
	e.obs("FST1", 1, 2, 3)
	e.start()
	e.drained()
	// The timed-out request is still being served when its retry is
	// stored: it ends as the 409.
	e.waitFor("the timed-out request logged", func() bool { return e.counts().Requests >= 7 })
	assertSeqs(t, "stored", e.simSeqs("observations"), []int{1, 2, 3})
	var obs []sim.RequestLog
	for _, r := range e.requests() {
		if r.Endpoint == "observations" {
			obs = append(obs, r)
		}
	}
	if len(obs) < 5 || obs[0].Status != 503 || obs[0].RetryAfter != "1" {
		t.Fatalf("requests:%s", e.describeSim())
	}
	t0, _ := time.Parse(sim.TimeFormat, obs[0].Time)
	t1, _ := time.Parse(sim.TimeFormat, obs[1].Time)
	if gap := t1.Sub(t0); gap < 950*time.Millisecond || gap > 5*time.Second {
		t.Fatalf("gap after Retry-After 1: %s", gap)
	}
	ids := map[string]bool{}
	for _, r := range obs {
		if r.BatchID != "" {
			ids[r.BatchID] = true
		}
	}
	if len(ids) != 1 {
		t.Fatalf("batch ids %v", ids)
	}
	if c := e.counts(); c.Accepted["observations"] != 3 || c.Duplicates != 1 || obs[len(obs)-1].Status != 409 {
		t.Fatalf("counts %+v", c)
	}
}

// The simulator's rate limit (429 + Retry-After) against a forwarder
// limited to less: no 429 at all; against one allowed more: 429s, all
// delivered.
func TestSimRateLimit(t *testing.T) {
	e := newSimEnv(t, sim.Config{Rate: 10, Burst: 1})
	e.cfg.RequestsPerSecond = 4
	e.cfg.Batch.MaxRecords = 1
	e.entities("FST1")
	e.obs("FST1", seqRange(1, 6)...)
	start := time.Now()
	e.start()
	e.drained()
	took := time.Since(start)
	for _, r := range e.requests() {
		if r.Status == 429 {
			t.Fatalf("429 although limited:%s", e.describeSim())
		}
	}
	// 8 requests at 4/s: at least 7 gaps of 250ms
	if took < 1700*time.Millisecond {
		t.Fatalf("8 requests took %s at 4/s", took)
	}
	assertSeqs(t, "stored", e.simSeqs("observations"), seqRange(1, 6))
}

// Crash in the middle of a window against the simulator: the answer to a
// batch is lost (client timeout while the simulator stores it), the
// forwarder stops without committing, more records come, it restarts:
// the window is resent with identical batchIds, the simulator answers 409,
// and every record is stored exactly once.
func TestSimCrashExactlyOnce(t *testing.T) {
	e := newSimEnv(t, sim.Config{})
	e.cfg.Timeout = Duration(200 * time.Millisecond)
	e.cfg.Retry = Retry{Min: Duration(time.Hour), Max: Duration(time.Hour)}
	e.entities("FST1")
	e.entities("FST2")
	e.fault(sim.Fault{Kind: sim.FaultLatency, Endpoint: "observations", Skip: 1, Latency: sim.Duration(600 * time.Millisecond), Count: 1})
	e.obs("FST1", 1, 2)
	e.obs("FST2", 3)
	e.obs("FST1", 4)
	e.start()
	e.waitFor("the lost answer stored", func() bool { return e.counts().Accepted["observations"] == 4 })
	e.waitFor("parked", func() bool { return e.fwd.Status().State == "retrying" })
	before := e.requests()
	e.obs("FST2", 5)
	e.cfg.Retry = Retry{Min: Duration(5 * time.Millisecond), Max: Duration(50 * time.Millisecond)}
	e.restart()
	e.drained()
	after := e.requests()[len(before):]
	var lost string
	for _, r := range before {
		if r.Endpoint == "observations" && r.BatchID != "" && strings.Contains(r.BatchID, "-data-1-3-") {
			lost = r.BatchID
		}
	}
	if lost == "" || after[0].BatchID != lost || after[0].Status != 409 {
		t.Fatalf("lost %q; before:%s", lost, e.describeSim())
	}
	if got := fmt.Sprint(sortedInts(e.simSeqs("observations"))); got != "[1 2 3 4 5]" {
		t.Fatalf("stored %s", got)
	}
	if c := e.counts(); c.Duplicates != 1 {
		t.Fatalf("duplicates %d", c.Duplicates)
	}
}

func sortedInts(x []int) []int {
	y := append([]int(nil), x...)
	sort.Ints(y)
	return y
}

// The same crash with the real disk queue: the queues and the state store
// are closed and reopened from their folders, as after a kill.
func TestSimDiskQueueCrash(t *testing.T) {
	e := newSimEnv(t, sim.Config{})
	openQ := func() {
		var err error
		if e.data, err = queue.Open(filepath.Join(e.dir, "q-data"), queue.Options{Name: "data"}); err != nil {
			t.Fatal(err)
		}
		if e.alarms, err = queue.Open(filepath.Join(e.dir, "q-alarms"), queue.Options{Name: "alarms"}); err != nil {
			t.Fatal(err)
		}
	}
	closeQ := func() {
		if err := e.data.Close(); err != nil {
			t.Error(err)
		}
		if err := e.alarms.Close(); err != nil {
			t.Error(err)
		}
	}
	openQ()
	e.reopen = func() { closeQ(); openQ() }
	t.Cleanup(func() { e.stop(); closeQ() })

	e.cfg.Timeout = Duration(200 * time.Millisecond)
	e.cfg.Retry = Retry{Min: Duration(time.Hour), Max: Duration(time.Hour)}
	e.entities("FST1")
	e.entities("FST2")
	e.fault(sim.Fault{Kind: sim.FaultLatency, Endpoint: "observations", Skip: 1, Latency: sim.Duration(600 * time.Millisecond), Count: 1})
	e.obs("FST1", 1, 2)
	e.obs("FST2", 3)
	e.alarms.Append(context.Background(), alarmRec("FST2", 9))
	e.start()
	e.waitFor("the lost answer stored", func() bool { return e.counts().Accepted["observations"] == 3 })
	e.waitFor("parked", func() bool { return e.fwd.Status().State == "retrying" })
	e.stop()
	e.obs("FST2", 4) // appended to the old handle: on disk before the "kill"
	e.cfg.Retry = Retry{Min: Duration(5 * time.Millisecond), Max: Duration(50 * time.Millisecond)}
	e.restart()
	e.obs("FST1", 5)
	e.drained()
	assertSeqs(t, "observations", e.simSeqs("observations"), []int{1, 2, 3, 4, 5})
	assertSeqs(t, "alarms", e.simSeqs("alarms"), []int{9})
	if c := e.counts(); c.Duplicates != 1 || c.Entities["things"] != 2 {
		t.Fatalf("counts %+v:%s", c, e.describeSim())
	}
}
