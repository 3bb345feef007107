package forwarder

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/queue"
)

// With parallel_requests, batches of different devices are in flight
// together, a device's own batches never are, each device's records arrive
// in order, and a batch whose first answer was a failure is retried.
func TestParallelRequestsKeepDeviceOrder(t *testing.T) {
	e := newEnv(t)
	e.cfg.ParallelRequests = 4
	e.cfg.Batch.MaxRecords = 2
	var mu sync.Mutex
	inflight, most := 0, 0
	perDev := map[string]int{}
	failed := map[string]bool{}
	e.fs.script = func(r *req) reply {
		if r.ep != "observations" {
			return reply{}
		}
		mu.Lock()
		inflight++
		most = max(most, inflight)
		perDev[r.dev]++
		if perDev[r.dev] > 1 {
			t.Errorf("two batches of %s in flight at once", r.dev)
		}
		fail := r.dev == "FST3" && !failed[r.dev]
		failed[r.dev] = true
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		inflight--
		perDev[r.dev]--
		mu.Unlock()
		if fail {
			return reply{status: 503, body: `{"error":"BUSY"}`}
		}
		return reply{}
	}
	want := map[string][]int{}
	for d := range 6 {
		dev := fmt.Sprintf("FST%d", d)
		seqs := []int{d*10 + 1, d*10 + 2, d*10 + 3, d*10 + 4}
		e.obs(dev, seqs...)
		want[dev] = seqs
	}
	e.start()
	e.drained()
	if most < 2 {
		t.Fatalf("at most %d request in flight, want batches of different devices together", most)
	}
	got := map[string][]int{}
	e.fs.mu.Lock()
	for _, it := range e.fs.got["observations"] {
		seq := seqOf(it)
		dev := fmt.Sprintf("FST%d", seq/10)
		got[dev] = append(got[dev], seq)
	}
	e.fs.mu.Unlock()
	for dev, seqs := range want {
		assertSeqs(t, dev, got[dev], seqs)
	}
	if !failed["FST3"] {
		t.Fatal("the scripted failure did not happen")
	}
}

// A backlog larger than a window drains window after window without
// waiting the linger time in between: linger is for waiting for records,
// not for a window the limits cut.
func TestBacklogDoesNotLinger(t *testing.T) {
	e := newEnv(t)
	e.cfg.Batch.Linger = Duration(20 * time.Second)
	pad := strings.Repeat("x", 100<<10)
	var recs []queue.Record
	var seqs []int
	for i := 1; i <= 120; i++ { // 12 MiB: two windows or more
		body := fmt.Sprintf(`{"phenomenonTime":"2024-01-01T12:00:00Z","result":%d,"datastream":{"sensusID":%q},"parameters":{"seq":%d,"pad":%q}}`,
			i, dsID("FST1"), i, pad)
		recs = append(recs, queue.Record{Kind: queue.Observation, DeviceID: "FST1", CustomerID: "047", Ref: dsID("FST1"), Body: []byte(body)})
		seqs = append(seqs, i)
	}
	if err := e.data.Append(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	// As after a restart: nothing is being appended, no notification is
	// pending.
	select {
	case <-e.data.Notify():
	default:
	}
	start := time.Now()
	e.start()
	for deadline := time.Now().Add(60 * time.Second); backlog(e.data) != 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not drained after 60 s; requests: %s", e.describe())
		}
	}
	// Only the last window lingers (it took all there was): one linger
	// plus the work. Full windows that lingered too would make it two
	// lingers or more (≥ 40 s); the bound leaves a slow, loaded machine
	// 18 s for the work itself (5–9 s measured under -race).
	if el := time.Since(start); el > 38*time.Second {
		t.Fatalf("a backlog of several windows took %s with linger 20s: full windows waited for more records", el)
	}
	assertSeqs(t, "observations", e.fs.seqs("observations"), seqs)
}

// Linger counts from when the oldest record was appended, not from when the
// forwarder got round to it: a record that already waited does not wait the
// whole linger again.
func TestLingerCountsFromAppend(t *testing.T) {
	e := newEnv(t)
	e.cfg.Batch.Linger = Duration(2 * time.Second)
	e.obs("FST1", 1)
	time.Sleep(1500 * time.Millisecond) // as if the previous window took that long
	start := time.Now()
	e.start()
	e.waitFor("the record", func() bool { return len(e.fs.seqs("observations")) == 1 })
	if el := time.Since(start); el > 1800*time.Millisecond {
		t.Fatalf("delivered %s after start: the record waited the whole linger again", el)
	}
}
