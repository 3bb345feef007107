package forwarder

import (
	"fmt"
	"sync"
	"testing"
	"time"
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
