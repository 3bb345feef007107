package hostile

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/testpeers"
)

// stallers opens n connections, from the given source addresses in turn,
// each sending one byte of a frame and then nothing.
func stallers(t *testing.T, addr string, sources []string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := dialFrom(sources[i%len(sources)], addr)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			_, _ = c.Write([]byte("x"))
			conns[i] = c
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("dial: %v", firstErr)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	return conns
}

// countOpen is how many of conns the server has not closed.
func countOpen(conns []net.Conn) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	sem := make(chan struct{}, 128)
	for _, c := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if !closedByPeer(c, 300*time.Millisecond) {
				mu.Lock()
				open++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return open
}

// 1,000 connections that send one byte and stall, against the default
// limits (max_connections 256, max_connections_per_ip 32, idle_timeout
// 10m): what saves a normal device is the per-address limit — the flood
// from one host gets 32 slots and the device on another host delivers at
// once. Then the same flood spread over 250 addresses (4 each, under any
// per-address limit) on a listener with idle_timeout 2s: all 256 slots
// fill and the device is refused, and what saves it is the idle timeout —
// the stalled connections are closed and the device's retry delivers.
func TestStalledConnectionsDoNotStopADevice(t *testing.T) {
	e := newEnv(t)
	e.startSim()
	httpAddr := testpeers.FreeAddr(t)
	perIP, idle := testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	cfg := e.baseConfig(httpAddr, "info") + fmt.Sprintf(`adapters:
  - name: perip
    kind: tcp
    decoder: counter
    listen: %s
    customer_id: c1
    identity: payload
    reply: "ACK\n"
    reply_rejected: "NAK\n"
  - name: idle
    kind: tcp
    decoder: counter
    listen: %s
    customer_id: c1
    identity: payload
    reply: "ACK\n"
    reply_rejected: "NAK\n"
    max_connections_per_ip: 0
    idle_timeout: 2s
    frame_timeout: 2s
`, perIP, idle)
	d := e.startVigd(cfg, httpAddr)
	base := rssKB(d.pid())
	w := watchRSS(d.pid())

	// Phase 1: one host floods the listener with default limits.
	flood := stallers(t, perIP, []string{"127.0.0.2"}, 1000)
	held := countOpen(flood)
	if held != 32 {
		t.Errorf("vigd holds %d of 1000 stalled connections from one address, want 32 (max_connections_per_ip)", held)
	}
	refused := d.metric("vigd_adapter_connections_refused_total", map[string]string{"adapter": "perip", "reason": "max_connections_per_ip"})
	if refused != 968 {
		t.Errorf("refused by max_connections_per_ip: %v, want 968", refused)
	}
	began := time.Now()
	dev, err := dialFrom("127.0.0.1", perIP)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	var lines []string
	for i := 1; i <= 5; i++ {
		lines = append(lines, fmt.Sprintf("pump-1,%d,%d", i, 10*i))
	}
	if err := sendLines(dev, lines...); err != nil {
		t.Fatalf("device during the flood: %v", err)
	}
	acked := time.Since(began)
	arrived := waitUntil(t, "the device's 5 observations at the simulator", 10*time.Second, func() bool { return e.accepted() >= 5 })
	rss1 := rssKB(d.pid())
	t.Logf("per-address flood: %d of 1000 stalled connections held, %v refused; device ACKed in %v, at the simulator %v after; RSS %d kB -> %d kB",
		held, refused, acked.Round(time.Millisecond), arrived.Round(time.Millisecond), base, rss1)

	// Phase 2: the flood from 250 addresses, 4 each.
	var sources []string
	for i := 1; i <= 250; i++ {
		sources = append(sources, fmt.Sprintf("127.0.1.%d", i))
	}
	floodAt := time.Now()
	spread := stallers(t, idle, sources, 1000)
	held2 := countOpen(spread)
	if held2 != 256 {
		t.Errorf("vigd holds %d of 1000 spread stalled connections, want 256 (max_connections)", held2)
	}
	// The device is refused while the slots are full...
	first, err := dialFrom("127.0.0.1", idle)
	if err != nil {
		t.Fatal(err)
	}
	if err := sendLines(first, "pump-2,1,5"); err == nil {
		t.Error("device served while 256 stalled connections held every slot")
	}
	first.Close()
	// ...and delivers once idle_timeout has closed the stalled ones.
	var delivered time.Duration
	for {
		c, err := dialFrom("127.0.0.1", idle)
		if err != nil {
			t.Fatal(err)
		}
		err = sendLines(c, "pump-2,1,5", "pump-2,2,6")
		c.Close()
		if err == nil {
			delivered = time.Since(floodAt)
			break
		}
		if time.Since(floodAt) > 15*time.Second {
			t.Fatalf("device still refused %v after the flood (idle_timeout 2s)", time.Since(floodAt))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if delivered < 1500*time.Millisecond {
		t.Errorf("delivered %v after the flood: before idle_timeout, so the flood did not fill the slots", delivered)
	}
	waitUntil(t, "7 observations at the simulator", 10*time.Second, func() bool { return e.accepted() >= 7 })
	if open := countOpen(spread); open != 0 {
		t.Errorf("%d stalled connections still open after idle_timeout", open)
	}
	peak := w.done()
	t.Logf("spread flood: %d of 1000 held (max_connections), device refused, then delivered %v after the flood (idle_timeout 2s); RSS peak %d kB (start %d kB)",
		held2, delivered.Round(time.Millisecond), peak, base)
	if peak > base+64<<10 {
		t.Errorf("RSS peak %d kB, %d kB over the start: 2,000 stalled connections should cost far less", peak, peak-base)
	}
	if got := e.accepted(); got != 7 {
		t.Errorf("simulator holds %d observations, want 7 (nothing from the stalled connections)", got)
	}
}
