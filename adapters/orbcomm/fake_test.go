package orbcomm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	"github.com/vigd/vigd/internal/testpeers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The test credentials hold characters that URL encoding changes, so the
// redaction of every encoded form is exercised.
const (
	testAccessID = "acct-7Q2X"
	testPassword = "pa ss+w/rd&x=1"
	gwPath       = "/GLGW/2/RestMessages.svc/JSON/get_return_messages/"
)

// step is one scripted answer of the fake gateway.
type step struct {
	status int           // 0: 200
	body   string        // the answer's body
	delay  time.Duration // wait before answering (a timeout when over the client's)
}

// fakeGateway is a fake of the IGWS get_return_messages call: it answers
// from a script, then with endless (when set) or an empty page, and
// records every call's query and time.
type fakeGateway struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	script []step
	// endless, when set, makes the answer of every call past the script.
	endless func(n int, q url.Values) step
	calls   []url.Values
	at      []time.Time
	rawQ    []string
	callCh  chan int
}

const emptyPage = `{"ErrorID":0,"More":false,"NextStartUTC":"","NextStartID":-1,"Messages":null}`

func newGateway(t *testing.T, script ...step) *fakeGateway {
	g := &fakeGateway{t: t, script: script, callCh: make(chan int, 1<<16)}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) url() string { return g.srv.URL + gwPath }

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != gwPath {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	g.mu.Lock()
	g.calls = append(g.calls, r.URL.Query())
	g.at = append(g.at, time.Now())
	g.rawQ = append(g.rawQ, r.URL.RawQuery)
	n := len(g.calls)
	st := step{body: emptyPage}
	if len(g.script) > 0 {
		st, g.script = g.script[0], g.script[1:]
	} else if g.endless != nil {
		st = g.endless(n, r.URL.Query())
	}
	g.mu.Unlock()
	g.callCh <- n
	if st.delay > 0 {
		select {
		case <-time.After(st.delay):
		case <-r.Context().Done():
			return
		}
	}
	if st.status == 0 {
		st.status = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(st.status)
	io.WriteString(w, st.body)
}

// waitCalls blocks until the gateway has had n calls in all.
func (g *fakeGateway) waitCalls(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		g.mu.Lock()
		got := len(g.calls)
		g.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-g.callCh:
		case <-deadline:
			t.Fatalf("gateway had %d of %d calls", got, n)
		}
	}
}

func (g *fakeGateway) queries() []url.Values {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]url.Values(nil), g.calls...)
}

func (g *fakeGateway) times() []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]time.Time(nil), g.at...)
}

// markOf names the mark a call used: "from_id=N" or "start_utc=T".
func markOf(q url.Values) string {
	if v := q.Get("from_id"); v != "" {
		return "from_id=" + v
	}
	return "start_utc=" + q.Get("start_utc")
}

// sample reads a shared sample file (skips without ../shared).
func sample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(testpeers.Sample(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// msgJSON builds one message with a RawPayload.
func msgJSON(id int64, mobile string, raw ...int) string {
	m := map[string]any{
		"ID": id, "MessageUTC": "2024-05-23 11:00:00", "ReceiveUTC": "2024-05-23 11:00:00",
		"SIN": raw[0], "MobileID": mobile, "RegionName": "AMERRB16", "OTAMessageSize": len(raw), "RawPayload": raw,
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// pageJSON builds a page around messages (JSON objects).
func pageJSON(more bool, nextID int64, nextUTC string, msgs ...string) string {
	list := "null"
	if len(msgs) > 0 {
		list = "[" + strings.Join(msgs, ",") + "]"
	}
	return fmt.Sprintf(`{"ErrorID":0,"More":%t,"NextStartUTC":%q,"NextStartID":%d,"Messages":%s}`, more, nextUTC, nextID, list)
}

// recSink records frames; Emit returns what result says (nil by default).
type recSink struct {
	mu     sync.Mutex
	frames []*adapters.Frame
	result func(n int, f *adapters.Frame) error
	got    chan struct{}
}

func newSink() *recSink { return &recSink{got: make(chan struct{}, 1<<16)} }

func (s *recSink) Emit(ctx context.Context, f *adapters.Frame) error {
	s.mu.Lock()
	s.frames = append(s.frames, f)
	n := len(s.frames)
	res := s.result
	s.mu.Unlock()
	s.got <- struct{}{}
	if res != nil {
		return res(n, f)
	}
	return nil
}

func (s *recSink) all() []*adapters.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*adapters.Frame(nil), s.frames...)
}

func (s *recSink) ids() []string {
	var out []string
	for _, f := range s.all() {
		out = append(out, f.Meta[MetaMessageID])
	}
	return out
}

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

// harness runs one poller.
type harness struct {
	p      *Poller
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// testConfig is a fast config against the fake.
func testConfig(t *testing.T, gwURL string) *Config {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.URL = gwURL
	c.AccessID = testAccessID
	c.PasswordFile = pw
	c.PollInterval = 20 * time.Millisecond
	c.CallsPerMinute = 6000
	c.Timeout = 2 * time.Second
	c.StartTime = "2024-05-23 00:00:00"
	c.RetryMin = 10 * time.Millisecond
	c.RetryMax = 40 * time.Millisecond
	return c
}

var names sync.Map

// run starts a poller on stateDir; stop it with h.stop (also on cleanup).
func run(t *testing.T, cfg *Config, stateDir string, sink adapters.Sink) *harness {
	t.Helper()
	logs := &syncBuffer{}
	l := logrus.New()
	l.SetOutput(logs)
	l.SetLevel(logrus.TraceLevel)
	// A name per harness keeps the metric children of tests apart.
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	for i := 1; ; i++ {
		if _, dup := names.LoadOrStore(name, true); !dup {
			break
		}
		name = fmt.Sprintf("%s#%d", strings.Split(name, "#")[0], i)
	}
	p, err := New(name, cfg, adapters.Env{Log: logrus.NewEntry(l), StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{p: p, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- p.Run(ctx, sink) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop cancels Run and waits for it; safe to call twice.
func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case err, ok := <-h.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(h.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// savedMark opens a stopped poller's state and returns its mark.
func savedMark(t *testing.T, stateDir string) (Mark, bool) {
	t.Helper()
	st, err := openStore(filepath.Join(stateDir, StateFile), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, ok, err := st.Mark()
	if err != nil {
		t.Fatal(err)
	}
	return m, ok
}

// noSecrets fails when a credential (in any encoding) is in s.
func noSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, v := range []string{testPassword, url.QueryEscape(testPassword), strings.ReplaceAll(url.QueryEscape(testPassword), "+", "%20"),
		url.PathEscape(testPassword), testAccessID, "pa%20ss", "pa+ss", "w%2Frd"} {
		if strings.Contains(s, v) {
			t.Errorf("%s holds a credential (%q):\n%s", what, v, s)
		}
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
