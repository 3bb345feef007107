//go:build linux

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
)

// mountTmpfs mounts a tmpfs of size on dir until the test ends (after
// vigd stopped). It skips, saying why, when mount is not permitted (not
// root, or a container without CAP_SYS_ADMIN); in CI it fails.
func mountTmpfs(t *testing.T, e *env, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := "cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): " + err.Error() + " " + strings.TrimSpace(string(out))
		if testpeers.InCI() {
			t.Fatal(msg)
		}
		t.Skip("skipped: " + msg)
	}
	t.Cleanup(func() {
		e.vigd.shutdown()
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

// TestDiskFull puts vigd's queues on a 2 MiB tmpfs that fills up while
// the simulator is down. vigd stays up, /readyz turns red with the reason,
// the device gets no more ACKs (it keeps resending); nothing acknowledged
// is lost. When space is freed (a ballast file removed, as an operator
// would) vigd takes data again without a restart, /readyz turns green, and
// once the simulator is back everything ACKed arrives.
func TestDiskFull(t *testing.T) {
	e := newEnv(t, []string{"-rate", "0"}, func(c *vigdConf) { c.SegmentBytes = 64 << 10 })
	qdir := filepath.Join(e.vigd.conf.DataDir, "queue")
	mountTmpfs(t, e, qdir, "2m")
	// The ballast leaves about 600 KB for the queues.
	ballast := filepath.Join(qdir, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 1400<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	e.sim.fault(t, sim.Fault{Kind: sim.FaultDown, Duration: sim.Duration(time.Hour)})
	e.vigd.start()
	e.vigd.waitUp(30 * time.Second)
	if code, body, _ := e.vigd.get("/readyz"); code != 200 {
		t.Fatalf("/readyz %d before the disk filled:\n%s", code, body)
	}

	dev := newAckDevice("dev1", e.vigd.conf.TCP, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { dev.run(ctx) })
	stopDev := sync.OnceFunc(func() { cancel(); wg.Wait() })
	defer stopDev()

	// Full: /readyz says so, with the reason.
	var body string
	waitFor(t, 2*time.Minute, "/readyz to report the full disk", func() bool {
		e.vigd.alive()
		var code int
		code, body, _ = e.vigd.get("/readyz")
		return code == 503
	})
	t.Logf("/readyz 503 after %d lines ACKed:\n%s", dev.figures().acked, strings.TrimSpace(body))
	if !strings.Contains(body, "FAIL queue/") || !strings.Contains(body, "no space left on device") {
		t.Errorf("/readyz does not name the queue and the full disk:\n%s", body)
	}
	// Slowed: no ACK for 3 s while the device keeps trying; vigd alive.
	before := dev.figures()
	time.Sleep(3 * time.Second)
	after := dev.figures()
	e.vigd.alive()
	if code, _, err := e.vigd.get("/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz %d %v while the disk is full", code, err)
	}
	if after.acked != before.acked {
		t.Errorf("lines ACKed while the disk was full: %d → %d", before.acked, after.acked)
	}
	appendErrs, _, _ := e.vigd.metric("vigd_queue_append_errors_total")
	t.Logf("disk full: %d lines ACKed, no ACK for 3 s, the device reconnected %d times to resend line %d; %.0f failed appends counted",
		after.acked, after.reconnects-before.reconnects, after.acked+1, appendErrs)
	if after.reconnects == before.reconnects {
		t.Errorf("the device was not refused while the disk was full (no reconnect in 3 s)")
	}
	if appendErrs == 0 {
		t.Errorf("vigd_queue_append_errors_total is 0")
	}

	// Space freed: vigd takes data again, without a restart.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitFor(t, time.Minute, "ACKs again after space was freed", func() bool { return dev.figures().acked > after.acked+100 })
	waitFor(t, 30*time.Second, "/readyz green again", func() bool {
		code, b, _ := e.vigd.get("/readyz")
		body = b
		return code == 200
	})
	t.Logf("space freed: ACKs again and /readyz 200 after %s, same process (%d start)", time.Since(freed).Round(time.Millisecond), e.vigd.starts)
	if e.vigd.starts != 1 {
		t.Errorf("vigd was restarted")
	}

	// Back up: everything ACKed arrives.
	stopDev()
	e.sim.clearFaults(t)
	waitFor(t, 2*time.Minute, "vigd to deliver its backlog", e.vigd.drained)
	e.vigd.stop()
	f := dev.figures()
	got := map[int]int{}
	e.sim.records(t, sim.Observations, func(r *simRec) { got[int(r.Seq)]++ })
	lost, dups := 0, 0
	for seq := 1; seq <= f.acked; seq++ {
		if got[seq] == 0 {
			lost++
		}
	}
	for seq, n := range got {
		if n > 1 && f.resent[seq] == 0 {
			dups += n - 1
		}
	}
	t.Logf("delivered: %d ACKed lines, %d stored, lost %d, batch-level duplicates %d, lines resent by the device %d",
		f.acked, len(got), lost, dups, len(f.resent))
	if lost > 0 || dups > 0 {
		t.Errorf("%d ACKed lines lost, %d duplicates of lines sent once", lost, dups)
	}
}
