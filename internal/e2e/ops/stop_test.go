package ops

import (
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
)

// stoppedBacklog reads data_backlog from the last "stopped" log line.
func stoppedBacklog(t testing.TB, log string) int {
	t.Helper()
	re := regexp.MustCompile(`data_backlog=(\d+).*msg=stopped|msg=stopped.*data_backlog=(\d+)`)
	ms := re.FindAllStringSubmatch(log, -1)
	if len(ms) == 0 {
		t.Fatalf("no \"stopped\" line with data_backlog in the log:\n%s", tail(log, 15))
	}
	m := ms[len(ms)-1]
	n, _ := strconv.Atoi(m[1] + m[2])
	return n
}

// TestGracefulStopFlushes: SIGTERM right after the last ACK, with a slow
// eventstore (200ms a request). vigd stops taking input, sends what is
// queued within its flush deadline and exits 0; every frame is at the
// simulator when the process is gone.
func TestGracefulStopFlushes(t *testing.T) {
	w := newWorld(t)
	if _, err := w.sim.Client().InjectFault(context.Background(), sim.Fault{Kind: sim.FaultLatency, Latency: sim.Duration(200 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	httpAddr, tcpAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	cfg := w.writeConfig(conf{HTTP: httpAddr, Adapters: tcpAdapter("devices", tcpAddr)})
	v := w.startVigd(cfg, httpAddr, runOpts{})
	v.waitReady()
	d := dial(t, tcpAddr)
	const n = 40
	for i := 1; i <= n; i++ {
		d.mustSend(t, csv("dev1", i), "ACK")
	}
	took := v.stop()
	t.Logf("SIGTERM to exit with %d frames to flush through a 200ms server: %s", n, took.Round(time.Millisecond))
	got := seqsOf(w.observations(t), "dev1")
	if miss := missing(got, n); len(miss) > 0 {
		t.Fatalf("after the stop the simulator misses seqs %v", miss)
	}
	if b := stoppedBacklog(t, v.log()); b != 0 {
		t.Fatalf("stopped with data_backlog=%d, want 0", b)
	}
}

// TestGracefulStopKeepsTheRest: the eventstore answers 503. On SIGTERM vigd
// closes its listener at once (a device can no longer connect while it
// flushes), gives up after the flush deadline, exits 0 and keeps every
// record on disk; the next start delivers them, each once.
func TestGracefulStopKeepsTheRest(t *testing.T) {
	w := newWorld(t)
	c := w.sim.Client()
	if _, err := c.InjectFault(context.Background(), sim.Fault{Kind: sim.FaultDown, Mode: "503", Duration: sim.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	httpAddr, tcpAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	cfg := w.writeConfig(conf{HTTP: httpAddr, Timeout: "2s", Adapters: tcpAdapter("devices", tcpAddr)})
	v := w.startVigd(cfg, httpAddr, runOpts{})
	v.waitReady()
	d := dial(t, tcpAddr)
	const n = 30
	for i := 1; i <= n; i++ {
		d.mustSend(t, csv("dev1", i), "ACK")
	}
	before := len(v.notify.all())
	stopped := make(chan time.Duration, 1)
	go func() {
		t0 := time.Now()
		_ = v.signal(syscall.SIGTERM, 30*time.Second)
		stopped <- time.Since(t0)
	}()
	v.notify.wait(t, before, 10*time.Second, "STOPPING=1", nil)
	// Input stops first: the listener goes while the flush goes on.
	refused := false
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !v.exited() {
		conn, err := net.DialTimeout("tcp", tcpAddr, time.Second)
		if err != nil {
			refused = errRefused(err)
			break
		}
		conn.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if !refused {
		t.Fatalf("the tcp adapter still took connections during the flush (exited: %v)", v.exited())
	}
	if v.exited() {
		t.Fatal("vigd exited before the flush deadline although the server is down")
	}
	took := <-stopped
	if v.err != nil {
		t.Fatalf("vigd exit: %v\n%s", v.err, tail(v.log(), 20))
	}
	t.Logf("SIGTERM to exit with the server down: %s (flush deadline: forwarder.timeout 2s)", took.Round(time.Millisecond))
	if b := stoppedBacklog(t, v.log()); b != n {
		t.Fatalf("stopped with data_backlog=%d, want %d (all kept)", b, n)
	}
	if got := w.observations(t); len(got) != 0 {
		t.Fatalf("the simulator stored %d observations while down", len(got))
	}

	// The next start delivers what was kept, each record once.
	if err := c.ClearFaults(context.Background()); err != nil {
		t.Fatal(err)
	}
	v2 := w.startVigd(cfg, httpAddr, runOpts{})
	v2.waitReady()
	waitFor(t, 20*time.Second, "the kept records at the simulator", func() bool { return len(w.observations(t)) >= n })
	got := seqsOf(w.observations(t), "dev1")
	if miss := missing(got, n); len(miss) > 0 {
		t.Fatalf("after the restart the simulator misses seqs %v", miss)
	}
	for s, k := range got {
		if k != 1 {
			t.Errorf("seq %d stored %d times", s, k)
		}
	}
	v2.stop()
	if !strings.Contains(v2.log(), "queue opened") {
		t.Fatal("second start did not open the queue")
	}
}
