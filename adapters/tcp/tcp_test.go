package tcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/framing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recSink records frames; each Emit first waits for gate (when set) and
// then returns the next of results (nil when they run out).
type recSink struct {
	mu      sync.Mutex
	frames  []*adapters.Frame
	results []error
	gate    chan struct{}
	got     chan struct{} // a token per frame received
}

func newSink() *recSink { return &recSink{got: make(chan struct{}, 1<<20)} }

func (s *recSink) Emit(ctx context.Context, f *adapters.Frame) error {
	s.mu.Lock()
	s.frames = append(s.frames, f)
	var res error
	if len(s.results) > 0 {
		res, s.results = s.results[0], s.results[1:]
	}
	gate := s.gate
	s.mu.Unlock()
	s.got <- struct{}{}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return res
}

func (s *recSink) all() []*adapters.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*adapters.Frame(nil), s.frames...)
}

// wait blocks until n more frames arrived.
func (s *recSink) wait(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-s.got:
		case <-time.After(10 * time.Second):
			t.Fatalf("sink got %d of %d frames", i, n)
		}
	}
}

// start runs a listener on a free loopback port until the test ends.
func start(t *testing.T, sink adapters.Sink, mutate func(*Config)) (*Listener, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	if mutate != nil {
		mutate(cfg)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	if testing.Verbose() {
		log.SetOutput(os.Stderr)
		log.SetLevel(logrus.DebugLevel)
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	l, err := New(name, cfg, adapters.Env{Log: logrus.NewEntry(log)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case <-l.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("listener not ready")
	}
	return l, l.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, p string) {
	t.Helper()
	if _, err := c.Write([]byte(p)); err != nil {
		t.Fatal(err)
	}
}

// readN reads exactly n bytes within a few seconds.
func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// expectClosed asserts the server closed c without sending anything.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Fatalf("got %q before the close", b)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("connection not closed: %v", err)
	}
}

type got struct {
	off     int64
	payload string
}

func (g got) String() string { return fmt.Sprintf("%d:%q", g.off, g.payload) }

func frames(fs []*adapters.Frame) []got {
	out := make([]got, len(fs))
	for i, f := range fs {
		out[i] = got{f.Offset, string(f.Payload)}
	}
	return out
}

func TestSplitAndBatchedWritesGiveTheSameFrames(t *testing.T) {
	lenPrefixed := func(parts ...string) string {
		var b []byte
		for _, p := range parts {
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
		return string(b)
	}
	cases := []struct {
		name string
		fc   framing.Config
		in   string
		want []got
	}{
		{"line", framing.Config{}, "hello\r\nworld\nx\n", []got{{0, "hello"}, {7, "world"}, {13, "x"}}},
		{"length", framing.Config{Type: "length"}, lenPrefixed("abc", "\x00\n\r", "z"), []got{{0, "abc"}, {5, "\x00\n\r"}, {10, "z"}}},
		{"slip", framing.Config{Type: "slip"}, string(framing.EncodeSLIP([]byte("a\xc0b"))) + string(framing.EncodeSLIP([]byte("c"))),
			[]got{{1, "a\xc0b"}, {7, "c"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []string{"split", "batched"} {
				sink := newSink()
				_, addr := start(t, sink, func(c *Config) { c.Framing = tc.fc; c.Reply = "K" })
				c := dial(t, addr)
				if mode == "split" {
					for i := range len(tc.in) {
						write(t, c, tc.in[i:i+1])
						time.Sleep(time.Millisecond)
					}
				} else {
					write(t, c, tc.in)
				}
				if r := readN(t, c, len(tc.want)); r != strings.Repeat("K", len(tc.want)) {
					t.Fatalf("replies %q", r)
				}
				fs := sink.all()
				if fmt.Sprint(frames(fs)) != fmt.Sprint(tc.want) {
					t.Fatalf("%s: got %v, want %v", mode, frames(fs), tc.want)
				}
				for _, f := range fs {
					local := c.LocalAddr().String()
					_, port, _ := net.SplitHostPort(addr)
					if f.Adapter == "" || f.Kind != "tcp" || f.Source != local || f.Identity != "127.0.0.1" ||
						f.Meta["remote_addr"] != local || f.Meta["local_port"] != port || f.Received.IsZero() {
						t.Fatalf("frame fields: %+v", f)
					}
				}
			}
		})
	}
}

func TestReplyOnlyAfterDurable(t *testing.T) {
	sink := newSink()
	sink.gate = make(chan struct{})
	_, addr := start(t, sink, func(c *Config) { c.Reply = `ACK\r\n` })
	c := dial(t, addr)
	write(t, c, "x\n")
	sink.wait(t, 1)
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	b := make([]byte, 16)
	if n, err := c.Read(b); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("reply before Emit returned: %q, %v", b[:n], err)
	}
	close(sink.gate)
	if r := readN(t, c, 5); r != "ACK\r\n" {
		t.Fatalf("reply %q", r)
	}
}

func TestRejectedReply(t *testing.T) {
	rejected := &adapters.RejectedError{Reason: "no decoder"}
	nak, none := "hex:15", ""
	cases := []struct {
		name     string
		rejected *string
		want     string
	}{
		{"own reply", &nak, "\x15OK"},
		{"same as reply", nil, "OKOK"},
		{"no reply", &none, "OK"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := newSink()
			sink.results = []error{rejected, nil}
			_, addr := start(t, sink, func(c *Config) { c.Reply = "OK"; c.ReplyRejected = tc.rejected })
			c := dial(t, addr)
			write(t, c, "bad\ngood\n")
			if r := readN(t, c, len(tc.want)); r != tc.want {
				t.Fatalf("replies %q, want %q", r, tc.want)
			}
		})
	}
}

func TestNonDurableErrorClosesWithoutReply(t *testing.T) {
	sink := newSink()
	sink.results = []error{errors.New("disk full")}
	l, addr := start(t, sink, func(c *Config) { c.Reply = "OK" })
	before := value(adapters.FrameErrorsTotal.WithLabelValues(l.name, Kind, "not_queued"))
	c := dial(t, addr)
	write(t, c, "one\ntwo\n")
	expectClosed(t, c)
	if fs := frames(sink.all()); len(fs) != 1 || fs[0].payload != "one" {
		t.Fatalf("frames after the failure were read: %v", fs)
	}
	if d := value(adapters.FrameErrorsTotal.WithLabelValues(l.name, Kind, "not_queued")) - before; d != 1 {
		t.Fatalf("not_queued counted %v times", d)
	}
}

func TestMaxConnections(t *testing.T) {
	sink := newSink()
	l, addr := start(t, sink, func(c *Config) { c.MaxConnections = 2; c.Reply = "K" })
	c1, c2 := dial(t, addr), dial(t, addr)
	for _, c := range []net.Conn{c1, c2} {
		write(t, c, "hi\n")
		readN(t, c, 1)
	}
	if st := l.Status(); !st.OK || !strings.Contains(st.Detail, "2 connections") {
		t.Fatalf("status %+v", st)
	}
	if n := value(adapters.ConnectionsGauge.WithLabelValues(l.name)); n != 2 {
		t.Fatalf("connections gauge %v", n)
	}
	refusedBefore := value(adapters.ConnectionsRefusedTotal.WithLabelValues(l.name, "max_connections"))
	c3 := dial(t, addr)
	write(t, c3, "refused\n")
	expectClosed(t, c3)
	if n := value(adapters.ConnectionsRefusedTotal.WithLabelValues(l.name, "max_connections")) - refusedBefore; n != 1 {
		t.Fatalf("refused counted %v", n)
	}
	c1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c4 := dial(t, addr)
		write(t, c4, "again\n")
		_ = c4.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(c4, make([]byte, 1)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection admitted after one closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, f := range sink.all() {
		if string(f.Payload) == "refused" {
			t.Fatal("a refused connection's frame was read")
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	sink := newSink()
	_, addr := start(t, sink, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond; c.Reply = "K" })
	silent := dial(t, addr)
	busy := dial(t, addr)
	startAt := time.Now()
	for range 20 { // 600ms of traffic, a frame every 30ms
		write(t, busy, "tick\n")
		readN(t, busy, 1)
		time.Sleep(30 * time.Millisecond)
	}
	expectClosed(t, silent)
	if time.Since(startAt) < 300*time.Millisecond {
		t.Fatal("closed before idle_timeout")
	}
	write(t, busy, "still here\n")
	readN(t, busy, 1)
}

func TestIdentity(t *testing.T) {
	cases := []struct {
		identity string
		want     string
	}{
		{"remote_addr", "127.0.0.1"},
		{"", "127.0.0.1"},
		{"fixed:pump-7", "pump-7"},
		{"payload", ""},
	}
	for _, tc := range cases {
		t.Run(tc.identity, func(t *testing.T) {
			sink := newSink()
			_, addr := start(t, sink, func(c *Config) { c.Identity = tc.identity })
			write(t, dial(t, addr), "x\n")
			sink.wait(t, 1)
			if id := sink.all()[0].Identity; id != tc.want {
				t.Fatalf("identity %q, want %q", id, tc.want)
			}
		})
	}
}

func TestFirstFrameIdentity(t *testing.T) {
	sink := newSink()
	_, addr := start(t, sink, func(c *Config) {
		c.Identity = IdentityFirstFrame
		c.IdentityReply = `\x01`
		c.Reply = "K"
	})
	c := dial(t, addr)
	write(t, c, " 300234010000010 \r\n")
	if r := readN(t, c, 1); r != "\x01" {
		t.Fatalf("identity reply %q", r)
	}
	write(t, c, "data\n")
	readN(t, c, 1)
	fs := sink.all()
	if len(fs) != 1 || string(fs[0].Payload) != "data" || fs[0].Identity != "300234010000010" || fs[0].Offset != 19 {
		t.Fatalf("frames %+v", fs)
	}
	// Each connection sends its own identity.
	c2 := dial(t, addr)
	write(t, c2, "other\nd2\n")
	readN(t, c2, 2)
	if fs := sink.all(); len(fs) != 2 || fs[1].Identity != "other" {
		t.Fatalf("second connection: %+v", fs[1])
	}
}

func TestBadFrameDoesNotAffectNext(t *testing.T) {
	cases := []struct {
		name   string
		fc     framing.Config
		in     string
		reason string
		want   []got
	}{
		{"over-long line", framing.Config{}, "ok1\n" + strings.Repeat("x", 30) + "\nok2\n", framing.ReasonTooLong,
			[]got{{0, "ok1"}, {35, "ok2"}}},
		{"SLIP bad escape", framing.Config{Type: "slip"}, "\xc0a\xc0\xc0b\xdbxc\xc0d\xc0", framing.ReasonEscape,
			[]got{{1, "a"}, {9, "d"}}},
		{"over-long length prefix", framing.Config{Type: "length", LengthBytes: 1}, "\x02ab\x20" + strings.Repeat("y", 32) + "\x01c",
			framing.ReasonTooLong, []got{{0, "ab"}, {36, "c"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := newSink()
			l, addr := start(t, sink, func(c *Config) { c.Framing = tc.fc; c.MaxFrameBytes = 8; c.Reply = "K" })
			before := value(adapters.FrameErrorsTotal.WithLabelValues(l.name, Kind, tc.reason))
			c := dial(t, addr)
			write(t, c, tc.in)
			readN(t, c, len(tc.want))
			if fmt.Sprint(frames(sink.all())) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", frames(sink.all()), tc.want)
			}
			if n := value(adapters.FrameErrorsTotal.WithLabelValues(l.name, Kind, tc.reason)) - before; n != 1 {
				t.Fatalf("%s counted %v", tc.reason, n)
			}
		})
	}
}

func TestFatalFramingClosesConnection(t *testing.T) {
	sink := newSink()
	_, addr := start(t, sink, func(c *Config) {
		c.Framing = framing.Config{Type: "length", LengthCounts: "self"}
		c.Reply = "K"
	})
	c := dial(t, addr)
	write(t, c, "\x00\x03a\x00\x01zzzz")
	if r := readN(t, c, 1); r != "K" {
		t.Fatalf("reply %q", r)
	}
	expectClosed(t, c)
}

// TestBackPressure: while the sink blocks, the connection is not read, so
// the writer's socket buffers fill and its writes stall; after release
// every frame arrives, in order.
func TestBackPressure(t *testing.T) {
	sink := newSink()
	sink.gate = make(chan struct{})
	_, addr := start(t, sink, nil)
	c := dial(t, addr)
	line := func(i int) []byte { return []byte(fmt.Sprintf("%08d %s\n", i, strings.Repeat("p", 1000))) }

	stalled := make(chan int, 1)
	total := make(chan int, 1)
	go func() {
		i := 0
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		for ; ; i++ {
			p := line(i)
			n, err := c.Write(p)
			if err != nil {
				// The writer is stuck: finish this frame and send 100 more
				// without a deadline (they go through after release).
				stalled <- i
				_ = c.SetWriteDeadline(time.Time{})
				if _, err := c.Write(p[n:]); err != nil {
					total <- -1
					return
				}
				for j := i + 1; j <= i+100; j++ {
					if _, err := c.Write(line(j)); err != nil {
						total <- -1
						return
					}
				}
				total <- i + 101
				return
			}
			if i > 200000 {
				total <- -2 // 200 MB and never stalled
				return
			}
		}
	}()
	var at int
	select {
	case at = <-stalled:
	case n := <-total:
		t.Fatalf("writer never stalled (%d)", n)
	case <-time.After(30 * time.Second):
		t.Fatal("writer neither stalled nor finished")
	}
	if n := len(sink.all()); n != 1 {
		t.Fatalf("sink saw %d frames while blocked on the first (writer stalled at frame %d)", n, at)
	}
	t.Logf("writer stalled after %d frames (%d KiB) while the sink held frame 0", at, at*1010/1024)
	close(sink.gate)
	n := <-total
	if n < 0 {
		t.Fatalf("writer failed (%d)", n)
	}
	sink.wait(t, n)
	fs := sink.all()
	if len(fs) != n {
		t.Fatalf("got %d frames, want %d", len(fs), n)
	}
	var off int64
	for i, f := range fs {
		want := line(i)
		if !bytes.Equal(f.Payload, want[:len(want)-1]) || f.Offset != off {
			t.Fatalf("frame %d at %d: %.20q at %d", i, off, f.Payload, f.Offset)
		}
		off += int64(len(want))
	}
}

func TestIdleFramingOverTCP(t *testing.T) {
	sink := newSink()
	_, addr := start(t, sink, func(c *Config) {
		// Wide margins: the test machine may be busy.
		c.Framing = framing.Config{Type: "idle", Gap: 200 * time.Millisecond}
		c.IdleTimeout = 1200 * time.Millisecond
		c.Reply = "K"
	})
	c := dial(t, addr)
	write(t, c, "ab")
	time.Sleep(5 * time.Millisecond)
	write(t, c, "c")
	readN(t, c, 1)
	write(t, c, "de")
	readN(t, c, 1)
	if fs := frames(sink.all()); fmt.Sprint(fs) != fmt.Sprint([]got{{0, "abc"}, {3, "de"}}) {
		t.Fatalf("frames %v", fs)
	}
	// Silent past idle_timeout: closed, and not mistaken for a gap.
	expectClosed(t, c)
}

func TestShutdownWithBusyConnections(t *testing.T) {
	sink := newSink()
	sink.gate = make(chan struct{}) // never opened: Emit waits for ctx
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	l, err := New("shutdown", cfg, adapters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if st := l.Status(); st.OK {
		t.Fatalf("status before Run: %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, sink) }()
	<-l.Ready()
	busy := dial(t, l.Addr().String())
	write(t, busy, "blocked\n")
	sink.wait(t, 1)
	idle := dial(t, l.Addr().String())
	write(t, idle, "partial line without end")
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	expectClosed(t, busy)
	expectClosed(t, idle)
	if st := l.Status(); st.OK {
		t.Fatalf("status after Run: %+v", st)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Fatal("still accepting after Run returned")
	}
}

func TestListenFailure(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := DefaultConfig()
	cfg.Listen = taken.Addr().String()
	l, err := New("taken", cfg, adapters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Run(context.Background(), newSink()); err == nil || !strings.Contains(err.Error(), cfg.Listen) {
		t.Fatalf("Run on a taken address: %v", err)
	}
}

func TestBytesCounted(t *testing.T) {
	sink := newSink()
	l, addr := start(t, sink, func(c *Config) { c.Reply = "K" })
	before := value(adapters.BytesTotal.WithLabelValues(l.name, Kind))
	framesBefore := value(adapters.FramesTotal.WithLabelValues(l.name, Kind))
	c := dial(t, addr)
	write(t, c, "12345\n6789\n")
	readN(t, c, 2)
	if d := value(adapters.BytesTotal.WithLabelValues(l.name, Kind)) - before; d != 11 {
		t.Fatalf("bytes counted %v, want 11", d)
	}
	if d := value(adapters.FramesTotal.WithLabelValues(l.name, Kind)) - framesBefore; d != 2 {
		t.Fatalf("frames counted %v, want 2", d)
	}
}

// value reads a counter's or gauge's current value (prometheus/testutil
// would need a module go.mod does not list).
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
