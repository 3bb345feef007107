package mqtt

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/internal/testpeers"
)

// slowSink emits after a fixed delay (a disk that takes its time) and
// counts durable emits per payload.
func slowSink(d time.Duration) *recSink {
	s := newRecSink()
	s.fail = func(*adapters.Frame, int) error {
		time.Sleep(d)
		return nil
	}
	return s
}

func ackLostCount(name string) float64 { return value(mAckLost.WithLabelValues(name)) }
func ackedCount(name string) float64   { return value(mAcked.WithLabelValues(name)) }

// dupCount is the number of emits beyond the first of each payload.
func dupCount(s *recSink) (distinct, dups int) {
	for _, n := range s.counts() {
		distinct++
		dups += n - 1
	}
	return distinct, dups
}

// The tester's livelock: a broker that resends a large in-flight list at
// once (max_inflight_messages 0: no limit) into a sink slower than the
// burst, with max_buffered far below the burst. The resend burst is bounded
// by the broker's window, so the adapter must not pause for it: it holds
// the burst, emits it, acknowledges every message on the same connection,
// and nothing comes again.
func TestResendBurstDoesNotPause(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{Config: []string{"max_inflight_messages 0", "max_queued_messages 0"}})
	cfg := baseConfig(t, mq.URL())
	cfg.MaxInflight, cfg.MaxBuffered = 2, 5
	name := adapterName(t, "")

	first := start(t, name, cfg, newRecSink())
	first.waitReady(t) // the broker now keeps the session
	first.stop(t)

	// Queued while the adapter is away; sent all at once on the next
	// connection (no in-flight limit), as Mosquitto resends its in-flight
	// list after vigd was killed.
	const n = 300
	p := newPublisher(t, mq.URL())
	want := seqPayloads("burst-", n)
	var wg sync.WaitGroup
	for d := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := d; i < n; i += 3 {
				p.mustPub(t, "devices/r"+strconv.Itoa(d)+"/up", 1, false, want[i])
			}
		}()
	}
	wg.Wait()

	sink := slowSink(2 * time.Millisecond)
	began := time.Now()
	r := start(t, name, cfg, sink)
	waitPayloads(t, sink, 30*time.Second, want)
	drained := time.Since(began)
	distinct, dups := dupCount(sink)
	t.Logf("resend burst of %d (max_buffered 5, max_inflight 2, 2ms emits): drained in %s, %d distinct, %d duplicates, reconnects backpressure=%v lost=%v, acked %v, ack_lost %v",
		n, drained.Round(time.Millisecond), distinct, dups, reconnects(name, "backpressure"), reconnects(name, "connection_lost"),
		ackedCount(name), ackLostCount(name))
	if got := reconnects(name, "backpressure"); got != 0 {
		t.Errorf("reconnects{backpressure} = %v for a QoS 1 burst, want 0", got)
	}
	if dups != 0 {
		t.Errorf("%d duplicates without any reconnect, want 0", dups)
	}
	if got := ackLostCount(name); got != 0 {
		t.Errorf("ack_lost = %v on a connection that stayed up, want 0", got)
	}
	waitFor(t, 5*time.Second, "acked to count every message", func() bool { return ackedCount(name) == n })
	if !r.a.Status().OK {
		t.Errorf("status %+v after the burst, want OK", r.a.Status())
	}
	r.stop(t)

	// Every acknowledgement reached the broker: nothing comes again.
	again := newRecSink()
	r2 := start(t, name, cfg, again)
	r2.waitReady(t)
	p.mustPub(t, "devices/m/up", 1, false, "marker")
	waitPayloads(t, again, 5*time.Second, []string{"marker"})
	if got := again.counts(); len(got) != 1 {
		t.Errorf("after the burst was acknowledged, a new connection got %d payloads, want only the marker", len(got))
	}
}

// Messages emitted after the connection is gone cannot be acknowledged:
// they count as ack_lost, not acked, and the broker sends them again on the
// next connection (duplicates, at least once).
func TestAckAfterConnectionLostCountsAsLost(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{Persistence: true})
	cfg := baseConfig(t, mq.URL())
	cfg.MaxInflight = 2
	name := adapterName(t, "")
	sink := newRecSink()
	sink.gate = make(chan struct{})
	r := start(t, name, cfg, sink)
	r.waitReady(t)
	p := newPublisher(t, mq.URL())
	want := seqPayloads("lost-", 8)
	for i, w := range want {
		p.mustPub(t, "devices/l"+strconv.Itoa(i%2)+"/up", 1, false, w)
	}
	waitFor(t, 5*time.Second, "8 held", func() bool { return unackedGauge(name) == 8 })
	p.close()
	mq.Stop() // SIGTERM: the session and its in-flight messages are saved
	waitFor(t, 5*time.Second, "adapter to notice", func() bool { return !r.a.Status().OK })
	close(sink.gate)
	waitPayloads(t, sink, 10*time.Second, want)
	waitFor(t, 5*time.Second, "held messages done", func() bool { return unackedGauge(name) == 0 })
	if got, lost := ackedCount(name), ackLostCount(name); got != 0 || lost != 8 {
		t.Errorf("after the connection was gone: acked %v, ack_lost %v; want 0 and 8", got, lost)
	}
	mq.Start()
	waitFor(t, 15*time.Second, "the broker's resend", func() bool { return len(sink.snapshot()) >= 16 && ackedCount(name) == 8 })
	distinct, dups := dupCount(sink)
	t.Logf("held through a broker restart: %d distinct, %d duplicates, acked %v, ack_lost %v", distinct, dups, ackedCount(name), ackLostCount(name))
	if distinct != 8 || dups != 8 {
		t.Errorf("%d distinct, %d duplicates; want 8 and 8 (each held message emitted, then sent again)", distinct, dups)
	}
}

// The reconnect delay restarts from its minimum after a back-pressure
// pause, subscribed or not; only broker-side failures make it grow.
func TestResetsBackoff(t *testing.T) {
	for _, c := range []struct {
		name string
		end  sessionEnd
		want bool
	}{
		{"pause before suback", sessionEnd{reason: reasonBackpressure}, true},
		{"pause after suback", sessionEnd{reason: reasonBackpressure, subscribed: true}, true},
		{"lost after suback", sessionEnd{reason: reasonLost, subscribed: true}, true},
		{"lost before suback", sessionEnd{reason: reasonLost}, false},
		{"connect failed", sessionEnd{reason: reasonConnect}, false},
		{"emit failed", sessionEnd{reason: reasonEmit, subscribed: true}, false},
		{"subscribe refused", sessionEnd{reason: reasonSubscribe, subscribed: true}, false},
		{"silence", sessionEnd{reason: reasonSilence, subscribed: true}, true},
	} {
		if got := resetsBackoff(c.end); got != c.want {
			t.Errorf("%s: resetsBackoff = %v, want %v", c.name, got, c.want)
		}
	}
}
