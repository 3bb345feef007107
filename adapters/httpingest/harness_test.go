package httpingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/vigd/vigd/adapters"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tokenA = "tA9f3c1e7b2d44a08c5e"           // sensor-a
	tokenB = "tB-0123456789abcdef-long-token" // sensor-b
)

// emission is one Emit call waiting for its result.
type emission struct {
	frame *adapters.Frame
	reply chan error
}

// chanSink hands each Emit to the test, which answers it.
type chanSink struct{ ch chan emission }

func (s *chanSink) Emit(ctx context.Context, f *adapters.Frame) error {
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

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	s      *Server
	base   string // http://127.0.0.1:port/ingest
	sink   *chanSink
	logs   *syncBuffer
	client *http.Client
	cancel context.CancelFunc
	done   chan error
}

var serial = struct {
	sync.Mutex
	n int
}{}

// writeFile writes content to a new file in a temp folder.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs a server on a free loopback port with bearer tokens for
// sensor-a and sensor-b, unless mutate changes it.
func start(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Auth.TokensFile = writeFile(t, "tokens", "# devices\nsensor-a "+tokenA+"\n\nsensor-b\t"+tokenB+"\n")
	if mutate != nil {
		mutate(cfg)
	}
	logs := &syncBuffer{}
	l := logrus.New()
	l.SetOutput(logs)
	l.SetLevel(logrus.TraceLevel)
	serial.Lock()
	serial.n++
	name := fmt.Sprintf("http-%d", serial.n)
	serial.Unlock()
	s, err := New(name, cfg, adapters.Env{Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{s: s, sink: &chanSink{ch: make(chan emission, 16)}, logs: logs, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- s.Run(ctx, h.sink) }()
	t.Cleanup(func() { h.stop(t) })
	select {
	case <-s.Listening():
	case err := <-h.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not listening")
	}
	scheme := "http"
	if cfg.TLS.CertFile != "" {
		scheme = "https"
	}
	h.base = scheme + "://" + s.Addr().String() + cfg.Path
	tr := &http.Transport{}
	h.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return h
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Run did not return after cancel")
	}
}

// result is an HTTP answer.
type result struct {
	code   int
	body   string
	header http.Header
	err    error
}

func (r result) answer(t *testing.T) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal([]byte(r.body), &a); err != nil {
		t.Fatalf("answer %d is not JSON: %q", r.code, r.body)
	}
	return a
}

// do sends req in the background; the channel gets the answer.
func (h *harness) do(req *http.Request) <-chan result {
	out := make(chan result, 1)
	go func() {
		resp, err := h.client.Do(req)
		if err != nil {
			out <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- result{code: resp.StatusCode, body: string(b), header: resp.Header}
	}()
	return out
}

// post builds a POST to base+suffix with a bearer token ("" for none).
func (h *harness) post(t *testing.T, suffix, ctype, token string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.base+suffix, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("request: %v", r.err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	return result{}
}

func (h *harness) next(t *testing.T) emission {
	t.Helper()
	select {
	case e := <-h.sink.ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("nothing emitted")
	}
	return emission{}
}

// noEmit asserts nothing reaches the sink for d.
func (h *harness) noEmit(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case e := <-h.sink.ch:
		e.reply <- nil
		t.Fatalf("unexpected emit: %+v", e.frame)
	case <-time.After(d):
	}
}

// value reads a counter's or gauge's current value.
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func (h *harness) requests(code int) float64 {
	return value(h.s.m.requests.WithLabelValues(fmt.Sprint(code)))
}

// noSecrets fails when a token is in s.
func noSecrets(t *testing.T, s string, secrets ...string) {
	t.Helper()
	for _, v := range append(secrets, tokenA, tokenB) {
		if v != "" && strings.Contains(s, v) {
			t.Errorf("log holds a secret %q", v)
		}
	}
}
