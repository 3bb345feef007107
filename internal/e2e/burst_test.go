//go:build linux

package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
)

// rssLimitMiB is the memory a gateway gives vigd.
const rssLimitMiB = 64

// TestOutageBurst500k: the simulator is down for the whole of a burst of
// 500,000 lines (50 devices, 200 lines per write; 10,000 alarms among the
// records), then comes up. Everything arrives, alarms before any
// observation of the burst, each device's lines in order, and vigd's RSS
// stays under 64 MB throughout.
func TestOutageBurst500k(t *testing.T) {
	t.Parallel() // beside TestRetryAfterHonoured, which mostly waits
	if testing.Short() {
		t.Skip("skipped in -short: a 500,000-record burst")
	}
	outageBurst(t, envInt("VIGD_E2E_BURST", 500_000), 50)
}

// TestOutageDrain1M is the foundation issue's acceptance: 1,000,000
// records queued while the simulator is down drain completely once it is
// up, in order per device, with vigd's RSS under 64 MB. It takes several
// minutes on two cores, so it runs under `make soak` (VIGD_SOAK=1).
func TestOutageDrain1M(t *testing.T) {
	if !soak() {
		t.Skip("skipped: runs under make soak (VIGD_SOAK=1); TestOutageBurst500k is the quick version")
	}
	outageBurst(t, 1_000_000, 50)
}

func outageBurst(t *testing.T, total, ndev int) {
	start := time.Now()
	e := newEnv(t, []string{"-rate", "0", "-max-records", "1000"}, func(c *vigdConf) {
		c.MaxRecords = 1000
		c.Linger = "200ms"
		c.RPS = 200
		c.RetryMax = "1s"
	})
	e.sim.fault(t, sim.Fault{Kind: sim.FaultDown, Duration: sim.Duration(time.Hour)})
	e.vigd.start()
	e.vigd.waitUp(30 * time.Second)
	rss := sampleRSS(e.vigd.pid)
	defer rss.finish()
	pid := e.vigd.pid()
	cpu0 := cpuSeconds(pid)

	per := total / ndev
	devs := make([]*streamDevice, ndev)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range devs {
		devs[i] = &streamDevice{name: fmt.Sprintf("dev%02d", i+1), n: per, chunk: 200}
		wg.Go(func() { devs[i].run(ctx, e.vigd.conf.TCP) })
	}
	sendStart := time.Now()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Minute):
		cancel()
		<-done
		t.Fatal("burst not ACKed within 15 minutes")
	}
	sendTime := time.Since(sendStart)
	cpuSend := cpuSeconds(pid) - cpu0
	var acks int64
	for _, d := range devs {
		if err := d.failed(); err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		acks += d.acks.Load()
	}
	if acks != int64(per*ndev) {
		t.Fatalf("%d ACKs for %d lines", acks, per*ndev)
	}
	queued, _, _ := e.vigd.metric("vigd_queue_records")
	qbytes, _, _ := e.vigd.metric("vigd_queue_bytes")
	if c := e.sim.counts(t); c.Accepted[sim.Observations]+c.Accepted[sim.Alarms] != 0 {
		t.Fatalf("the simulator stored records while down: %v", c.Accepted)
	}
	ingestPeak := float64(rss.peak.Swap(0)) / 1024 // from here on: the drain's

	// Up again.
	mark := int64(0)
	if rs := e.sim.requests(t, 0); len(rs) > 0 {
		mark = rs[len(rs)-1].Seq
	}
	e.sim.clearFaults(t)
	drainStart := time.Now()
	want := int64(per * ndev)
	waitFor(t, 20*time.Minute, "the backlog to drain", func() bool {
		e.vigd.alive()
		c, err := e.sim.client.Counts(context.Background())
		return err == nil && c.Accepted[sim.Observations] >= want && e.vigd.drained()
	})
	drainTime := time.Since(drainStart)
	cpuDrain := cpuSeconds(pid) - cpu0 - cpuSend
	drainPeak := rss.finish()
	peak := max(ingestPeak, drainPeak)
	e.vigd.stop()

	// Every line, once, in order per device.
	last := map[string]int64{}
	n := map[string]int{}
	var disorder, outside int
	var lastObsAt, firstObsAt string
	e.sim.records(t, sim.Observations, func(r *simRec) {
		if r.Seq <= last[r.DeviceID] {
			if disorder < 5 {
				t.Errorf("%s: line %d stored after line %d", r.DeviceID, r.Seq, last[r.DeviceID])
			}
			disorder++
		}
		if r.Seq < 1 || r.Seq > int64(per) {
			outside++
		}
		last[r.DeviceID] = r.Seq
		n[r.DeviceID]++
		if firstObsAt == "" || r.ReceivedAt < firstObsAt {
			firstObsAt = r.ReceivedAt
		}
		lastObsAt = max(lastObsAt, r.ReceivedAt)
	})
	for _, d := range devs {
		if n[d.name] != per || last[d.name] != int64(per) {
			t.Errorf("%s: %d records stored, last line %d; want %d", d.name, n[d.name], last[d.name], per)
		}
	}
	if disorder > 0 || outside > 0 {
		t.Errorf("%d records out of order, %d of lines never sent", disorder, outside)
	}

	// Every alarm, once, all stored before the first observation.
	wantAlarms := map[string]bool{}
	for _, d := range devs {
		for seq := 1; seq <= per; seq++ {
			if id := alarmID(d.name, seq); id != "" {
				wantAlarms[id] = true
			}
		}
	}
	gotAlarms := map[string]int{}
	var lastAlarmAt string
	e.sim.records(t, sim.Alarms, func(r *simRec) {
		gotAlarms[r.AlarmID]++
		lastAlarmAt = max(lastAlarmAt, r.ReceivedAt)
	})
	var missingAlarms, dupAlarms int
	for id := range wantAlarms {
		if gotAlarms[id] == 0 {
			missingAlarms++
		}
	}
	for id, c := range gotAlarms {
		if !wantAlarms[id] {
			t.Errorf("unexpected alarm %s", id)
		}
		dupAlarms += c - 1
	}
	if missingAlarms > 0 || dupAlarms > 0 {
		t.Errorf("alarms: %d missing, %d duplicates (of %d)", missingAlarms, dupAlarms, len(wantAlarms))
	}
	if len(wantAlarms) > 0 && !(lastAlarmAt <= firstObsAt) {
		t.Errorf("an alarm was stored at %s, after the first observation (%s)", lastAlarmAt, firstObsAt)
	}
	// The same from the request log: no alarm request accepted after the
	// first accepted observation request.
	var firstObsReq, lastAlarmReq int64
	var requests, failedWhileUp int
	for _, r := range e.sim.requests(t, mark) {
		requests++
		ok := r.Status/100 == 2
		switch {
		case !ok:
			failedWhileUp++
		case r.Endpoint == sim.Observations && firstObsReq == 0:
			firstObsReq = r.Seq
		case r.Endpoint == sim.Alarms:
			lastAlarmReq = r.Seq
		}
	}
	if len(wantAlarms) > 0 && (lastAlarmReq == 0 || firstObsReq == 0 || lastAlarmReq > firstObsReq) {
		t.Errorf("request log: last accepted alarm request #%d, first accepted observation request #%d", lastAlarmReq, firstObsReq)
	}

	rate := float64(want) / drainTime.Seconds()
	t.Logf("%d records (%d devices × %d lines, %d alarms) ACKed in %s (%.0f lines/s, vigd CPU %.1fs) while the simulator was down; backlog %.0f records, %.1f MB on disk",
		want, ndev, per, len(wantAlarms), sendTime.Round(time.Millisecond), float64(want)/sendTime.Seconds(), cpuSend, queued, qbytes/1e6)
	t.Logf("drained in %s: %.0f records/s (vigd CPU %.1fs), %d requests after the simulator came up (%d not 2xx); last alarm stored %s, first observation %s",
		drainTime.Round(time.Millisecond), rate, cpuDrain, requests, failedWhileUp, lastAlarmAt, firstObsAt)
	t.Logf("vigd RSS peak %.1f MiB: %.1f MiB while the burst was queued, %.1f MiB while it drained (%d samples, every 100 ms); total %s",
		peak, ingestPeak, drainPeak, rss.samples.Load(), time.Since(start).Round(time.Second))
	if ingestPeak >= rssLimitMiB {
		t.Errorf("vigd RSS peaked at %.1f MiB while the burst was queued, want < %d MiB", ingestPeak, rssLimitMiB)
	}
	if drainPeak >= rssLimitMiB {
		t.Errorf("vigd RSS peaked at %.1f MiB while the backlog drained, want < %d MiB", drainPeak, rssLimitMiB)
	}
}
