package mqtt

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigd/vigd/internal/testpeers"
)

// pubFlow publishes numbered QoS 1 messages on a few topics, one attempt per
// number, reconnecting on its own while the broker is away. It records
// which publishes the broker acknowledged, and when each attempt started.
type pubFlow struct {
	broker string
	stop   chan struct{}
	done   chan struct{}

	mu       sync.Mutex
	attempts int
	acked    map[string]time.Time // payload → when its publish started
}

func startFlow(t *testing.T, broker string) *pubFlow {
	f := &pubFlow{broker: broker, stop: make(chan struct{}), done: make(chan struct{}), acked: map[string]time.Time{}}
	go f.run()
	t.Cleanup(f.halt)
	return f
}

func (f *pubFlow) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

func (f *pubFlow) run() {
	defer close(f.done)
	var c paho.Client
	defer func() {
		if c != nil {
			c.Disconnect(50)
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-f.stop:
			return
		case <-time.After(3 * time.Millisecond):
		}
		if c == nil {
			o := paho.NewClientOptions().AddBroker(f.broker).SetClientID(fmt.Sprintf("flow-%d", time.Now().UnixNano())).
				SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
				SetConnectTimeout(time.Second).SetWriteTimeout(time.Second)
			nc := paho.NewClient(o)
			if tok := nc.Connect(); !tok.WaitTimeout(2*time.Second) || tok.Error() != nil {
				time.Sleep(30 * time.Millisecond)
				continue
			}
			c = nc
		}
		payload := fmt.Sprintf("m%05d", i)
		begun := time.Now()
		f.mu.Lock()
		f.attempts++
		f.mu.Unlock()
		tok := c.Publish(fmt.Sprintf("devices/f%d/up", i%4), 1, false, payload)
		if !tok.WaitTimeout(2*time.Second) || tok.Error() != nil || !c.IsConnectionOpen() {
			c.Disconnect(0)
			c = nil
			continue
		}
		f.mu.Lock()
		f.acked[payload] = begun
		f.mu.Unlock()
	}
}

func (f *pubFlow) ackedSince(t0 time.Time) (all, since []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, at := range f.acked {
		all = append(all, p)
		if at.After(t0) {
			since = append(since, p)
		}
	}
	sort.Strings(all)
	sort.Strings(since)
	return all, since
}

// restartFigures counts what the sink got of the acknowledged payloads.
func restartFigures(s *recSink, acked []string) (lost []string, dups int) {
	got := s.counts()
	for _, p := range acked {
		if got[p] == 0 {
			lost = append(lost, p)
		}
	}
	for _, n := range got {
		dups += n - 1
	}
	return lost, dups
}

// Mosquitto with persistence, stopped with SIGTERM (it saves sessions and
// queued messages) and started again while messages flow: the adapter
// reconnects to the kept session, and every message the broker
// acknowledged to the publisher is emitted at least once. Duplicates are
// allowed (at least once) and counted.
func TestBrokerRestartWithPersistenceLosesNothing(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{Persistence: true})
	cfg := baseConfig(t, mq.URL())
	name := adapterName(t, "")
	sink := newRecSink()
	r := start(t, name, cfg, sink)
	r.waitReady(t)

	fl := startFlow(t, mq.URL())
	for range 2 {
		since := time.Now()
		waitFor(t, 10*time.Second, "30 publishes", func() bool { _, n := fl.ackedSince(since); return len(n) >= 30 })
		mq.Stop()
		waitFor(t, 5*time.Second, "adapter to notice", func() bool { return !r.a.Status().OK })
		time.Sleep(300 * time.Millisecond)
		mq.Start()
		r.waitReady(t)
	}
	again := time.Now()
	waitFor(t, 10*time.Second, "50 publishes after the last restart", func() bool {
		_, since := fl.ackedSince(again)
		return len(since) >= 50
	})
	fl.halt()

	acked, _ := fl.ackedSince(time.Time{})
	deadline := time.Now().Add(15 * time.Second)
	lost, dups := restartFigures(sink, acked)
	for len(lost) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		lost, dups = restartFigures(sink, acked)
	}
	t.Logf("persistence + SIGTERM x2: %d publishes, %d acknowledged, %d emitted, %d lost, %d duplicates, %v reconnects",
		fl.attempts, len(acked), len(sink.snapshot()), len(lost), dups, reconnects(name, "connection_lost"))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged messages never emitted: %v", len(lost), head(lost, 10))
	}
	if reconnects(name, "connection_lost") < 2 {
		t.Errorf("reconnects{connection_lost} = %v, want >= 2", reconnects(name, "connection_lost"))
	}
}

// Mosquitto without persistence, killed (SIGKILL) and started again while
// messages flow: the new broker knows no session, the adapter reconnects
// and subscribes again. What the old broker held for the adapter and what
// the new one acknowledged before the adapter subscribed again is lost by
// the broker (counted, not asserted); every message whose publish began
// after the adapter was subscribed again is emitted, and so is every
// message acknowledged well before the kill.
func TestBrokerKillWithoutPersistenceResubscribes(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	cfg := baseConfig(t, mq.URL())
	name := adapterName(t, "")
	sink := newRecSink()
	r := start(t, name, cfg, sink)
	r.waitReady(t)

	fl := startFlow(t, mq.URL())
	waitFor(t, 10*time.Second, "50 publishes", func() bool { all, _ := fl.ackedSince(time.Time{}); return len(all) >= 50 })
	// What was acknowledged up to here has 200ms to reach the sink.
	safeBefore := time.Now()
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	mq.Kill()
	waitFor(t, 5*time.Second, "adapter to notice", func() bool { return !r.a.Status().OK })
	time.Sleep(300 * time.Millisecond)
	mq.Start()
	r.waitReady(t)
	ready := time.Now() // at or after the SUBACK: publishes begun later are routed to the adapter
	waitFor(t, 10*time.Second, "50 publishes after resubscription", func() bool {
		_, since := fl.ackedSince(ready)
		return len(since) >= 50
	})
	fl.halt()

	acked, afterReady := fl.ackedSince(ready)
	var beforeKill []string
	fl.mu.Lock()
	for p, at := range fl.acked {
		if at.Before(safeBefore) {
			beforeKill = append(beforeKill, p)
		}
	}
	fl.mu.Unlock()
	must := append(append([]string(nil), beforeKill...), afterReady...)
	deadline := time.Now().Add(10 * time.Second)
	lostMust, _ := restartFigures(sink, must)
	for len(lostMust) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		lostMust, _ = restartFigures(sink, must)
	}
	lostAll, dups := restartFigures(sink, acked)
	lostOld, lostNew := 0, 0
	fl.mu.Lock()
	for _, p := range lostAll {
		if fl.acked[p].Before(killed) {
			lostOld++
		} else {
			lostNew++
		}
	}
	fl.mu.Unlock()
	t.Logf("no persistence + SIGKILL: %d publishes, %d acknowledged, %d emitted, %d duplicates; lost by the broker: %d held by the killed broker, %d acknowledged by the new one before the adapter subscribed again; asserted: %d published after resubscription, %d before the kill window",
		fl.attempts, len(acked), len(sink.snapshot()), dups, lostOld, lostNew, len(afterReady), len(beforeKill))
	if len(afterReady) < 20 || len(beforeKill) < 20 {
		t.Errorf("flow too thin to judge: %d after resubscription, %d before the kill", len(afterReady), len(beforeKill))
	}
	if len(lostMust) > 0 {
		t.Errorf("%d messages the broker had routed to the adapter never emitted: %v", len(lostMust), head(lostMust, 10))
	}
}

func head(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
