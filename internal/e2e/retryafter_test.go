//go:build linux

package e2e

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
)

// TestRetryAfterHonoured: the observations endpoint answers 429 with
// Retry-After: 3 eight times in a row, then 503 with Retry-After: 2 eight
// times (about 40 s of refusal), while a device keeps sending. vigd's own
// backoff is capped at 1 s, so only honouring Retry-After keeps it away.
// The simulator's request log must show no request to the endpoint sooner
// than Retry-After after a refusal, and every ACKed line must arrive.
func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel() // mostly waiting: runs beside the other long test
	if testing.Short() {
		t.Skip("skipped in -short: 40 s of refusals")
	}
	e := newEnv(t, []string{"-rate", "0"}, func(c *vigdConf) { c.RetryMax = "1s" })
	e.vigd.start()
	e.vigd.waitUp(30 * time.Second)
	dev := newAckDevice("dev1", e.vigd.conf.TCP, 20*time.Millisecond, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { dev.run(ctx) })
	stopDev := sync.OnceFunc(func() { cancel(); wg.Wait() })
	defer stopDev()
	waitFor(t, 30*time.Second, "first lines delivered", func() bool {
		c := e.sim.counts(t)
		return c.Accepted[sim.Observations] > 10
	})

	start := time.Now()
	faults := []struct {
		status int
		ra     string
		count  int
	}{{429, "3", 8}, {503, "2", 8}}
	for _, f := range faults {
		id := e.sim.fault(t, sim.Fault{Kind: sim.FaultFail, Endpoint: sim.Observations, Status: f.status, RetryAfter: f.ra, Count: f.count})
		waitFor(t, 2*time.Minute, fmt.Sprintf("%d × %d answered", f.count, f.status), func() bool {
			fs, err := e.sim.client.Faults(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range fs {
				if x.ID == id {
					return false
				}
			}
			return true // a fail fault goes away once it has fired Count times
		})
	}
	refused := time.Since(start)
	time.Sleep(time.Second)
	stopDev()
	waitFor(t, time.Minute, "vigd to deliver its backlog", e.vigd.drained)
	e.vigd.stop()

	// From the request log: the gap after each refusal.
	type gap struct {
		status int
		ra, d  time.Duration
	}
	var gaps []gap
	var prev *sim.RequestLog
	var prevAt time.Time
	for _, r := range e.sim.requests(t, 0) {
		if r.Endpoint != sim.Observations {
			continue
		}
		at, err := time.Parse(sim.TimeFormat, r.Time)
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil && prev.RetryAfter != "" && (prev.Status == 429 || prev.Status == 503) {
			secs, _ := strconv.ParseFloat(prev.RetryAfter, 64)
			gaps = append(gaps, gap{prev.Status, time.Duration(secs * float64(time.Second)), at.Sub(prevAt)})
		}
		r := r
		prev, prevAt = &r, at
	}
	want := 0
	for _, f := range faults {
		want += f.count
	}
	if len(gaps) != want {
		t.Errorf("%d refusals followed by a request in the log, want %d", len(gaps), want)
	}
	minExcess, maxExcess := time.Duration(math.MaxInt64), time.Duration(0)
	var sum time.Duration
	for _, g := range gaps {
		// Log times are in milliseconds: allow 1 ms of rounding.
		if g.d < g.ra-time.Millisecond {
			t.Errorf("request %s after a %d with Retry-After %s", g.d, g.status, g.ra)
		}
		minExcess = min(minExcess, g.d-g.ra)
		maxExcess = max(maxExcess, g.d-g.ra)
		sum += g.d - g.ra
	}
	f := dev.figures()
	got := map[int]int{}
	e.sim.records(t, sim.Observations, func(r *simRec) { got[int(r.Seq)]++ })
	lost, dups := 0, 0
	for seq := 1; seq <= f.acked; seq++ {
		if got[seq] == 0 {
			lost++
		}
		dups += max(got[seq]-1, 0)
	}
	if len(gaps) > 0 {
		t.Logf("%d refusals (8 × 429 Retry-After 3, 8 × 503 Retry-After 2) over %s; the next request came %s to %s after Retry-After (mean %s)",
			len(gaps), refused.Round(time.Millisecond), minExcess.Round(time.Millisecond), maxExcess.Round(time.Millisecond),
			(sum / time.Duration(len(gaps))).Round(time.Millisecond))
	}
	t.Logf("%d lines ACKed, %d stored, lost %d, duplicates %d", f.acked, len(got), lost, dups)
	if lost > 0 || dups > 0 {
		t.Errorf("%d ACKed lines lost, %d duplicates", lost, dups)
	}
}
