package serial

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/internal/testpeers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recSink records frames. Each Emit waits for gate (when set), then
// returns the next of results (nil when they run out).
type recSink struct {
	mu      sync.Mutex
	frames  []*adapters.Frame
	calls   int
	results []error
	gate    chan struct{}
	got     chan *adapters.Frame // every Emit call
	durable chan *adapters.Frame // every Emit that returned a durable result
}

func newSink() *recSink {
	return &recSink{got: make(chan *adapters.Frame, 1<<16), durable: make(chan *adapters.Frame, 1<<16)}
}

func (s *recSink) Emit(ctx context.Context, f *adapters.Frame) error {
	s.mu.Lock()
	s.calls++
	var res error
	if len(s.results) > 0 {
		res, s.results = s.results[0], s.results[1:]
	}
	gate := s.gate
	s.mu.Unlock()
	s.got <- f
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if adapters.Durable(res) {
		s.mu.Lock()
		s.frames = append(s.frames, f)
		s.mu.Unlock()
		s.durable <- f
	}
	return res
}

// stored returns the frames stored so far (durable results only).
func (s *recSink) stored() []*adapters.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*adapters.Frame(nil), s.frames...)
}

// waitStored returns the next n stored frames or fails the test.
func (s *recSink) waitStored(t *testing.T, n int, within time.Duration) []*adapters.Frame {
	t.Helper()
	var out []*adapters.Frame
	timer := time.NewTimer(within)
	defer timer.Stop()
	for len(out) < n {
		select {
		case f := <-s.durable:
			out = append(out, f)
		case <-timer.C:
			t.Fatalf("got %d of %d frames within %s: %q", len(out), n, within, payloads(out))
		}
	}
	return out
}

func payloads(fs []*adapters.Frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f.Payload)
	}
	return out
}

// testConfig is a frames config on the pty's A end with quick reopens.
func testConfig(port string) *Config {
	c := DefaultConfig()
	c.Port = port
	c.ReopenMin = 20 * time.Millisecond
	c.ReopenMax = 200 * time.Millisecond
	return c
}

// logger returns an entry writing to the test log at debug level, so a
// failing test shows what the adapter did.
func logger(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	l.SetOutput(testWriter{t})
	return logrus.NewEntry(l).WithField("test", t.Name())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

var runs atomic.Int64

// run starts the adapter until the test ends and waits for Run to return
// nil at cleanup.
func run(t *testing.T, cfg *Config, sink adapters.Sink, env adapters.Env) *Adapter {
	t.Helper()
	if env.Log == nil {
		env.Log = logger(t)
	}
	// A fresh name per run: metric children are per adapter name, and
	// -count=N runs a test again in the same process.
	a, err := New(fmt.Sprintf("test-%s-%d", t.Name(), runs.Add(1)), cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return a
}

// waitStatus polls Status until it is ok (or not) and returns the time
// that took.
func waitStatus(t *testing.T, a *Adapter, ok bool, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		st := a.Status()
		if st.OK == ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("Status still %+v after %s, want OK=%v", st, within, ok)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// openDevice opens the device end of the pty pair (the test plays the
// device there); closed at cleanup.
func openDevice(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// startPair starts socat for the test.
func startPair(t *testing.T) *testpeers.Socat {
	return testpeers.StartSocat(t)
}

// value reads a counter or gauge (prometheus/testutil needs a module
// go.mod does not list).
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither a counter nor a gauge", c.Desc())
	return 0
}
