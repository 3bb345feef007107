//go:build linux

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
)

// TestGarbledSegment: vigd is killed with a backlog (the simulator is
// down), bytes in the middle of a sealed segment file are overwritten, and
// vigd is started again. It starts, the bad segment is in quarantine/,
// /metrics and the log say so, and once the simulator is up every record
// outside the garbled bytes arrives.
func TestGarbledSegment(t *testing.T) {
	e := newEnv(t, []string{"-rate", "0"}, func(c *vigdConf) { c.SegmentBytes = 64 << 10 })
	e.sim.fault(t, sim.Fault{Kind: sim.FaultDown, Duration: sim.Duration(time.Hour)})
	e.vigd.start()
	e.vigd.waitUp(30 * time.Second)

	const lines = 1000
	dev := newAckDevice("dev1", e.vigd.conf.TCP, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { dev.run(ctx) })
	waitFor(t, time.Minute, "1000 lines ACKed", func() bool { return dev.figures().acked >= lines })
	cancel()
	wg.Wait()
	acked := dev.figures().acked
	e.vigd.kill()

	qdir := filepath.Join(e.vigd.conf.DataDir, "queue", "data")
	segs, _ := filepath.Glob(filepath.Join(qdir, "*.seg"))
	sort.Strings(segs)
	if len(segs) < 3 {
		t.Fatalf("want at least 3 segments of 64 KiB, have %d", len(segs))
	}
	victim := segs[1] // sealed: a newer one follows
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	mid := len(b) / 2
	for i := mid; i < mid+40; i++ {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(victim, b, 0o640); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d lines ACKed; garbled 40 bytes at offset %d of %s (%d bytes, segment 2 of %d)", acked, mid, filepath.Base(victim), len(b), len(segs))

	e.vigd.start()
	e.vigd.waitUp(30 * time.Second)
	q, _ := filepath.Glob(filepath.Join(qdir, "quarantine", "*"))
	if len(q) != 1 || !strings.HasPrefix(filepath.Base(q[0]), filepath.Base(victim)) {
		t.Errorf("quarantine/ holds %v, want a copy of %s", q, filepath.Base(victim))
	}
	n, _, err := e.vigd.metric("vigd_queue_quarantined_segments_total", `queue="data"`)
	if err != nil || n != 1 {
		t.Errorf("vigd_queue_quarantined_segments_total{queue=\"data\"} = %v (%v), want 1", n, err)
	}
	logb, _ := os.ReadFile(e.vigd.logPath)
	var logLine string
	for _, l := range strings.Split(string(logb), "\n") {
		if strings.Contains(l, "garbled") && strings.Contains(l, filepath.Base(victim)) {
			logLine = l
		}
	}
	if logLine == "" {
		t.Errorf("no log line names the garbled segment:\n%s", tail(e.vigd.logPath, 20))
	}
	t.Logf("log: %s", logLine)

	e.sim.clearFaults(t)
	waitFor(t, time.Minute, "vigd to deliver its backlog", e.vigd.drained)
	e.vigd.stop()
	got := map[int]int{}
	e.sim.records(t, sim.Observations, func(r *simRec) { got[int(r.Seq)]++ })
	var missing []int
	for seq := 1; seq <= acked; seq++ {
		if got[seq] == 0 {
			missing = append(missing, seq)
		}
		if got[seq] > 1 {
			t.Errorf("line %d stored %d times", seq, got[seq])
		}
	}
	// 40 bytes touch one record, or two when they straddle a frame border.
	t.Logf("delivered %d of %d ACKed lines; lost with the garbled bytes: %v", len(got), acked, missing)
	if len(missing) < 1 || len(missing) > 2 || (len(missing) == 2 && missing[1] != missing[0]+1) {
		t.Errorf("missing lines %v: want the one or two records the garbled bytes hit", missing)
	}
}
