package mqtt

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/internal/testpeers"
)

// Frames carry the topic level as Identity, the topic's decoder (or the
// adapter's default), and the transport metadata.
func TestFrameIdentityDecoderMeta(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	cfg := baseConfig(t, mq.URL())
	cfg.Topics = []Topic{
		{Topic: "devices/+/up", QoS: 1, Decoder: "dev", Identity: Identity{From: IdentitySegment, Segment: 1}},
		{Topic: "sensors/#", QoS: 0, Identity: Identity{From: IdentitySegment, Segment: 2}},
		{Topic: "plain/up", QoS: 2, Decoder: "plain", Identity: Identity{From: IdentityPayload}},
	}
	sink := newRecSink()
	name := adapterName(t, "")
	r := start(t, name, cfg, sink)
	r.waitReady(t)
	if got := connectedGauge(name); got != 1 {
		t.Fatalf("vigd_mqtt_connected = %v, want 1", got)
	}

	p := newPublisher(t, mq.URL())
	p.mustPub(t, "devices/pump-7/up", 1, false, "a")
	p.mustPub(t, "sensors/site1/lvl-3/x", 1, false, "b") // subscribed at QoS 0: delivered at 0
	p.mustPub(t, "plain/up", 2, false, "c")
	waitPayloads(t, sink, 5*time.Second, []string{"a", "b", "c"})

	byPayload := map[string]int{}
	frames := sink.snapshot()
	for i, f := range frames {
		byPayload[string(f.Payload)] = i
	}
	type want struct {
		source, identity, decoder, qos string
	}
	for payload, w := range map[string]want{
		"a": {"devices/pump-7/up", "pump-7", "dev", "1"},
		"b": {"sensors/site1/lvl-3/x", "lvl-3", "", "0"}, // the pipeline applies the adapter's decoder
		"c": {"plain/up", "", "plain", "2"},
	} {
		f := frames[byPayload[payload]]
		if f.Adapter != name || f.Kind != "mqtt" || f.Offset != -1 || f.CustomerID != "" {
			t.Errorf("%s: adapter/kind/offset/customer = %q/%q/%d/%q", payload, f.Adapter, f.Kind, f.Offset, f.CustomerID)
		}
		if f.Source != w.source || f.Identity != w.identity || f.Decoder != w.decoder {
			t.Errorf("%s: source/identity/decoder = %q/%q/%q, want %q/%q/%q",
				payload, f.Source, f.Identity, f.Decoder, w.source, w.identity, w.decoder)
		}
		if f.Meta["topic"] != w.source || f.Meta["qos"] != w.qos || f.Meta["retained"] != "false" {
			t.Errorf("%s: meta = %v, want topic %s qos %s retained false", payload, f.Meta, w.source, w.qos)
		}
		if w.qos != "0" && (f.Meta["message_id"] == "" || f.Meta["message_id"] == "0") {
			t.Errorf("%s: message_id = %q for qos %s", payload, f.Meta["message_id"], w.qos)
		}
		if f.Received.IsZero() || f.Received.Location() != time.UTC {
			t.Errorf("%s: received %v, want UTC time", payload, f.Received)
		}
	}
	if n := len(frames); n != 3 {
		t.Errorf("%d frames, want 3", n)
	}
}

// A persistent session (clean_session false, same client id) keeps QoS 1
// messages published while the adapter is stopped; the next Run emits them
// all, acknowledges them, and a third Run gets none of them again.
func TestMessagesWhileStoppedArriveAfterStart(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	cfg := baseConfig(t, mq.URL())
	name := adapterName(t, "")

	first := start(t, name, cfg, newRecSink())
	first.waitReady(t) // the broker now holds the session and its subscription
	first.stop(t)

	p := newPublisher(t, mq.URL())
	want := seqPayloads("offline-", 50)
	for i, w := range want {
		p.mustPub(t, "devices/d"+strconv.Itoa(i%5)+"/up", 1, false, w)
	}

	sink := newRecSink()
	second := start(t, name, cfg, sink)
	waitPayloads(t, sink, 10*time.Second, want)
	second.stop(t)
	dups := 0
	for _, n := range sink.counts() {
		dups += n - 1
	}
	t.Logf("offline: published 50, emitted %d distinct, %d duplicates", len(sink.counts()), dups)
	if len(sink.counts()) != 50 {
		t.Errorf("emitted %d distinct payloads, want 50", len(sink.counts()))
	}

	// Everything was acknowledged: a new connection gets nothing again.
	again := newRecSink()
	third := start(t, name, cfg, again)
	third.waitReady(t)
	p.mustPub(t, "devices/marker/up", 1, false, "marker")
	waitPayloads(t, again, 5*time.Second, []string{"marker"})
	if got := again.counts(); len(got) != 1 {
		t.Errorf("after acknowledging, a new connection got %d payloads (%v), want only the marker", len(got), got)
	}
}

// An Emit failing with a non-durable error leaves the QoS 1 message
// unacknowledged; the adapter reconnects and the broker sends it again.
// A RejectedError is durable: acknowledged at once, never sent again.
func TestNonDurableEmitIsRedelivered(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	cfg := baseConfig(t, mq.URL())
	name := adapterName(t, "")
	sink := newRecSink()
	sink.fail = func(f *adapters.Frame, attempt int) error {
		switch {
		case string(f.Payload) == "flaky" && attempt == 1:
			return errors.New("disk full")
		case string(f.Payload) == "bad":
			return &adapters.RejectedError{Reason: "no decoder"}
		}
		return nil
	}
	r := start(t, name, cfg, sink)
	r.waitReady(t)
	p := newPublisher(t, mq.URL())
	p.mustPub(t, "devices/d1/up", 1, false, "bad")
	p.mustPub(t, "devices/d1/up", 1, false, "flaky")
	p.mustPub(t, "devices/d2/up", 1, false, "after")
	waitPayloads(t, sink, 10*time.Second, []string{"flaky", "after"})

	sink.mu.Lock()
	attempts := map[string]int{"flaky": sink.attempts["flaky"], "bad": sink.attempts["bad"]}
	sink.mu.Unlock()
	if attempts["flaky"] < 2 {
		t.Errorf("flaky emitted %d times, want a failed attempt and a redelivered one", attempts["flaky"])
	}
	if got := reconnects(name, "emit_error"); got < 1 {
		t.Errorf("vigd_mqtt_reconnects_total{reason=emit_error} = %v, want >= 1", got)
	}
	if attempts["bad"] != 1 {
		t.Errorf("rejected frame attempted %d times, want 1 (dead-lettered is durable)", attempts["bad"])
	}
	r.stop(t)

	// Both were acknowledged in the end: nothing comes again.
	again := newRecSink()
	r2 := start(t, name, cfg, again)
	r2.waitReady(t)
	p.mustPub(t, "devices/m/up", 1, false, "marker")
	waitPayloads(t, again, 5*time.Second, []string{"marker"})
	again.mu.Lock()
	defer again.mu.Unlock()
	if len(again.attempts) != 1 {
		t.Errorf("after acknowledging, a new connection got %v, want only the marker", again.attempts)
	}
}

// A QoS 0 message is never sent again by the broker, so a failed Emit is
// retried in place (no reconnect).
func TestNonDurableEmitQoS0RetriedInPlace(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	cfg := baseConfig(t, mq.URL())
	cfg.Topics[0].QoS = 0
	name := adapterName(t, "")
	sink := newRecSink()
	sink.fail = func(f *adapters.Frame, attempt int) error {
		if attempt == 1 {
			return errors.New("disk full")
		}
		return nil
	}
	r := start(t, name, cfg, sink)
	r.waitReady(t)
	newPublisher(t, mq.URL()).mustPub(t, "devices/d1/up", 0, false, "q0")
	waitPayloads(t, sink, 10*time.Second, []string{"q0"})
	if got := reconnects(name, "emit_error"); got != 0 {
		t.Errorf("reconnects{emit_error} = %v, want 0 for QoS 0", got)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.attempts["q0"] != 2 {
		t.Errorf("q0 attempted %d times, want 2", sink.attempts["q0"])
	}
}

// A sink that blocks: at most max_inflight messages are inside Emit, the
// broker's in-flight window (10 here) bounds what the adapter holds, the
// rest waits in the broker; after release nothing is missing.
func TestBackPressure(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{Config: []string{"max_inflight_messages 10"}})
	cfg := baseConfig(t, mq.URL())
	cfg.MaxInflight = 3
	name := adapterName(t, "")
	sink := newRecSink()
	sink.gate = make(chan struct{})
	r := start(t, name, cfg, sink)
	r.waitReady(t)

	p := newPublisher(t, mq.URL())
	want := seqPayloads("bp-", 40)
	for i, w := range want {
		p.mustPub(t, "devices/d"+strconv.Itoa(i%8)+"/up", 1, false, w)
	}
	waitFor(t, 5*time.Second, "3 emits in progress", func() bool { cur, _ := sink.concurrency(); return cur == 3 })
	time.Sleep(300 * time.Millisecond) // give more a chance to slip through
	cur, maxc := sink.concurrency()
	held := unackedGauge(name)
	t.Logf("blocked sink: %d in Emit (max %d), %v held by the adapter, 40 published", cur, maxc, held)
	if maxc > 3 {
		t.Errorf("%d concurrent emits, want <= max_inflight 3", maxc)
	}
	if held < 3 || held > 10 {
		t.Errorf("vigd_mqtt_unacked = %v, want between max_inflight 3 and the broker window 10", held)
	}
	if n := len(sink.snapshot()); n != 0 {
		t.Errorf("%d frames emitted through a closed gate", n)
	}
	if !r.a.Status().OK {
		t.Errorf("status %+v while only back-pressured, want OK", r.a.Status())
	}

	close(sink.gate)
	waitPayloads(t, sink, 10*time.Second, want)
	if _, maxc := sink.concurrency(); maxc > 3 {
		t.Errorf("%d concurrent emits after release, want <= 3", maxc)
	}
	waitFor(t, 5*time.Second, "unacked back to 0", func() bool { return unackedGauge(name) == 0 })
}

// Messages of one topic are emitted in the order published; different
// topics interleave. The sink's random delays would reorder handler
// goroutines without the per-topic lanes.
func TestPerTopicOrder(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{Config: []string{"max_inflight_messages 40"}})
	cfg := baseConfig(t, mq.URL())
	cfg.MaxInflight = 8
	name := adapterName(t, "")
	sink := newRecSink()
	rnd := rand.New(rand.NewPCG(1, 2))
	var rndMu sync.Mutex
	sink.fail = func(*adapters.Frame, int) error {
		rndMu.Lock()
		d := time.Duration(rnd.IntN(1500)) * time.Microsecond
		rndMu.Unlock()
		time.Sleep(d)
		return nil
	}
	r := start(t, name, cfg, sink)
	r.waitReady(t)

	p := newPublisher(t, mq.URL())
	const topics, per = 4, 60
	var toks []paho.Token
	var want []string
	for i := range per {
		for d := range topics {
			payload := fmt.Sprintf("%d:%03d", d, i)
			want = append(want, payload)
			toks = append(toks, p.c.Publish(fmt.Sprintf("devices/d%d/up", d), 1, false, payload))
		}
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	waitPayloads(t, sink, 15*time.Second, want)
	last := map[string]string{}
	inversions := 0
	for _, f := range sink.snapshot() {
		if prev, ok := last[f.Source]; ok && string(f.Payload) < prev {
			inversions++
			if inversions <= 5 {
				t.Errorf("%s: %s emitted after %s", f.Source, f.Payload, prev)
			}
		}
		last[f.Source] = string(f.Payload)
	}
	if _, maxc := sink.concurrency(); maxc < 2 {
		t.Errorf("max %d concurrent emits: topics were not emitted concurrently", maxc)
	}
	if reconnects(name, "connection_lost") != 0 {
		t.Log("connection was lost during the test: order is only kept within one connection")
	}
}

// retained: ignore drops the retained replay at subscription (and
// acknowledges it); take emits it with meta retained=true.
func TestRetainedIgnoreAndTake(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	p := newPublisher(t, mq.URL())
	p.mustPub(t, "devices/r1/up", 1, true, "retained-1")

	for _, mode := range []string{RetainedIgnore, RetainedTake} {
		t.Run(mode, func(t *testing.T) {
			cfg := baseConfig(t, mq.URL())
			cfg.Retained = mode
			name := adapterName(t, "")
			sink := newRecSink()
			r := start(t, name, cfg, sink)
			r.waitReady(t)
			p.mustPub(t, "devices/r1/up", 1, false, "live-"+mode)
			waitPayloads(t, sink, 5*time.Second, []string{"live-" + mode})
			got := sink.counts()
			switch mode {
			case RetainedIgnore:
				if got["retained-1"] != 0 {
					t.Errorf("retained message emitted with retained: ignore")
				}
				if n := ignoredCount(name, "retained"); n != 1 {
					t.Errorf("vigd_mqtt_ignored_total{reason=retained} = %v, want 1", n)
				}
			case RetainedTake:
				if got["retained-1"] != 1 {
					t.Fatalf("retained message emitted %d times with retained: take, want 1", got["retained-1"])
				}
				for _, f := range sink.snapshot() {
					if string(f.Payload) == "retained-1" && f.Meta["retained"] != "true" {
						t.Errorf("retained frame meta %v, want retained=true", f.Meta)
					}
					if string(f.Payload) == "live-take" && f.Meta["retained"] != "false" {
						t.Errorf("live frame meta %v, want retained=false", f.Meta)
					}
				}
			}
		})
	}
}

// Two adapter instances on one shared subscription split the messages:
// each message reaches exactly one of them.
func TestSharedSubscriptionSplits(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	sinks := []*recSink{newRecSink(), newRecSink()}
	for i, s := range sinks {
		cfg := baseConfig(t, mq.URL())
		cfg.ClientID += "-" + strconv.Itoa(i)
		cfg.Topics = []Topic{{Topic: "$share/vigd/devices/+/up", QoS: 1, Decoder: "dev", Identity: Identity{From: IdentitySegment, Segment: 1}}}
		start(t, adapterName(t, strconv.Itoa(i)), cfg, s).waitReady(t)
	}
	p := newPublisher(t, mq.URL())
	want := seqPayloads("sh-", 60)
	for i, w := range want {
		p.mustPub(t, "devices/s"+strconv.Itoa(i%6)+"/up", 1, false, w)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		total := 0
		for _, s := range sinks {
			total += len(s.snapshot())
		}
		if total >= 60 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // would-be duplicates
	seen := map[string]int{}
	for i, s := range sinks {
		n := 0
		for _, f := range s.snapshot() {
			seen[string(f.Payload)]++
			n++
			if !strings.HasPrefix(f.Identity, "s") || f.Source != "devices/"+f.Identity+"/up" {
				t.Errorf("shared: identity %q from source %q", f.Identity, f.Source)
			}
		}
		t.Logf("instance %d got %d of 60", i, n)
		if n == 0 {
			t.Errorf("instance %d got nothing: the subscription was not shared", i)
		}
	}
	for _, w := range want {
		if seen[w] != 1 {
			t.Errorf("%s reached the instances %d times, want exactly 1", w, seen[w])
		}
	}
}

// No message for silence_timeout while connected: the adapter reconnects,
// counts it, and reports itself silent until a message comes.
func TestSilenceTimeoutReconnects(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	cfg := baseConfig(t, mq.URL())
	cfg.SilenceTimeout = 600 * time.Millisecond
	name := adapterName(t, "")
	sink := newRecSink()
	r := start(t, name, cfg, sink)
	r.waitReady(t)
	waitFor(t, 5*time.Second, "silence reconnect", func() bool { return reconnects(name, "silence") >= 1 })
	st := r.a.Status()
	if st.OK || !strings.Contains(st.Detail, "silent") {
		t.Errorf("status after silence = %+v, want not OK and 'silent'", st)
	}
	// It reconnected: a message gets through and clears the silence.
	waitFor(t, 5*time.Second, "connected again", func() bool { return connectedGauge(name) == 1 })
	newPublisher(t, mq.URL()).mustPub(t, "devices/x/up", 1, false, "wake")
	waitPayloads(t, sink, 5*time.Second, []string{"wake"})
	waitFor(t, 2*time.Second, "status OK after a message", func() bool { return r.a.Status().OK })
}

// Registered kind: the loader finds "mqtt", its defaults, and New refuses a
// foreign config type.
func TestRegistered(t *testing.T) {
	k, ok := adapters.Lookup(Kind)
	if !ok {
		t.Fatal("kind mqtt not registered")
	}
	c, ok := k.NewConfig().(*Config)
	if !ok || c.Retained != RetainedIgnore || c.MaxInflight != DefaultMaxInflight || c.CleanSession {
		t.Fatalf("NewConfig = %#v", k.NewConfig())
	}
	if err := c.Validate(); err == nil {
		t.Error("defaults without brokers and topics validate")
	}
	c.Brokers = []string{"tcp://127.0.0.1:1"}
	c.Topics = []Topic{{Topic: "a/+", QoS: 1}}
	a, err := k.New("x", c, adapters.Env{})
	if err != nil || a == nil {
		t.Fatalf("New: %v", err)
	}
	if st := a.(adapters.StatusReporter).Status(); st.OK {
		t.Errorf("status before Run = %+v", st)
	}
}

// A QoS 0 flood into a blocked sink: once more than max_buffered messages
// wait, the adapter disconnects (the broker keeps the session and, with
// queue_qos0_messages, what arrives meanwhile) and connects again only
// when the backlog has reached the sink. Every message received is emitted.
func TestMaxBufferedPausesConnection(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{Config: []string{"queue_qos0_messages true"}})
	cfg := baseConfig(t, mq.URL())
	cfg.Topics[0].QoS = 0
	cfg.MaxInflight, cfg.MaxBuffered = 1, 5
	name := adapterName(t, "")
	sink := newRecSink()
	sink.gate = make(chan struct{})
	r := start(t, name, cfg, sink)
	r.waitReady(t)

	p := newPublisher(t, mq.URL())
	flood := seqPayloads("flood-", 40)
	for i, w := range flood {
		p.mustPub(t, "devices/q"+strconv.Itoa(i%4)+"/up", 0, false, w)
	}
	waitFor(t, 5*time.Second, "a back-pressure pause", func() bool { return reconnects(name, "backpressure") >= 1 })
	time.Sleep(300 * time.Millisecond) // it must stay away while the backlog waits
	if connectedGauge(name) != 0 || r.a.Status().OK {
		t.Fatalf("connected during the pause: gauge %v, status %+v", connectedGauge(name), r.a.Status())
	}
	held := unackedGauge(name)
	received := value(mMessages.WithLabelValues(name))
	late := seqPayloads("late-", 10)
	for i, w := range late {
		p.mustPub(t, "devices/q"+strconv.Itoa(i%4)+"/up", 0, false, w)
	}
	close(sink.gate)
	waitPayloads(t, sink, 10*time.Second, late) // kept by the broker during the pause
	r.waitReady(t)
	waitFor(t, 5*time.Second, "every received message emitted", func() bool {
		return value(mAcked.WithLabelValues(name)) == value(mMessages.WithLabelValues(name))
	})
	t.Logf("max_buffered 5: %v held at the pause, %v of 40 flood messages received before it, %d emitted in all",
		held, received, len(sink.snapshot()))
}

// Run cancelled while the sink blocks: Run returns, nothing in hand was
// acknowledged, and the next Run gets all of it from the kept session.
func TestStopWhileBlockedRedeliversOnNextRun(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	cfg := baseConfig(t, mq.URL())
	cfg.MaxInflight = 2
	name := adapterName(t, "")
	blocked := newRecSink()
	blocked.gate = make(chan struct{}) // never opened: Emit ends with ctx
	r := start(t, name, cfg, blocked)
	r.waitReady(t)
	p := newPublisher(t, mq.URL())
	want := seqPayloads("held-", 12)
	for i, w := range want {
		p.mustPub(t, "devices/h"+strconv.Itoa(i%3)+"/up", 1, false, w)
	}
	waitFor(t, 5*time.Second, "2 emits in progress", func() bool { cur, _ := blocked.concurrency(); return cur == 2 })
	stopped := time.Now()
	r.stop(t)
	if d := time.Since(stopped); d > 3*time.Second {
		t.Errorf("Run took %s to return with a blocked sink", d)
	}
	if st := r.a.Status(); st.OK || st.Detail != "not running" {
		t.Errorf("status after Run = %+v", st)
	}

	sink := newRecSink()
	start(t, name, cfg, sink)
	waitPayloads(t, sink, 10*time.Second, want)
}
