package directip

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/iridium"
	"github.com/vigd/vigd/internal/testpeers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runs makes adapter names (metric labels) unique across -count runs.
var runs atomic.Int64

var confirmation = []byte{0x01, 0x00, 0x04, 0x05, 0x00, 0x01, 0x01}

func hexSample(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(testpeers.Sample(t, name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// emission is one Emit call waiting for the test to answer it.
type emission struct {
	frame *adapters.Frame
	reply chan error
}

// gateSink hands every frame to the test and blocks until the test replies.
type gateSink struct{ ch chan emission }

func (s gateSink) Emit(ctx context.Context, f *adapters.Frame) error {
	e := emission{frame: f, reply: make(chan error, 1)}
	select {
	case s.ch <- e:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-e.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type harness struct {
	l      *Listener
	sink   gateSink
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, stateDir string, mutate func(*Config)) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MOConfirmation = true
	cfg.ReadTimeout = 2 * time.Second
	if mutate != nil {
		mutate(cfg)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	l, err := New(fmt.Sprintf("dip-%s-%d", t.Name(), runs.Add(1)), cfg, adapters.Env{Log: logrus.NewEntry(log), StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{l: l, sink: gateSink{ch: make(chan emission)}, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- l.Run(ctx, h.sink) }()
	select {
	case <-l.Listening():
	case err := <-h.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("listener did not start")
	}
	h.addr = l.Addr().String()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	if err := <-h.done; err != nil {
		panic(err)
	}
	h.done <- nil // later calls return at once
}

// push connects, writes msg in chunks of chunk bytes with short pauses and
// returns the connection (write side half-closed only when closeWrite).
func push(t *testing.T, addr string, msg []byte, chunk int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for i := 0; i < len(msg); i += chunk {
		end := min(i+chunk, len(msg))
		if _, err := c.Write(msg[i:end]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return c
}

func (h *harness) next(t *testing.T) emission {
	t.Helper()
	select {
	case e := <-h.sink.ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no frame emitted")
		return emission{}
	}
}

func (h *harness) noEmit(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case e := <-h.sink.ch:
		t.Fatalf("unexpected frame %+v", e.frame)
	case <-time.After(d):
	}
}

// assertNothing checks that no byte arrives within d.
func assertNothing(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var b [16]byte
	n, err := c.Read(b[:])
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes % x, err %v; want nothing yet", n, b[:n], err)
	}
}

// readAll reads what the adapter sends until it closes.
func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got % x)", err, b)
	}
	return b
}

func TestSamplesOverTCP(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	tests := []struct {
		file    string
		chunk   int
		imei    string
		momsn   string
		status  string
		payload string
		lat     string
		offset  int64
	}{
		{"directip_mo_basic.hex", 7, "300234010000010", "75", "0", "test message from alex", "", 37},
		{"directip_mo_location_south.hex", 11, "300234010000020", "7", "0", "Thanks for your amazing sbd-rs repo @someuser!", "-43.521167", 51},
		{"directip_mo_guide_failed_session.hex", 5, "300034010123450", "54322", "13", "", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			c := push(t, h.addr, hexSample(t, tc.file), tc.chunk)
			e := h.next(t)
			f := e.frame
			// The sink holds the frame: nothing may reach the gateway yet.
			assertNothing(t, c, 150*time.Millisecond)
			if f.Kind != "directip" || f.Identity != tc.imei || f.Adapter != h.l.name || f.Offset != tc.offset ||
				f.Source != c.LocalAddr().String() || time.Since(f.Received) > 10*time.Second {
				t.Errorf("frame %+v", f)
			}
			if string(f.Payload) != tc.payload || f.Payload == nil {
				t.Errorf("payload %q", f.Payload)
			}
			m := f.Meta
			if m["imei"] != tc.imei || m["momsn"] != tc.momsn || m["session_status"] != tc.status || m["transport"] != "directip" ||
				m["lat"] != tc.lat || m["cdr_ref"] == "" || m["session_time"] == "" || m["mtmsn"] != "0" {
				t.Errorf("meta %v", m)
			}
			e.reply <- nil
			if got := readAll(t, c); !bytes.Equal(got, confirmation) {
				t.Errorf("confirmation % x, want % x", got, confirmation)
			}
		})
	}
	if got := counter(h.l.metrics.Frames); got != 3 {
		t.Errorf("frames metric %v", got)
	}
}

func TestFailedSessionMeta(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	c := push(t, h.addr, hexSample(t, "directip_mo_guide_failed_session.hex"), 31)
	e := h.next(t)
	want := map[string]string{
		"transport": "directip", "imei": "300034010123450", "momsn": "54322", "mtmsn": "0", "cdr_ref": "1301567",
		"session_status": "13", "session_time": "2005-12-30T13:45:25Z",
	}
	if len(e.frame.Meta) != len(want) || len(e.frame.Payload) != 0 {
		t.Errorf("meta %v payload %q", e.frame.Meta, e.frame.Payload)
	}
	for k, v := range want {
		if e.frame.Meta[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, e.frame.Meta[k], v)
		}
	}
	e.reply <- &adapters.RejectedError{Reason: "no decoder"} // dead-lettered is durable too
	if got := readAll(t, c); !bytes.Equal(got, confirmation) {
		t.Errorf("confirmation % x", got)
	}
}

func TestNoConfirmationWhenNotDurable(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	sample := hexSample(t, "directip_mo_basic.hex")
	c := push(t, h.addr, sample, 13)
	e := h.next(t)
	e.reply <- errors.New("disk full")
	if got := readAll(t, c); len(got) != 0 {
		t.Fatalf("sent % x after a non-durable emit", got)
	}
	// Not recorded as seen: the redelivery is emitted.
	c = push(t, h.addr, sample, 59)
	e = h.next(t)
	e.reply <- nil
	if got := readAll(t, c); !bytes.Equal(got, confirmation) {
		t.Errorf("redelivery confirmation % x", got)
	}
}

func TestDuplicateConfirmedNotEmitted(t *testing.T) {
	state := t.TempDir()
	h := start(t, state, nil)
	sample := hexSample(t, "directip_mo_location_south.hex")
	c := push(t, h.addr, sample, 17)
	h.next(t).reply <- nil
	readAll(t, c)

	c = push(t, h.addr, sample, 17)
	if got := readAll(t, c); !bytes.Equal(got, confirmation) {
		t.Errorf("duplicate confirmation % x", got)
	}
	h.noEmit(t, 100*time.Millisecond)
	if counter(h.l.metrics.Duplicates) != 1 || counter(h.l.metrics.Frames) != 1 {
		t.Errorf("duplicates %v frames %v", counter(h.l.metrics.Duplicates), counter(h.l.metrics.Frames))
	}

	// After a restart on the same state folder the message is still known.
	h.stop()
	h2 := start(t, state, nil)
	c = push(t, h2.addr, sample, 97)
	if got := readAll(t, c); !bytes.Equal(got, confirmation) {
		t.Errorf("duplicate after restart: % x", got)
	}
	h2.noEmit(t, 100*time.Millisecond)
}

// Two deliveries of one message at once: one emit, both confirmed.
func TestConcurrentDuplicates(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	sample := hexSample(t, "directip_mo_basic.hex")
	c1 := push(t, h.addr, sample, 59)
	e := h.next(t)
	c2 := push(t, h.addr, sample, 59)
	h.noEmit(t, 100*time.Millisecond)
	assertNothing(t, c2, 10*time.Millisecond)
	e.reply <- nil
	for _, c := range []net.Conn{c1, c2} {
		if got := readAll(t, c); !bytes.Equal(got, confirmation) {
			t.Errorf("confirmation % x", got)
		}
	}
	h.noEmit(t, 50*time.Millisecond)
}

func TestUnparseableEmittedRaw(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	bad := hexSample(t, "directip_mo_basic.hex")
	bad[10] = 'X' // inside the IMEI
	c := push(t, h.addr, bad, 59)
	e := h.next(t)
	if !bytes.Equal(e.frame.Payload, bad) || !strings.Contains(e.frame.Meta["parse_error"], "IMEI") || e.frame.Identity != "" {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- &adapters.RejectedError{Reason: "parse error"}
	if got := readAll(t, c); !bytes.Equal(got, confirmation) {
		t.Errorf("confirmation % x", got)
	}
	// A redelivery of the same bad bytes is not dead-lettered twice.
	c = push(t, h.addr, bad, 59)
	if got := readAll(t, c); !bytes.Equal(got, confirmation) {
		t.Errorf("redelivery confirmation % x", got)
	}
	h.noEmit(t, 50*time.Millisecond)
}

func TestTruncatedNotConfirmed(t *testing.T) {
	h := start(t, t.TempDir(), func(c *Config) { c.ReadTimeout = 300 * time.Millisecond })
	sample := hexSample(t, "directip_mo_basic.hex")
	// Peer closes half-way.
	c := push(t, h.addr, sample[:30], 30)
	c.(*net.TCPConn).CloseWrite()
	if got := readAll(t, c); len(got) != 0 {
		t.Errorf("sent % x", got)
	}
	// Peer stalls half-way: the read deadline ends it.
	c = push(t, h.addr, sample[:30], 30)
	if got := readAll(t, c); len(got) != 0 {
		t.Errorf("sent % x", got)
	}
	h.noEmit(t, 50*time.Millisecond)
	// A connection closed without a byte is not an error.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	h.noEmit(t, 50*time.Millisecond)
}

func TestTrailingBytesFlagged(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	msg := append(hexSample(t, "directip_mo_basic.hex"), 0x02, 0x00, 0x01)
	c := push(t, h.addr, msg, len(msg))
	e := h.next(t)
	if e.frame.Meta["trailing_bytes"] != "3" || string(e.frame.Payload) != "test message from alex" {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- nil
	if got := readAll(t, c); !bytes.Equal(got, confirmation) {
		t.Errorf("confirmation % x", got)
	}
}

func TestNoConfirmationConfigured(t *testing.T) {
	h := start(t, t.TempDir(), func(c *Config) { c.MOConfirmation = false })
	c := push(t, h.addr, hexSample(t, "directip_mo_basic.hex"), 59)
	h.next(t).reply <- nil
	if got := readAll(t, c); len(got) != 0 {
		t.Errorf("sent % x without mo_confirmation", got)
	}
}

func TestAllowedSources(t *testing.T) {
	h := start(t, t.TempDir(), func(c *Config) { c.AllowedSources = []string{"12.47.179.11", "10.0.0.0/8"} })
	c := push(t, h.addr, hexSample(t, "directip_mo_basic.hex"), 59)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// The adapter closes with our bytes unread, so the close may arrive as
	// a reset.
	if got, err := io.ReadAll(c); len(got) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("sent % x, err %v", got, err)
	}
	h.noEmit(t, 50*time.Millisecond)
}

// Shutdown while the sink holds a frame: Run returns, nothing confirmed.
func TestShutdownDuringEmit(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	c := push(t, h.addr, hexSample(t, "directip_mo_basic.hex"), 59)
	h.next(t) // never answered
	h.stop()
	if got := readAll(t, c); len(got) != 0 {
		t.Errorf("sent % x", got)
	}
}

func TestBackPressureStopsAccepting(t *testing.T) {
	h := start(t, t.TempDir(), func(c *Config) { c.MaxConnections = 1 })
	sample := hexSample(t, "directip_mo_basic.hex")
	c1 := push(t, h.addr, sample, 59)
	e := h.next(t)
	other := hexSample(t, "directip_mo_location_south.hex")
	c2 := push(t, h.addr, other, 97)
	h.noEmit(t, 150*time.Millisecond) // not served while the only slot is busy
	e.reply <- nil
	readAll(t, c1)
	e = h.next(t)
	if e.frame.Identity != "300234010000020" {
		t.Errorf("second frame %+v", e.frame)
	}
	e.reply <- nil
	if got := readAll(t, c2); !bytes.Equal(got, confirmation) {
		t.Errorf("confirmation % x", got)
	}
}

func TestListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := DefaultConfig()
	cfg.Listen = ln.Addr().String()
	l, err := New("x", cfg, adapters.Env{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Run(context.Background(), gateSink{}); err == nil {
		t.Error("Run on a taken address returned nil")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := DefaultConfig()
	c.Listen = "nocolon"
	c.ReadTimeout = 0
	c.WriteTimeout = -1
	c.MaxConnections = 0
	c.DedupSize = 0
	c.AllowedSources = []string{"not-an-ip"}
	err := c.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *adapters.FieldError
		if !errors.As(e, &fe) {
			t.Errorf("%v is not a FieldError", e)
			continue
		}
		fields = append(fields, fe.Field)
	}
	want := "listen read_timeout write_timeout max_connections dedup_size allowed_sources"
	if strings.Join(fields, " ") != want {
		t.Errorf("fields %v, want %s", fields, want)
	}
}

func TestRegistered(t *testing.T) {
	k, ok := adapters.Lookup("directip")
	if !ok {
		t.Fatal("kind not registered")
	}
	cfg := k.NewConfig().(*Config)
	if cfg.Listen != ":10800" || cfg.ReadTimeout != 30*time.Second || cfg.DedupSize != iridium.DefaultDedupSize {
		t.Errorf("defaults %+v", cfg)
	}
	a, err := k.New("x", cfg, adapters.Env{StateDir: t.TempDir()})
	if err != nil || a == nil {
		t.Fatal(err)
	}
}
