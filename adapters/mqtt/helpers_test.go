package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/internal/testpeers"
)

// syncBuf collects log output; printed when the test fails.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLog returns an Entry whose output is shown when t fails.
func testLog(t *testing.T) (*logrus.Entry, *syncBuf) {
	buf := &syncBuf{}
	l := logrus.New()
	l.SetOutput(buf)
	l.SetLevel(logrus.DebugLevel)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("adapter log:\n%s", buf.String())
		}
	})
	return l.WithFields(logrus.Fields{"component": "adapter", "name": t.Name(), "kind": Kind}), buf
}

var runSeq atomic.Int64

// adapterName is unique per test and run (-count), so metric children do
// not mix.
func adapterName(t *testing.T, suffix string) string {
	return fmt.Sprintf("%s%s-%d", strings.ReplaceAll(t.Name(), "/", "_"), suffix, runSeq.Add(1))
}

// baseConfig subscribes to devices/+/up at QoS 1, identity from level 1.
func baseConfig(t *testing.T, broker string) Config {
	c := *DefaultConfig()
	c.Brokers = []string{broker}
	c.ClientID = "vigd-test-" + strings.ReplaceAll(t.Name(), "/", "_")
	c.KeepAlive = 5 * time.Second
	c.ConnectTimeout = 3 * time.Second
	c.Topics = []Topic{{Topic: "devices/+/up", QoS: 1, Decoder: "dev", Identity: Identity{From: IdentitySegment, Segment: 1}}}
	return c
}

// recSink records what was emitted; fail (optional) decides an attempt's
// result; gate (optional) blocks every Emit until it is closed.
type recSink struct {
	mu       sync.Mutex
	frames   []adapters.Frame // durable ones, in emit order
	attempts map[string]int   // by payload
	cur, max int              // concurrent Emit calls
	fail     func(f *adapters.Frame, attempt int) error
	gate     chan struct{}
	changed  chan struct{}
}

func newRecSink() *recSink {
	return &recSink{attempts: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (s *recSink) Emit(ctx context.Context, f *adapters.Frame) error {
	s.mu.Lock()
	s.cur++
	if s.cur > s.max {
		s.max = s.cur
	}
	s.attempts[string(f.Payload)]++
	n := s.attempts[string(f.Payload)]
	gate := s.gate
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cur--
		s.mu.Unlock()
	}()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.fail != nil {
		if err := s.fail(f, n); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.mu.Lock()
	c := *f
	c.Payload = append([]byte(nil), f.Payload...)
	s.frames = append(s.frames, c)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

func (s *recSink) snapshot() []adapters.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]adapters.Frame(nil), s.frames...)
}

// counts maps payload → durable emits.
func (s *recSink) counts() map[string]int {
	out := map[string]int{}
	for _, f := range s.snapshot() {
		out[string(f.Payload)]++
	}
	return out
}

func (s *recSink) concurrency() (cur, max int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.max
}

// running is an adapter whose Run goroutine the test controls.
type running struct {
	a      *Adapter
	log    *syncBuf
	cancel context.CancelFunc
	done   chan error
}

// start builds and runs an adapter; it is stopped on cleanup (stop is
// idempotent).
func start(t *testing.T, name string, cfg Config, sink adapters.Sink) *running {
	t.Helper()
	log, buf := testLog(t)
	a, err := New(name, cfg, adapters.Env{Log: log, StateDir: t.TempDir()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{a: a, log: buf, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx, sink) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run returned %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancel")
	}
}

// waitReady waits until the adapter reports connected and subscribed.
func (r *running) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, 10*time.Second, "adapter ready", func() bool { return r.a.Status().OK })
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// publisher is a plain paho client for the test's side of the broker.
type publisher struct {
	c paho.Client
}

func newPublisher(t *testing.T, broker string, configure ...func(*paho.ClientOptions)) *publisher {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(3 * time.Second).SetWriteTimeout(3 * time.Second).SetProtocolVersion(4)
	for _, f := range configure {
		f(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	p := &publisher{c: c}
	t.Cleanup(p.close)
	return p
}

func (p *publisher) close() { p.c.Disconnect(100) }

// pub publishes and waits for the broker's acknowledgement (QoS 1/2).
func (p *publisher) pub(topic string, qos byte, retained bool, payload string) error {
	tok := p.c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(5 * time.Second) {
		return errors.New("publish timed out")
	}
	return tok.Error()
}

func (p *publisher) mustPub(t *testing.T, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	if err := p.pub(topic, qos, retained, payload); err != nil {
		t.Fatalf("publish %s: %v", payload, err)
	}
}

// waitPayloads waits until every payload was emitted at least once.
func waitPayloads(t *testing.T, s *recSink, d time.Duration, want []string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := s.counts()
		var missing []string
		for _, w := range want {
			if got[w] == 0 {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if len(missing) > 10 {
				missing = append(missing[:10], "…")
			}
			t.Fatalf("after %s, %d of %d payloads never emitted: %v", d, len(missing), len(want), missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func seqPayloads(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// value reads a gauge or counter (prometheus/testutil needs a module
// go.mod does not list).
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	switch {
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	case d.Counter != nil:
		return d.Counter.GetValue()
	}
	panic("not a gauge or counter")
}

func connectedGauge(name string) float64 { return value(mConnected.WithLabelValues(name)) }
func unackedGauge(name string) float64   { return value(mUnacked.WithLabelValues(name)) }
func reconnects(name, reason string) float64 {
	return value(mReconnects.WithLabelValues(name, reason))
}
func ignoredCount(name, reason string) float64 {
	return value(mIgnored.WithLabelValues(name, reason))
}

// requireMosquitto starts a broker for one test.
func requireMosquitto(t *testing.T, opts testpeers.MosquittoOptions) *testpeers.Mosquitto {
	t.Helper()
	return testpeers.StartMosquitto(t, opts)
}
