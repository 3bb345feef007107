package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// The happy path: entities first (thing, then datastream), then the
// observations of each device in one batch each, every request signed.
func TestDeliversEntitiesThenObservations(t *testing.T) {
	e := newEnv(t)
	e.fs.strict = true
	e.entities("FST1")
	e.entities("FST2")
	e.obs("FST1", 1, 2)
	e.obs("FST2", 3)
	e.obs("FST1", 4)
	e.start()
	e.drained()
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2, 3, 4})
	reqs := e.fs.requests()
	var eps []string
	for _, r := range reqs {
		if r.authErr != nil {
			t.Errorf("request %d: %v", r.n, r.authErr)
		}
		eps = append(eps, fmt.Sprintf("%s:%d", r.ep, len(r.items)))
	}
	if got := strings.Join(eps, " "); got != "things:2 datastreams:2 observations:3 observations:1" {
		t.Fatalf("requests: %s", got)
	}
	// the observation batch body as the contract has it
	var body struct {
		Observations []json.RawMessage `json:"observations"`
		DeviceID     string            `json:"deviceId"`
		CustomerID   string            `json:"customerId"`
		BatchType    string            `json:"batchType"`
		BatchID      string            `json:"batchId"`
	}
	if err := json.Unmarshal(reqs[2].body, &body); err != nil {
		t.Fatal(err)
	}
	want := "vigd-" + e.state.Epoch() + "-data-1-1-3"
	if body.DeviceID != "FST1" || body.CustomerID != "047" || body.BatchType != "OBSERVATIONS" || body.BatchID != want {
		t.Fatalf("envelope: %+v (want batchId %s)", body, want)
	}
	if !strings.HasPrefix(string(reqs[2].body), `{"observations":[{"phenomenonTime"`) {
		t.Fatalf("body: %s", reqs[2].body)
	}
	if k, u := e.state.EntityCounts(Thing); k != 2 || u != 0 {
		t.Fatalf("things known %d unsent %d", k, u)
	}
	if e.fwd.LastDelivery().IsZero() {
		t.Fatal("no last delivery")
	}
	// An unchanged definition is not posted again, a changed one is.
	if ch, _ := e.state.UpsertThing("FST1@047", []byte(`{"name":"FST1","description":"pump","customerId":"047","sensusID":"FST1@047"}`)); ch {
		t.Fatal("unchanged thing reported changed")
	}
	if ch, _ := e.state.UpsertThing("FST1@047", []byte(`{"name":"FST1","description":"new pump","customerId":"047","sensusID":"FST1@047"}`)); !ch {
		t.Fatal("changed thing not reported")
	}
	e.waitFor("changed thing posted", func() bool { return len(e.fs.requests()) == 5 })
	if r := e.fs.requests()[4]; r.ep != "things" || !strings.Contains(string(r.items[0]), "new pump") {
		t.Fatalf("5th request: %s %s", r.ep, r.body)
	}
}

func TestAlarmsBodyAndGzip(t *testing.T) {
	e := newEnv(t)
	e.cfg.Gzip = true
	e.alarms.Append(context.Background(), alarmRec("FST1", 1), alarmRec("FST1", 2))
	e.start()
	e.drained()
	reqs := e.fs.requests()
	if len(reqs) != 1 || !reqs[0].gzip || reqs[0].authErr != nil {
		t.Fatalf("requests %d gzip %v auth %v", len(reqs), reqs[0].gzip, reqs[0].authErr)
	}
	var body map[string]json.RawMessage
	json.Unmarshal(reqs[0].body, &body)
	for _, k := range []string{"batchId", "timestamp", "deviceId", "customerId", "alarms"} {
		if body[k] == nil {
			t.Errorf("alarm body lacks %s: %s", k, reqs[0].body)
		}
	}
	if !strings.HasPrefix(string(reqs[0].body), `{"batchId":"vigd-`) {
		t.Fatalf("body: %s", reqs[0].body)
	}
	assertSeqs(t, "alarms", e.fs.seqs("alarms"), []int{1, 2})
}

// 503 then 200: the retried batch keeps its batchId.
func TestRetryKeepsBatchID(t *testing.T) {
	e := newEnv(t)
	var n atomic.Int32
	e.fs.script = func(r *req) reply {
		if r.ep == "observations" && n.Add(1) <= 3 {
			return reply{status: 503, body: `{"error":"UNAVAILABLE"}`}
		}
		return reply{}
	}
	e.obs("FST1", 1, 2, 3)
	e.start()
	e.drained()
	reqs := e.fs.requests()
	if len(reqs) != 4 {
		t.Fatalf("requests: %s", e.describe())
	}
	for _, r := range reqs {
		if r.batchID != reqs[0].batchID || string(r.body) != string(reqs[0].body) {
			t.Fatalf("retry changed the batch: %s vs %s", r.body, reqs[0].body)
		}
	}
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2, 3})
	if len(e.logs.lines("eventstore unreachable")) != 1 || len(e.logs.lines("eventstore reachable again")) != 1 {
		t.Fatalf("streak logging: %d warn, %d recovery", len(e.logs.lines("eventstore unreachable")), len(e.logs.lines("eventstore reachable again")))
	}
}

// 202: the rejected records are dead letters with the server's reason;
// the accepted ones are never sent again.
func TestPartialSuccess(t *testing.T) {
	e := newEnv(t)
	e.fs.script = func(r *req) reply {
		if r.ep != "observations" {
			return reply{}
		}
		e.fs.mu.Lock()
		for i, it := range r.items {
			if i != 1 && i != 3 {
				e.fs.got["observations"] = append(e.fs.got["observations"], it)
			}
		}
		e.fs.mu.Unlock()
		return reply{status: 202, body: `{"batchId":"x","status":"PARTIALLY_PROCESSED","recordsProcessed":5,"recordsAccepted":3,"recordsRejected":2,
			"errors":[{"recordId":"r1","recordIndex":1,"error":"VALIDATION_ERROR","message":"Invalid timestamp format"},
			          {"recordIndex":3,"error":"VALIDATION_ERROR","message":"result out of range"}]}`}
	}
	rej0 := counter(t, recordsTotal, "observation", "rejected")
	acc0 := counter(t, recordsTotal, "observation", "accepted")
	req0 := counter(t, requestsTotal, "observations", "202")
	e.obs("FST1", 10, 11, 12, 13, 14)
	e.start()
	e.drained()
	if r, a, q := counter(t, recordsTotal, "observation", "rejected")-rej0, counter(t, recordsTotal, "observation", "accepted")-acc0,
		counter(t, requestsTotal, "observations", "202")-req0; r != 2 || a != 3 || q != 1 {
		t.Fatalf("metrics: rejected +%v accepted +%v requests{202} +%v", r, a, q)
	}
	if len(e.fs.requests()) != 1 {
		t.Fatalf("requests: %s", e.describe())
	}
	assertSeqs(t, "accepted", e.fs.seqs("observations"), []int{10, 12, 14})
	dead := e.deadSeqs()
	if len(dead) != 2 || dead[11].Reason != "VALIDATION_ERROR: Invalid timestamp format" ||
		dead[13].Reason != "VALIDATION_ERROR: result out of range" || dead[11].Where != "observations/202" {
		t.Fatalf("dead letters: %+v", dead)
	}
}

// 202 for alarms names the records by alarmId.
func TestPartialAlarmsByAlarmID(t *testing.T) {
	e := newEnv(t)
	e.fs.script = func(r *req) reply {
		return reply{status: 202, body: `{"status":"PARTIALLY_PROCESSED","recordsRejected":1,
			"errors":[{"alarmId":"al-2","error":"VALIDATION_ERROR","message":"bad severity"}]}`}
	}
	e.alarms.Append(context.Background(), alarmRec("FST1", 1), alarmRec("FST1", 2), alarmRec("FST1", 3))
	e.start()
	e.drained()
	dead := e.deadSeqs()
	if len(dead) != 1 || dead[2].Reason != "VALIDATION_ERROR: bad severity" {
		t.Fatalf("dead letters: %+v", dead)
	}
}

// 400: halves down to the single bad records, which become dead letters.
func TestBadRequestSplits(t *testing.T) {
	e := newEnv(t)
	bad := map[int]bool{3: true, 6: true}
	e.fs.script = func(r *req) reply {
		for _, it := range r.items {
			if bad[seqOf(it)] {
				return reply{status: 400, body: fmt.Sprintf(`{"error":"VALIDATION_ERROR","message":"record seq %d is invalid"}`, seqOf(it))}
			}
		}
		return reply{}
	}
	e.obs("FST1", seqRange(1, 8)...)
	e.start()
	e.drained()
	assertSeqs(t, "accepted", e.fs.seqs("observations"), []int{1, 2, 4, 5, 7, 8})
	dead := e.deadSeqs()
	if len(dead) != 2 || dead[3].Reason != "VALIDATION_ERROR: record seq 3 is invalid" || dead[6].Where != "observations/400" {
		t.Fatalf("dead letters: %+v", dead)
	}
	// ids of halves derive from the batch's
	ids := map[string]bool{}
	for _, r := range e.fs.requests() {
		ids[r.batchID] = true
	}
	root := "vigd-" + e.state.Epoch() + "-data-1-1-8"
	for _, id := range []string{root, root + "-a", root + "-b", root + "-a-b", root + "-b-a"} {
		if !ids[id] {
			t.Errorf("no request with batchId %s: %s", id, e.describe())
		}
	}
	// order kept: accepted in queue order
	if got := fmt.Sprint(e.fs.seqs("observations")); got != "[1 2 4 5 7 8]" {
		t.Fatalf("order: %s", got)
	}
}

// 413: halve and resend; records all arrive.
func TestTooLargeHalves(t *testing.T) {
	e := newEnv(t)
	e.fs.script = func(r *req) reply {
		if len(r.items) > 2 {
			return reply{status: 413, body: `{"error":"PAYLOAD_TOO_LARGE"}`}
		}
		return reply{}
	}
	e.obs("FST1", seqRange(1, 7)...)
	e.start()
	e.drained()
	if got := fmt.Sprint(e.fs.seqs("observations")); got != "[1 2 3 4 5 6 7]" {
		t.Fatalf("got %s", got)
	}
	if len(e.deadSeqs()) != 0 {
		t.Fatal("dead letters for 413")
	}
}

// 409 is accepted.
func TestDuplicateIsAccepted(t *testing.T) {
	e := newEnv(t)
	e.fs.script = func(r *req) reply { return reply{status: 409, body: `{"error":"DUPLICATE"}`} }
	e.obs("FST1", 1, 2)
	e.start()
	e.drained()
	if len(e.fs.requests()) != 1 || len(e.deadSeqs()) != 0 {
		t.Fatalf("requests: %s", e.describe())
	}
}

// 401/403/404: everything kept, an error logged once per streak, retried
// until the server takes it.
func TestRefusedKeepsRecords(t *testing.T) {
	for _, status := range []int{401, 403, 404} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newEnv(t)
			var n atomic.Int32
			e.fs.script = func(r *req) reply {
				if n.Add(1) <= 5 {
					return reply{status: status, body: `{"error":"NOPE","message":"service id unknown"}`}
				}
				return reply{}
			}
			e.obs("FST1", 1, 2, 3)
			e.start()
			e.waitFor("refusals", func() bool { return n.Load() >= 3 })
			if st := e.fwd.Status(); st.State != "refused" || !strings.Contains(st.LastError, fmt.Sprint(status)) {
				t.Errorf("status while refused: %+v", st)
			}
			e.drained()
			assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2, 3})
			errs := e.logs.lines("eventstore refused")
			if len(errs) != 1 || errs[0]["level"] != "error" || errs[0]["endpoint"] != "observations" ||
				!strings.Contains(fmt.Sprint(errs[0]["error"]), fmt.Sprintf("%d NOPE: service id unknown", status)) {
				t.Fatalf("error log: %v", errs)
			}
			if len(e.logs.lines("request failed, retrying")) != 4 {
				t.Fatalf("debug repeats: %d", len(e.logs.lines("request failed, retrying")))
			}
		})
	}
}

// A wrong signature secret is refused by the server's verifier (401) and
// nothing is lost.
func TestBadSecretRefusedNothingLost(t *testing.T) {
	e := newEnv(t)
	e.fs.verifier.Lookup = func(string) (signerSecret, bool) { return signerNewSecret("other"), true }
	e.obs("FST1", 1)
	e.start()
	e.waitFor("401s", func() bool { return len(e.fs.requests()) >= 3 })
	e.stop()
	if backlog(e.data) != 1 || len(e.deadSeqs()) != 0 {
		t.Fatalf("backlog %d", backlog(e.data))
	}
}

// Raw records: one request each with the record as the whole body; with
// raw_enabled false they are consumed unsent.
func TestRaw(t *testing.T) {
	e := newEnv(t)
	e.data.Append(context.Background(), rawRec("FST1", 1), rawRec("FST1", 2), obsRec("FST1", 3))
	e.start()
	e.drained()
	var eps []string
	for _, r := range e.fs.requests() {
		eps = append(eps, r.ep)
		if r.ep == "raw" && (!strings.HasPrefix(string(r.body), `{"batchId":"vigd-`+e.state.Epoch()+`-data-1-`) ||
			!strings.Contains(string(r.body), `-1","deviceId":"FST1","customerId":"047","transportType":"TCP"`)) {
			t.Fatalf("raw body: %s", r.body)
		}
	}
	if strings.Join(eps, " ") != "raw raw observations" {
		t.Fatalf("requests %v", eps)
	}
	e.stop()

	e2 := newEnv(t)
	e2.cfg.RawEnabled = false
	e2.data.Append(context.Background(), rawRec("FST1", 1), obsRec("FST1", 3))
	e2.start()
	e2.drained()
	if r := e2.fs.requests(); len(r) != 1 || r[0].ep != "observations" {
		t.Fatalf("requests: %s", e2.describe())
	}
}

// Retry-After is the least wait; measured on a fake clock.
func TestRetryAfter(t *testing.T) {
	e := newEnv(t)
	fc := newFakeClock()
	e.clock = fc
	var n atomic.Int32
	e.fs.script = func(r *req) reply {
		switch n.Add(1) {
		case 1:
			return reply{status: 429, header: map[string]string{"Retry-After": "7"}}
		case 2:
			return reply{status: 503, header: map[string]string{"Retry-After": fc.Now().Add(90 * time.Second).UTC().Format(httpTimeFormat)}}
		case 3:
			return reply{status: 503}
		}
		return reply{}
	}
	e.cfg.Batch.Linger = 0
	e.obs("FST1", 1)
	e.start()
	e.drained()
	waits := fc.waits()
	if len(waits) != 3 {
		t.Fatalf("waits %v", waits)
	}
	if waits[0] < 7*time.Second || waits[0] > 8*time.Second {
		t.Errorf("after Retry-After 7: waited %s", waits[0])
	}
	// an HTTP date 90s ahead (to the second)
	if waits[1] < 89*time.Second || waits[1] > 91*time.Second {
		t.Errorf("after Retry-After date: waited %s", waits[1])
	}
	// no header: the backoff (min 5ms, third attempt: 10..20ms)
	if waits[2] < 10*time.Millisecond || waits[2] > 20*time.Millisecond {
		t.Errorf("backoff: waited %s", waits[2])
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.URL = "ftp://x"
	c.Batch.MaxRecords = -1
	c.Retry = Retry{Min: Duration(time.Minute), Max: Duration(time.Second)}
	c.Signing.Lines = []string{"method", "bogus"}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"url: must be", "service_id: is required", "secret_file: exactly one",
		"batch.max_records: must be", "retry.max: must be", "signing.lines[1]: \"bogus\""} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	ok := DefaultConfig()
	ok.URL, ok.ServiceID, ok.SecretCredential = "https://x.example", "svc", "vigd-secret"
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

// YAML on top of DefaultConfig: durations as strings, untouched keys keep
// their defaults.
func TestConfigYAML(t *testing.T) {
	c := DefaultConfig()
	src := `
url: https://xcloud.example.com
service_id: gw-1
secret_credential: vigd-api-secret
gzip: true
timeout: 45s
batch:
  max_records: 200
  linger: 250ms
retry:
  max: 2m
signing:
  date_format: "2006-01-02T15:04:05Z"
paths:
  raw: /custom/raw
`
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	if c.Timeout.D() != 45*time.Second || c.Batch.Linger.D() != 250*time.Millisecond || c.Retry.Max.D() != 2*time.Minute ||
		c.Retry.Min.D() != time.Second || c.Batch.MaxBytes != 1<<20 || c.Batch.MaxRecords != 200 ||
		c.Paths.Raw != "/custom/raw" || c.Paths.Things != DefaultThingsPath || !c.RawEnabled || !c.Gzip ||
		c.RequestsPerSecond != 10 || len(c.Signing.Lines) != 5 || c.Signing.DateFormat != "2006-01-02T15:04:05Z" {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var d Duration
	if err := yaml.Unmarshal([]byte(`soon`), &d); err == nil || !strings.Contains(err.Error(), `"soon" is not a duration`) {
		t.Fatalf("bad duration: %v", err)
	}
	out, _ := yaml.Marshal(struct{ D Duration }{Duration(90 * time.Second)})
	if string(out) != "d: 1m30s\n" {
		t.Fatalf("marshal %q", out)
	}
}

func TestNewRefusesBadSetup(t *testing.T) {
	_, err := New(Config{URL: "nope"}, Deps{})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{"both queues are required", "state and dead-letter", "url: must be", "service_id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	e := newEnv(t)
	e.cfg.SecretFile = filepath.Join(e.dir, "missing")
	if _, err := New(e.cfg, Deps{Data: e.data, Alarms: e.alarms, State: e.state, DeadLetters: e.dl}); !errors.Is(err, ErrConfig) ||
		strings.Contains(err.Error(), testSecret) {
		t.Fatalf("missing secret: %v", err)
	}
}
