//go:build linux

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
)

// TestKillNineLosesNothing is the delivery guarantee, proven the hard way:
// devices stream numbered lines over TCP, each waiting for its ACK (and
// resending the line when the connection breaks first), while vigd is
// killed with SIGKILL at random moments — while lines stream in, and while
// the backlog drains with the devices holding — and restarted with the
// same config and data folder. At the end every line a device has an ACK
// for must be at the simulator. Duplicates are told apart: a line the
// device sent again after a lost ACK may be there twice (vigd queued it,
// then died before the ACK left: the device cannot know), a copy of any
// other line is a batch sent twice, which must never happen (a re-sent
// batch keeps its batchId and the simulator answers 409).
//
// make soak runs it with 200 kills (VIGD_SOAK=1; VIGD_E2E_KILLS overrides).
func TestKillNineLosesNothing(t *testing.T) {
	kills := 20
	if soak() {
		kills = 200
	}
	kills = envInt("VIGD_E2E_KILLS", kills)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	t.Logf("kills %d, seed %d", kills, seed)
	start := time.Now()

	e := newEnv(t, []string{"-rate", "0"}, func(c *vigdConf) {
		c.MaxRecords = 20
		c.Linger = "50ms"
	})
	// A slow server, so that a backlog builds while lines stream in and
	// the kills with the devices holding land while it drains.
	e.sim.fault(t, sim.Fault{Kind: sim.FaultLatency, Latency: sim.Duration(40 * time.Millisecond)})
	e.vigd.start()
	e.vigd.waitUp(30 * time.Second)

	var pause atomic.Bool
	var devs []*ackDevice
	for i := range 3 {
		devs = append(devs, newAckDevice(fmt.Sprintf("dev%d", i+1), e.vigd.conf.TCP, 2*time.Millisecond, &pause))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() { d.run(ctx) })
	}
	stopDevices := sync.OnceFunc(func() { cancel(); wg.Wait() })
	defer stopDevices()

	var streaming, draining int
	var maxBacklog float64
	for k := 1; k <= kills; k++ {
		// Of every 10 kills, 7 while lines stream in, 3 while the devices
		// hold and the backlog drains.
		hold := k%10 >= 7
		pause.Store(hold)
		var delay time.Duration
		if rng.IntN(3) == 0 {
			delay = time.Duration(10+rng.IntN(190)) * time.Millisecond // often before it is even up
		} else {
			delay = time.Duration(200+rng.IntN(1800)) * time.Millisecond
		}
		time.Sleep(delay)
		if n, found, err := e.vigd.metric("vigd_queue_records"); err == nil && found {
			maxBacklog = max(maxBacklog, n)
		}
		e.vigd.kill()
		if hold {
			draining++
		} else {
			streaming++
		}
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
		e.vigd.start()
	}
	pause.Store(false)
	time.Sleep(500 * time.Millisecond)
	stopDevices()
	killPhase := time.Since(start)

	e.sim.clearFaults(t)
	e.vigd.waitUp(30 * time.Second)
	waitFor(t, 3*time.Minute, "vigd to deliver its backlog", e.vigd.drained)
	e.vigd.stop()

	// Count at the simulator, line by line.
	seen := map[string]map[int]int{} // device → line → copies stored
	var stored int
	e.sim.records(t, sim.Observations, func(r *simRec) {
		if seen[r.DeviceID] == nil {
			seen[r.DeviceID] = map[int]int{}
		}
		seen[r.DeviceID][int(r.Seq)]++
		stored++
	})
	alarms := map[string]int{}
	var storedAlarms int
	e.sim.records(t, sim.Alarms, func(r *simRec) { alarms[r.AlarmID]++; storedAlarms++ })
	counts := e.sim.counts(t)

	var sent, acked, lost, delivered, unackedDelivered, phantom int
	var resendLines, resendDup, batchDup, reconnects, naks int
	var lostAlarms, alarmResendDup, alarmBatchDup, wantAlarms int
	var lostList []string
	for _, d := range devs {
		f := d.figures()
		sent += f.sent
		acked += f.acked
		resendLines += len(f.resent)
		reconnects += f.reconnects
		naks += f.naks
		got := seen[d.name]
		for seq := 1; seq <= f.acked; seq++ {
			if got[seq] == 0 {
				lost++
				if len(lostList) < 20 {
					lostList = append(lostList, fmt.Sprintf("%s#%d", d.name, seq))
				}
			}
			if id := alarmID(d.name, seq); id != "" {
				wantAlarms++
				if alarms[id] == 0 {
					lostAlarms++
				}
			}
		}
		for seq, n := range got {
			switch {
			case seq < 1 || seq > f.sent:
				phantom += n
				continue
			case seq > f.acked:
				unackedDelivered++
			}
			delivered++
			if n > 1 {
				if f.resent[seq] > 0 {
					resendDup += n - 1
				} else {
					batchDup += n - 1
					t.Errorf("%s line %d stored %d times but sent once", d.name, seq, n)
				}
			}
			if id := alarmID(d.name, seq); id != "" && alarms[id] > 1 {
				if f.resent[seq] > 0 {
					alarmResendDup += alarms[id] - 1
				} else {
					alarmBatchDup += alarms[id] - 1
					t.Errorf("alarm %s stored %d times but its line was sent once", id, alarms[id])
				}
			}
		}
		delete(seen, d.name)
	}
	for dev := range seen {
		t.Errorf("records of an unknown device %q", dev)
	}
	t.Logf("kills %d survived (%d while lines streamed in, %d while the backlog drained; largest backlog seen %.0f records), vigd started %d times",
		kills, streaming, draining, maxBacklog, e.vigd.starts)
	t.Logf("lines: sent %d, ACKed %d, delivered %d distinct (%d of them sent but never ACKed), lost %d", sent, acked, delivered, unackedDelivered, lost)
	t.Logf("duplicates at the simulator before dedupe: %d observation records (%d stored for %d distinct lines); device-level resends: %d lines written again after a lost ACK, %d of their copies stored twice; batch-level duplicates: %d",
		resendDup+batchDup, stored, delivered, resendLines, resendDup, batchDup)
	t.Logf("alarms: %d expected for ACKed lines, %d stored (%d distinct), lost %d, duplicates from device resends %d, batch-level %d",
		wantAlarms, storedAlarms, len(alarms), lostAlarms, alarmResendDup, alarmBatchDup)
	t.Logf("simulator: %d requests answered 409 (a batch re-sent with its batchId, %d records refused as duplicates), by status %v",
		counts.Duplicates, counts.DuplicateRecords, counts.ByStatus)
	t.Logf("device reconnects %d, NAKs %d; kill phase %s, total %s", reconnects, naks, killPhase.Round(time.Second), time.Since(start).Round(time.Second))
	if lost > 0 {
		sort.Strings(lostList)
		t.Errorf("%d ACKed lines lost, e.g. %v\n%s", lost, lostList, tail(e.vigd.logPath, 40))
	}
	if lostAlarms > 0 {
		t.Errorf("%d alarms of ACKed lines lost", lostAlarms)
	}
	if phantom > 0 {
		t.Errorf("%d records of lines never sent", phantom)
	}
	if naks > 0 {
		t.Errorf("%d lines were NAKed (dead-lettered)", naks)
	}
	if acked < 1000 {
		t.Errorf("only %d lines ACKed: the devices hardly ran", acked)
	}
}
