package ops

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/testpeers"
)

// TestNotifyLifecycle plays systemd for a Type=notify service with
// WatchdogSec: vigd says READY=1 once it listens, pings WATCHDOG=1 while
// idle and while delivering, reports the backlog and the last delivery in
// STATUS=, and says STOPPING=1 on SIGTERM before it exits 0.
func TestNotifyLifecycle(t *testing.T) {
	w := newWorld(t)
	httpAddr, tcpAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	cfg := w.writeConfig(conf{HTTP: httpAddr, Adapters: tcpAdapter("devices", tcpAddr)})
	v := w.startVigd(cfg, httpAddr, runOpts{watchdog: 900 * time.Millisecond})
	toReady := v.waitReady()
	t.Logf("start to READY=1: %s", toReady.Round(time.Millisecond))

	// READY comes once everything listens: the adapter takes a frame at
	// once, and /readyz answers.
	d := dial(t, tcpAddr)
	const n = 20
	for i := 1; i <= n; i++ {
		d.mustSend(t, csv("dev1", i), "ACK")
	}
	waitFor(t, 20*time.Second, "20 observations at the simulator", func() bool { return len(w.observations(t)) == n })

	ms := v.notify.all()
	ready := -1
	for i, m := range ms {
		if m.has("READY=1") {
			ready = i
			break
		}
	}
	for i := 0; i < ready; i++ {
		if ms[i].has("WATCHDOG=1") {
			t.Fatalf("WATCHDOG=1 before READY=1:\n%s", v.notify.dump())
		}
	}
	// STATUS after the delivery: nothing left, and when it was delivered.
	i := v.notify.wait(t, ready, 10*time.Second, "STATUS=", func(m notifyMsg) bool {
		s := m.get("STATUS=")
		return strings.Contains(s, "backlog 0 records") && strings.Contains(s, "last delivery ")
	})
	st := v.notify.all()[i].get("STATUS=")
	t.Logf("STATUS=%s", st)
	if !strings.Contains(st, "forwarder idle") && !strings.Contains(st, "forwarder sending") {
		t.Errorf("STATUS does not say what the forwarder does: %q", st)
	}
	// Pings go on while idle: at least three more after the delivery.
	from := len(v.notify.all())
	for k := 0; k < 3; k++ {
		from = v.notify.wait(t, from, 5*time.Second, "WATCHDOG=1", nil) + 1
	}
	time.Sleep(time.Second)
	t.Logf("idle RSS after %d frames: %d KiB", n, v.rssKiB())

	before := len(v.notify.all())
	took := v.stop()
	t.Logf("SIGTERM to exit: %s", took.Round(time.Millisecond))
	stopping := -1
	for i, m := range v.notify.all() {
		if i >= before && m.has("STOPPING=1") {
			stopping = i
			break
		}
	}
	if stopping < 0 {
		t.Fatalf("no STOPPING=1 after SIGTERM:\n%s", v.notify.dump())
	}
	if !strings.Contains(v.log(), "msg=stopped") {
		t.Errorf("log has no final \"stopped\" line:\n%s", tail(v.log(), 10))
	}
}

// TestWatchdogStopsWhenForwarderStuck wedges the forwarder on purpose: the
// eventstore is a TCP listener that accepts and never answers, and
// forwarder.timeout is an hour. The watchdog pings stop (so systemd would
// restart vigd) while STATUS goes on, saying why; an idle forwarder before
// that had been pinging happily.
func TestWatchdogStopsWhenForwarderStuck(t *testing.T) {
	w := newWorld(t)
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		conns    []net.Conn
		accepted = make(chan time.Time, 16)
		done     = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			accepted <- time.Now()
		}
	}()
	t.Cleanup(func() {
		hang.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})

	httpAddr, tcpAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	cfg := w.writeConfig(conf{HTTP: httpAddr, URL: "http://" + hang.Addr().String(), Timeout: "1h",
		Adapters: tcpAdapter("devices", tcpAddr)})
	const wd = 1500 * time.Millisecond
	v := w.startVigd(cfg, httpAddr, runOpts{watchdog: wd})
	v.waitReady()
	// Idle: pings.
	from := 0
	for k := 0; k < 3; k++ {
		from = v.notify.wait(t, from, 5*time.Second, "WATCHDOG=1", nil) + 1
	}

	d := dial(t, tcpAddr)
	d.mustSend(t, csv("dev1", 1), "ACK")
	var wedgedAt time.Time
	select {
	case wedgedAt = <-accepted:
	case <-time.After(15 * time.Second):
		t.Fatal("the forwarder never connected to the eventstore")
	}
	// After the stall (one watchdog interval) plus one tick, no more pings;
	// watch for three more intervals.
	time.Sleep(wd + wd/3 + 200*time.Millisecond)
	cut := len(v.notify.all())
	time.Sleep(3 * wd)
	v.alive()
	after := v.notify.all()[cut:]
	status, stuck := 0, 0
	for _, m := range after {
		if m.has("WATCHDOG=1") {
			t.Fatalf("WATCHDOG=1 at %s, %s after the forwarder wedged:\n%s",
				m.at.Format("15:04:05.000"), m.at.Sub(wedgedAt).Round(time.Millisecond), v.notify.dump())
		}
		if m.has("STATUS=") {
			status++
			if strings.Contains(m.get("STATUS="), "STUCK: forwarder loop without progress") {
				stuck++
			}
		}
	}
	if status < 5 || stuck != status {
		t.Fatalf("STATUS while wedged: %d messages, %d saying STUCK; want >= 5, all:\n%s", status, stuck, v.notify.dump())
	}
	if !strings.Contains(v.log(), "pipeline stuck; withholding watchdog pings") {
		t.Errorf("the log does not say the pings are withheld:\n%s", tail(v.log(), 10))
	}
	m := v.scrape(t)
	if n, _ := m.get("vigd_watchdog_withheld_total"); n < 5 {
		t.Errorf("vigd_watchdog_withheld_total = %v, want >= 5", n)
	}
	// systemd would now send SIGABRT and restart; a wedged request makes
	// the graceful stop wait, so end it here.
	_ = v.cmd.Process.Kill()
	<-v.done
}
