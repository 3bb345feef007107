package forwarder

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/forwarder/deadletter"
	"github.com/vigd/vigd/forwarder/queue"
	"github.com/vigd/vigd/forwarder/signer"
)

// backlog is how many records a queue holds uncommitted.
func backlog(q queue.Queue) int64 { return q.Stats().Records }

// req is a request the fake eventstore received.
type req struct {
	n       int
	at      time.Time
	path    string
	ep      string
	body    []byte // after gunzip
	gzip    bool
	batchID string
	dev     string
	items   []json.RawMessage
	authErr error
}

// answer is a scripted reply: status 0 means "do what the server does".
type reply struct {
	status int
	body   string
	header map[string]string
	// accept makes the server store the batch before answering status
	// (a lost answer); drop closes the connection without an answer.
	accept bool
	drop   bool
}

// fakeStore is a small eventstore: it verifies signatures, keeps things
// and datastreams, refuses observations that refer to an unknown
// datastream (422), deduplicates batchIds (409) and keeps every accepted
// record in order. script may override any answer.
type fakeStore struct {
	t      *testing.T
	mu     sync.Mutex
	reqs   []*req
	things map[string]json.RawMessage
	dss    map[string]json.RawMessage
	seen   map[string]bool
	// accepted records per endpoint, in arrival order
	got map[string][]json.RawMessage
	// order of accepted requests: "endpoint:device"
	order  []string
	script func(r *req) reply
	// strict makes observations/alarms need known entities
	strict   bool
	verifier *signer.Verifier
}

func newFakeStore(t *testing.T) *fakeStore {
	return &fakeStore{t: t, things: map[string]json.RawMessage{}, dss: map[string]json.RawMessage{},
		seen: map[string]bool{}, got: map[string][]json.RawMessage{}}
}

func (s *fakeStore) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	raw, _ := io.ReadAll(hr.Body)
	r := &req{at: time.Now(), path: hr.URL.Path, ep: filepath.Base(hr.URL.Path)}
	if s.verifier != nil {
		_, r.authErr = s.verifier.VerifyRequest(hr)
		sum := md5.Sum(raw)
		if got := hr.Header.Get("Content-MD5"); got != base64.StdEncoding.EncodeToString(sum[:]) {
			r.authErr = fmt.Errorf("content-md5 %q does not match the body", got)
		}
	}
	r.body = raw
	if hr.Header.Get("Content-Encoding") == "gzip" {
		r.gzip = true
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			r.body, _ = io.ReadAll(zr)
		}
	}
	var env map[string]json.RawMessage
	if json.Unmarshal(r.body, &env) != nil {
		http.Error(w, `{"error":"BAD_JSON"}`, 400)
		return
	}
	_ = json.Unmarshal(env["batchId"], &r.batchID)
	_ = json.Unmarshal(env["deviceId"], &r.dev)
	if r.ep != "raw" {
		_ = json.Unmarshal(env[r.ep], &r.items)
	} else {
		r.items = []json.RawMessage{r.body}
	}
	s.mu.Lock()
	r.n = len(s.reqs)
	s.reqs = append(s.reqs, r)
	script := s.script
	s.mu.Unlock()

	var rp reply
	if script != nil {
		rp = script(r)
	}
	if rp.drop || rp.accept {
		s.mu.Lock()
		s.store(r)
		s.mu.Unlock()
	}
	if rp.drop {
		hj, ok := w.(http.Hijacker)
		if ok {
			c, _, _ := hj.Hijack()
			c.Close()
			return
		}
	}
	for k, v := range rp.header {
		w.Header().Set(k, v)
	}
	if rp.status != 0 {
		w.WriteHeader(rp.status)
		_, _ = io.WriteString(w, rp.body)
		return
	}
	if r.authErr != nil {
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"error":"UNAUTHORIZED","message":%q}`, r.authErr.Error())
		return
	}
	status, body := s.handle(r)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (s *fakeStore) handle(r *req) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.batchID != "" && s.seen[r.batchID] {
		return 409, `{"error":"DUPLICATE_BATCH"}`
	}
	if s.strict && (r.ep == "observations" || r.ep == "datastreams") {
		var errs []string
		for i, it := range r.items {
			var v struct {
				DS    sensusRef `json:"datastream"`
				Thing sensusRef `json:"thing"`
			}
			_ = json.Unmarshal(it, &v)
			if r.ep == "observations" && s.dss[v.DS.SensusID] == nil {
				errs = append(errs, fmt.Sprintf(`{"recordId":%q,"recordIndex":%d,"error":"UNKNOWN_DATASTREAM","message":"no such datastream"}`, v.DS.SensusID, i))
			}
			if r.ep == "datastreams" && s.things[v.Thing.SensusID] == nil {
				errs = append(errs, fmt.Sprintf(`{"recordId":%q,"recordIndex":%d,"error":"UNKNOWN_THING","message":"no such thing"}`, v.Thing.SensusID, i))
			}
		}
		if len(errs) > 0 {
			return 422, `{"status":"REJECTED","errors":[` + strings.Join(errs, ",") + `]}`
		}
	}
	s.store(r)
	if r.ep == "alarms" {
		return 201, fmt.Sprintf(`{"batchId":%q,"status":"PROCESSED","recordsProcessed":%d,"recordsAccepted":%d,"recordsRejected":0}`, r.batchID, len(r.items), len(r.items))
	}
	return 200, fmt.Sprintf(`{"status":"ACCEPTED","processed":%d}`, len(r.items))
}

type sensusRef struct {
	SensusID string `json:"sensusID"`
}

// store keeps r's records (mu held).
func (s *fakeStore) store(r *req) {
	if r.batchID != "" {
		if s.seen[r.batchID] {
			return
		}
		s.seen[r.batchID] = true
	}
	s.order = append(s.order, r.ep+":"+r.dev)
	for _, it := range r.items {
		var v struct {
			SensusID string `json:"sensusID"`
		}
		_ = json.Unmarshal(it, &v)
		switch r.ep {
		case "things":
			s.things[v.SensusID] = it
		case "datastreams":
			s.dss[v.SensusID] = it
		}
		s.got[r.ep] = append(s.got[r.ep], it)
	}
}

func (s *fakeStore) requests() []*req {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*req(nil), s.reqs...)
}

// seqs are the "seq" of the accepted records of an endpoint, in order.
func (s *fakeStore) seqs(ep string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, it := range s.got[ep] {
		out = append(out, seqOf(it))
	}
	return out
}

func seqOf(it []byte) int {
	var v struct {
		Result json.Number `json:"result"`
		Seq    int         `json:"seq"`
		Params struct {
			Seq int `json:"seq"`
		} `json:"parameters"`
	}
	_ = json.Unmarshal(it, &v)
	if v.Seq != 0 {
		return v.Seq
	}
	return v.Params.Seq
}

// env is one forwarder under test with its queues, stores and server.
type env struct {
	t      *testing.T
	dir    string
	srv    *httptest.Server
	fs     *fakeStore
	data   queue.Queue
	alarms queue.Queue
	state  *State
	dl     *deadletter.Store
	cfg    Config
	clock  Clock
	log    *logrus.Entry
	logs   *logBuffer

	cancel context.CancelFunc
	done   chan error
	fwd    *Forwarder
	// reopen, when set, closes and reopens the queues on restart.
	reopen func()
}

const testSecret = "s3cret for tests"

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, fs: newFakeStore(t), data: queue.NewMemory(queue.Options{}), alarms: queue.NewMemory(queue.Options{})}
	e.fs.verifier = &signer.Verifier{Lookup: func(id string) (signer.Secret, bool) {
		return signer.NewSecret(testSecret), id == "svc-test"
	}}
	e.srv = httptest.NewServer(e.fs)
	t.Cleanup(e.srv.Close)
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cfg = DefaultConfig()
	e.cfg.URL = e.srv.URL
	e.cfg.ServiceID = "svc-test"
	e.cfg.SecretFile = filepath.Join(dir, "secret")
	e.cfg.Batch.Linger = Duration(20 * time.Millisecond)
	e.cfg.Retry = Retry{Min: Duration(5 * time.Millisecond), Max: Duration(50 * time.Millisecond)}
	e.cfg.RequestsPerSecond = 1000
	e.cfg.Timeout = Duration(5 * time.Second)
	e.openStores()
	e.logs = &logBuffer{}
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	l.SetOutput(e.logs)
	l.SetFormatter(&logrus.JSONFormatter{})
	e.log = logrus.NewEntry(l)
	t.Cleanup(func() {
		e.stop()
		if e.state != nil {
			e.state.Close()
		}
	})
	return e
}

func (e *env) openStores() {
	var err error
	if e.state, err = OpenState(filepath.Join(e.dir, "state.db")); err != nil {
		e.t.Fatal(err)
	}
	if e.dl, err = deadletter.Open(filepath.Join(e.dir, "deadletters"), deadletter.Options{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) start() {
	e.t.Helper()
	f, err := New(e.cfg, Deps{Data: e.data, Alarms: e.alarms, State: e.state, DeadLetters: e.dl, Clock: e.clock, Log: e.log})
	if err != nil {
		e.t.Fatal(err)
	}
	e.fwd = f
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- f.Run(ctx) }()
}

// stop cancels Run and waits for it.
func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		e.t.Fatal("Run did not return after cancel")
	}
	e.cancel = nil
}

// restart simulates a crash: Run stops, the stores are reopened from disk.
func (e *env) restart() {
	e.stop()
	if err := e.state.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.openStores()
	if e.reopen != nil {
		e.reopen()
	}
	e.start()
}

// waitFor polls cond up to 10s.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s; requests: %s", what, e.describe())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// drained waits until both queues are committed to their ends.
func (e *env) drained() {
	e.t.Helper()
	e.waitFor("queues drained", func() bool { return backlog(e.data) == 0 && backlog(e.alarms) == 0 })
}

func (e *env) describe() string {
	var b strings.Builder
	for _, r := range e.fs.requests() {
		fmt.Fprintf(&b, "\n  #%d %s batch=%s n=%d", r.n, r.ep, r.batchID, len(r.items))
	}
	return b.String()
}

// obs appends observations with seq numbers for a device.
func (e *env) obs(dev string, seqs ...int) {
	e.t.Helper()
	var recs []queue.Record
	for _, s := range seqs {
		recs = append(recs, obsRec(dev, s))
	}
	if err := e.data.Append(context.Background(), recs...); err != nil {
		e.t.Fatal(err)
	}
}

func dsID(dev string) string { return "temp@ai0@" + dev + "@047" }

func obsRec(dev string, seq int) queue.Record {
	body := fmt.Sprintf(`{"phenomenonTime":"2024-01-01T12:00:00Z","result":%d.5,"datastream":{"sensusID":%q},"parameters":{"seq":%d}}`,
		seq, dsID(dev), seq)
	return queue.Record{Kind: queue.Observation, DeviceID: dev, CustomerID: "047", Ref: dsID(dev), Body: []byte(body)}
}

func alarmRec(dev string, seq int) queue.Record {
	body := fmt.Sprintf(`{"alarmId":"al-%d","alarmType":"HIGH_LEVEL","severity":"HIGH","status":"ACTIVE","triggeredAt":"2024-01-01T10:29:45Z","seq":%d}`, seq, seq)
	return queue.Record{Kind: queue.Alarm, DeviceID: dev, CustomerID: "047", Ref: dev + "@047", Body: []byte(body)}
}

func rawRec(dev string, seq int) queue.Record {
	body := fmt.Sprintf(`{"deviceId":%q,"customerId":"047","transportType":"TCP","dataType":"SENSOR_DATA","deviceType":"t","payload":"0a","timestamp":"2024-01-01T12:00:00Z","seq":%d}`, dev, seq)
	return queue.Record{Kind: queue.Raw, DeviceID: dev, CustomerID: "047", Ref: dev + "@047", Body: []byte(body)}
}

// entities registers a thing and its datastream in the state store.
func (e *env) entities(dev string) {
	e.t.Helper()
	thing := fmt.Sprintf(`{"name":%q,"description":"pump","customerId":"047","sensusID":"%s@047"}`, dev, dev)
	if _, err := e.state.UpsertThing(dev+"@047", []byte(thing)); err != nil {
		e.t.Fatal(err)
	}
	ds := fmt.Sprintf(`{"name":"Temperature","description":"t","observationType":"OM_Measurement","unitOfMeasurement":{"name":"Celsius","symbol":"°C","definition":"x"},"thing":{"sensusID":"%s@047"},"sensor":{"name":"s"},"observedProperty":{"name":"T"},"sensusID":%q}`, dev, dsID(dev))
	if _, err := e.state.UpsertDatastream(dsID(dev), dev+"@047", []byte(ds)); err != nil {
		e.t.Fatal(err)
	}
}

func seqRange(a, b int) []int {
	var out []int
	for i := a; i <= b; i++ {
		out = append(out, i)
	}
	return out
}

// assertSeqs checks the records that arrived one by one: same set, no
// duplicate, nothing missing.
func assertSeqs(t *testing.T, what string, got, want []int) {
	t.Helper()
	g := append([]int(nil), got...)
	w := append([]int(nil), want...)
	sort.Ints(g)
	sort.Ints(w)
	if fmt.Sprint(g) != fmt.Sprint(w) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// deadSeqs are the seqs in the dead-letter store with their reasons.
func (e *env) deadSeqs() map[int]deadletter.Entry {
	e.t.Helper()
	es, err := e.dl.List(deadletter.Filter{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[int]deadletter.Entry{}
	for _, en := range es {
		var d DeadRecord
		if err := json.Unmarshal(en.Data, &d); err != nil {
			e.t.Fatal(err)
		}
		out[seqOf(d.Body)] = en
	}
	return out
}

// logBuffer collects log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines are the logged entries with msg containing s.
func (l *logBuffer) lines(s string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, ln := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(ln), &m) == nil && strings.Contains(fmt.Sprint(m["msg"]), s) {
			out = append(out, m)
		}
	}
	return out
}

// counter reads one counter of a vector.
func counter(t *testing.T, v *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := v.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.Counter.GetValue()
}
