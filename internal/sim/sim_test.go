package sim

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigd/vigd/forwarder/signer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	dev      = "FST300234030000001"
	cust     = "047"
	thingSID = dev + "@" + cust
	dsSID    = "T0@analogInput@" + dev + "@" + cust
)

var (
	thingJSON = `{"name":"FST300234030000001","description":"Pump controller","properties":{"serialNumber":"300234030000001","model":"FST-2000"},"customerId":"047","sensusID":"FST300234030000001@047"}`
	dsJSON    = `{"name":"Temperature","description":"Primary","observationType":"OM_Measurement","unitOfMeasurement":{"name":"Celsius","symbol":"°C","definition":"http://qudt/DegreeCelsius"},"thing":{"sensusID":"FST300234030000001@047"},"sensor":{"name":"TempSensor01"},"observedProperty":{"name":"Temperature"},"sensusID":"T0@analogInput@FST300234030000001@047"}`
)

type fixture struct {
	t   *testing.T
	s   *Server
	c   *Client
	ctx context.Context
	now *clock
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	ck := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	if cfg.Now == nil {
		cfg.Now = ck.Now
	}
	if cfg.Services == nil {
		cfg.Services = map[string]signer.Secret{"svc": signer.NewSecret("s3cr3t")}
	}
	s := StartTest(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := s.Client()
	c.ServiceID, c.Secret, c.Now = "svc", signer.NewSecret("s3cr3t"), cfg.Now
	return &fixture{t: t, s: s, c: c, ctx: ctx, now: ck}
}

func (f *fixture) post(kind, body string, opt *PostOptions) *Response {
	f.t.Helper()
	r, err := f.c.Post(f.ctx, kind, []byte(body), opt)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// expect checks the status and returns the decoded body.
func (f *fixture) expect(r *Response, status int) map[string]any {
	f.t.Helper()
	if r.Status != status {
		f.t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		f.t.Fatalf("body %q: %v", r.Body, err)
	}
	return m
}

func (f *fixture) expectError(r *Response, status int, code string) map[string]any {
	f.t.Helper()
	m := f.expect(r, status)
	if m["error"] != code {
		f.t.Fatalf("error %v, want %s: %s", m["error"], code, r.Body)
	}
	return m
}

func (f *fixture) counts() Counts {
	f.t.Helper()
	c, err := f.c.Counts(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) records(q Query) []Record {
	f.t.Helper()
	r, err := f.c.Records(f.ctx, q)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func things(recs ...string) string { return `{"things":[` + strings.Join(recs, ",") + `]}` }
func datastreams(recs ...string) string {
	return `{"datastreams":[` + strings.Join(recs, ",") + `]}`
}

func obs(result string, ds string) string {
	return `{"phenomenonTime":"2026-03-01T07:59:00Z","result":` + result + `,"resultTime":"2026-03-01T07:59:00Z","datastream":` + ds + `}`
}

func obsBatch(batchID string, recs ...string) string {
	b := `{"observations":[` + strings.Join(recs, ",") + `],"deviceId":"` + dev + `","customerId":"` + cust + `","batchType":"OBSERVATIONS"`
	if batchID != "" {
		b += `,"batchId":"` + batchID + `"`
	}
	return b + "}"
}

func nObs(batchID string, n int) string {
	recs := make([]string, n)
	for i := range recs {
		recs[i] = obs(fmt.Sprint(i), `{"sensusID":"`+dsSID+`"}`)
	}
	return obsBatch(batchID, recs...)
}

func alarm(id, extra string) string {
	return `{"alarmId":"` + id + `","alarmType":"HIGH_LEVEL","severity":"HIGH","status":"ACTIVE","triggeredAt":"2026-03-01T07:59:45Z"` + extra + `}`
}

func alarmBatch(batchID string, recs ...string) string {
	return `{"batchId":"` + batchID + `","timestamp":"2026-03-01T08:00:00Z","deviceId":"` + dev + `","customerId":"` + cust +
		`","alarms":[` + strings.Join(recs, ",") + `]}`
}

func (f *fixture) setup() {
	f.t.Helper()
	f.expect(f.post(Things, things(thingJSON), nil), 200)
	f.expect(f.post(Datastreams, datastreams(dsJSON), nil), 200)
}

func TestAuthRefusals(t *testing.T) {
	f := newFixture(t, Config{})
	body := things(thingJSON)

	bad := *f.c
	bad.Secret = signer.NewSecret("wrong")
	r, err := bad.Post(f.ctx, Things, []byte(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := f.expectError(r, 401, ErrCodeBadSignature)
	if strings.Contains(string(r.Body), "s3cr3t") {
		t.Fatal("secret in answer")
	}
	if m["status"] != "REJECTED" || m["timestamp"] != "2026-03-01T08:00:00Z" {
		t.Fatalf("body %s", r.Body)
	}

	bad.ServiceID, bad.Secret = "nobody", signer.NewSecret("s3cr3t")
	r, _ = bad.Post(f.ctx, Things, []byte(body), nil)
	f.expectError(r, 401, ErrCodeUnknownService)

	f.expectError(f.post(Things, body, &PostOptions{Date: f.now.Now().Add(-16 * time.Minute)}), 401, ErrCodeStaleDate)
	f.expectError(f.post(Things, body, &PostOptions{Date: f.now.Now().Add(16 * time.Minute)}), 401, ErrCodeStaleDate)
	// 14 minutes is within the skew.
	f.expect(f.post(Things, body, &PostOptions{Date: f.now.Now().Add(-14 * time.Minute)}), 200)

	wrongMD5 := signer.BodyMD5([]byte("something else"))
	m = f.expectError(f.post(Things, body, &PostOptions{ContentMD5: &wrongMD5}), 400, ErrCodeMD5Mismatch)
	if !strings.Contains(m["message"].(string), wrongMD5) {
		t.Fatalf("message %v", m["message"])
	}
	none := ""
	f.expectError(f.post(Things, body, &PostOptions{ContentMD5: &none}), 400, ErrCodeMD5Mismatch)
	// MD5 of the uncompressed bytes is wrong for a gzip body.
	plain := signer.BodyMD5([]byte(body))
	f.expectError(f.post(Things, body, &PostOptions{Gzip: true, ContentMD5: &plain}), 400, ErrCodeMD5Mismatch)

	// A signature over a different query string does not verify.
	req, _ := http.NewRequest("POST", f.s.URL()+Path(Things)+"?a=2", bytes.NewReader([]byte(body)))
	h, _ := signer.Sign(signer.Config{}, "POST", Path(Things)+"?a=1", "application/json",
		signer.BodyMD5([]byte(body)), f.now.Now(), "svc", signer.NewSecret("s3cr3t"))
	h.Apply(req.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("query tampering: %d", resp.StatusCode)
	}

	c := f.counts()
	if c.Accepted[Things] != 1 || c.ByStatus["401"] != 5 || c.ByStatus["400"] != 3 || c.ByStatus["200"] != 1 || c.Requests != 9 {
		t.Fatalf("counts %+v", c)
	}
}

func TestSignerTransportAccepted(t *testing.T) {
	// The forwarder's RoundTripper against the simulator: gzip body with its
	// MD5 computed by the transport from GetBody.
	f := newFixture(t, Config{})
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(things(thingJSON)))
	zw.Close()
	hc := &http.Client{Transport: &signer.Transport{ServiceID: "svc", Secret: signer.NewSecret("s3cr3t"), Now: f.now.Now}}
	req, _ := http.NewRequest("POST", f.s.URL()+Path(Things)+"?source=test", bytes.NewReader(buf.Bytes()))
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	reqs, _ := f.c.Requests(f.ctx, 0)
	if len(reqs) != 1 || !reqs[0].Gzip || reqs[0].Path != Path(Things)+"?source=test" || reqs[0].ServiceID != "svc" {
		t.Fatalf("log %+v", reqs)
	}
}

func TestGzipAndSizeLimits(t *testing.T) {
	f := newFixture(t, Config{MaxBytes: 64 << 10})
	m := f.expect(f.post(Things, things(thingJSON), &PostOptions{Gzip: true}), 200)
	if m["status"] != "ACCEPTED" || m["thingsProcessed"] != 1.0 || m["timestamp"] != "2026-03-01T08:00:00Z" {
		t.Fatalf("answer %v", m)
	}
	f.expect(f.post(Datastreams, datastreams(dsJSON), &PostOptions{Gzip: true}), 200)

	// Over MaxBytes before compression, though small on the wire.
	big := `{"things":[` + thingJSON + `],"pad":"` + strings.Repeat("x", 70<<10) + `"}`
	f.expectError(f.post(Things, big, &PostOptions{Gzip: true}), 413, ErrCodeTooLarge)
	f.expectError(f.post(Things, big, nil), 413, ErrCodeTooLarge)
	f.expectError(f.post(Things, "not json", nil), 400, ErrCodeInvalidJSON)
}

func TestCorruptGzip(t *testing.T) {
	f := newFixture(t, Config{})
	body := []byte("\x1f\x8b garbage")
	h, _ := signer.Sign(signer.Config{}, "POST", Path(Things), "application/json", signer.BodyMD5(body), f.now.Now(), "svc", signer.NewSecret("s3cr3t"))
	req, _ := http.NewRequest("POST", f.s.URL()+Path(Things), bytes.NewReader(body))
	h.Apply(req.Header)
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestRecordCountLimit(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	m := f.expectError(f.post(Observations, nObs("b-1001", 1001), &PostOptions{Gzip: true}), 413, ErrCodeTooManyRecords)
	if !strings.Contains(m["message"].(string), "1001") {
		t.Fatalf("message %v", m)
	}
	f.expect(f.post(Observations, nObs("b-1000", 1000), &PostOptions{Gzip: true}), 200)
	if c := f.counts(); c.Accepted[Observations] != 1000 {
		t.Fatalf("accepted %d", c.Accepted[Observations])
	}
}

func TestReferentialIntegrity(t *testing.T) {
	f := newFixture(t, Config{})
	body := obsBatch("b-1", obs("1.5", `{"sensusID":"`+dsSID+`"}`), obs("2", `{"@iot.id":77}`), obs("3", `{"sensusID":"`+dsSID+`"}`))
	m := f.expectError(f.post(Observations, body, nil), 422, ErrCodeUnknownDS)
	errs := m["errors"].([]any)
	if len(errs) != 3 {
		t.Fatalf("errors %v", errs)
	}
	for i, want := range []string{dsSID, "77", dsSID} {
		e := errs[i].(map[string]any)
		if e["recordId"] != want || e["recordIndex"] != float64(i) || e["error"] != ErrCodeUnknownDS {
			t.Fatalf("error %d: %v", i, e)
		}
	}
	// A datastream before its thing, and alarms of an unknown device.
	m = f.expectError(f.post(Datastreams, datastreams(dsJSON), nil), 422, ErrCodeUnknownThing)
	if e := m["errors"].([]any)[0].(map[string]any); e["recordId"] != thingSID || e["recordIndex"] != 0.0 {
		t.Fatalf("error %v", e)
	}
	f.expectError(f.post(Alarms, alarmBatch("a-1", alarm("x", "")), nil), 422, ErrCodeUnknownThing)
	if c := f.counts(); c.Accepted[Observations]+c.Accepted[Datastreams]+c.Accepted[Alarms] != 0 || c.Batches[Observations] != 0 {
		t.Fatalf("something stored: %+v", c)
	}

	// Thing, then datastream, then the same observations batch (same id: a
	// 422 does not count as received).
	f.setup()
	ents, _ := f.c.Entities(f.ctx, Datastreams)
	if len(ents) != 1 || ents[0].SensusID != dsSID || ents[0].ObservationType != "OM_Measurement" {
		t.Fatalf("entities %+v", ents)
	}
	// @iot.id 77 is still unknown, so resolve it by sensusID only.
	body = obsBatch("b-1", obs("1.5", `{"sensusID":"`+dsSID+`"}`), obs("2", fmt.Sprintf(`{"@iot.id":%d}`, ents[0].IotID)),
		obs("3", `{"@iot.id":999,"sensusID":"`+dsSID+`"}`))
	m = f.expect(f.post(Observations, body, nil), 200)
	if m["observationsProcessed"] != 3.0 || m["status"] != "ACCEPTED" {
		t.Fatalf("answer %v", m)
	}
	recs := f.records(Query{Kind: Observations, Datastream: dsSID})
	if len(recs) != 3 || recs[1].DatastreamID != ents[0].IotID || recs[2].Datastream != dsSID {
		t.Fatalf("records %+v", recs)
	}
	m = f.expect(f.post(Alarms, alarmBatch("a-1", alarm("x", "")), nil), 201)
	if m["status"] != "PROCESSED" || m["batchId"] != "a-1" || m["recordsAccepted"] != 1.0 || m["recordsRejected"] != 0.0 {
		t.Fatalf("alarm answer %v", m)
	}
}

func TestDuplicateBatch(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	f.expect(f.post(Observations, nObs("dup-1", 5), nil), 200)
	m := f.expectError(f.post(Observations, nObs("dup-1", 5), &PostOptions{Gzip: true}), 409, ErrCodeDuplicate)
	if m["batchId"] != "dup-1" {
		t.Fatalf("answer %v", m)
	}
	// Same batch id on another endpoint is another batch.
	f.expect(f.post(Alarms, alarmBatch("dup-1", alarm("a", "")), nil), 201)
	f.expectError(f.post(Alarms, alarmBatch("dup-1", alarm("a", "")), nil), 409, ErrCodeDuplicate)
	// No batch id: no dedupe.
	f.expect(f.post(Observations, nObs("", 2), nil), 200)
	f.expect(f.post(Observations, nObs("", 2), nil), 200)
	c := f.counts()
	if c.Accepted[Observations] != 9 || c.Duplicates != 2 || c.DuplicateRecords != 6 || c.ByStatus["409"] != 2 {
		t.Fatalf("counts %+v", c)
	}
	if n := len(f.records(Query{Kind: Observations, BatchID: "dup-1"})); n != 5 {
		t.Fatalf("stored %d of dup-1", n)
	}
}

func TestPartialAnswer(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	ds := `{"sensusID":"` + dsSID + `"}`
	body := obsBatch("p-1",
		obs("1", ds),
		obs(`"text"`, ds), // wrong type for OM_Measurement
		obs("3", ds),
		`{"phenomenonTime":"yesterday","result":4,"datastream":`+ds+`}`,
		`42`,
	)
	m := f.expect(f.post(Observations, body, nil), 202)
	if m["status"] != "PARTIALLY_PROCESSED" || m["batchId"] != "p-1" || m["recordsProcessed"] != 5.0 ||
		m["recordsAccepted"] != 2.0 || m["recordsRejected"] != 3.0 || m["processedAt"] != "2026-03-01T08:00:00Z" {
		t.Fatalf("answer %v", m)
	}
	var idx []float64
	for _, e := range m["errors"].([]any) {
		em := e.(map[string]any)
		idx = append(idx, em["recordIndex"].(float64))
		if em["error"] != ErrCodeValidation || em["message"] == "" {
			t.Fatalf("error %v", em)
		}
	}
	if fmt.Sprint(idx) != "[1 3 4]" {
		t.Fatalf("indexes %v", idx)
	}
	recs := f.records(Query{Kind: Observations})
	if len(recs) != 2 || recs[0].RecordIndex != 0 || recs[1].RecordIndex != 2 {
		t.Fatalf("records %+v", recs)
	}
	// Alarms name the record by alarmId.
	m = f.expect(f.post(Alarms, alarmBatch("a-p", alarm("ok", ""), `{"alarmId":"bad-1","alarmType":"X","severity":"SEVERE","status":"ACTIVE","triggeredAt":"2026-03-01T07:00:00Z"}`), nil), 202)
	if e := m["errors"].([]any)[0].(map[string]any); e["recordId"] != "bad-1" || e["recordIndex"] != 1.0 {
		t.Fatalf("alarm error %v", e)
	}
	if c := f.counts(); c.Rejected[Observations] != 3 || c.Rejected[Alarms] != 1 {
		t.Fatalf("rejected %+v", c.Rejected)
	}
}

func TestWholeBodyInvalid(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	for name, c := range map[string]struct {
		kind, body, code string
	}{
		"not json":           {Observations, `{"observations":[`, ErrCodeInvalidJSON},
		"array top":          {Observations, `[]`, ErrCodeValidation},
		"null top":           {Things, `null`, ErrCodeValidation},
		"no list":            {Things, `{"thing":[]}`, ErrCodeValidation},
		"list not array":     {Things, `{"things":{}}`, ErrCodeValidation},
		"empty list":         {Things, `{"things":[]}`, ErrCodeValidation},
		"no deviceId":        {Observations, `{"observations":[{}],"customerId":"c","batchType":"OBSERVATIONS"}`, ErrCodeValidation},
		"no customerId":      {Observations, `{"observations":[{}],"deviceId":"d","batchType":"OBSERVATIONS"}`, ErrCodeValidation},
		"wrong batchType":    {Observations, `{"observations":[{}],"deviceId":"d","customerId":"c","batchType":"ALARMS"}`, ErrCodeValidation},
		"alarms no batchId":  {Alarms, `{"timestamp":"2026-03-01T08:00:00Z","deviceId":"d","customerId":"c","alarms":[{}]}`, ErrCodeValidation},
		"alarms bad time":    {Alarms, `{"batchId":"x","timestamp":"now","deviceId":"d","customerId":"c","alarms":[{}]}`, ErrCodeValidation},
		"batchId number":     {Things, `{"batchId":5,"things":[` + thingJSON + `]}`, ErrCodeValidation},
		"raw invalid record": {Raw, `{"deviceId":"d","customerId":"c","transportType":"TCP","dataType":"SENSOR_DATA","payload":"0A","timestamp":"2026-03-01T08:00:00Z"}`, ErrCodeValidation},
	} {
		t.Run(name, func(t *testing.T) {
			f.t = t
			f.expectError(f.post(c.kind, c.body, nil), 400, c.code)
		})
	}
}

// TestRecordValidation is a table of single records: accepted (err "") or
// refused in a 202 with a message containing err.
func TestRecordValidation(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	cds := `{"name":"State","observationType":"OM_CategoryObservation","unitOfMeasurement":{"name":null,"symbol":null,"definition":null},"thing":{"sensusID":"` + thingSID + `"},"sensusID":"S@digitalInput@` + thingSID + `"}`
	nds := `{"name":"Count","observationType":"OM_CountObservation","unitOfMeasurement":{},"thing":{"sensusID":"` + thingSID + `"},"sensusID":"C@counter@` + thingSID + `"}`
	tds := `{"name":"Door","observationType":"OM_TruthObservation","unitOfMeasurement":{},"thing":{"sensusID":"` + thingSID + `"},"sensusID":"D@door@` + thingSID + `"}`
	ads := `{"name":"Any","observationType":"OM_Observation","unitOfMeasurement":{},"thing":{"sensusID":"` + thingSID + `"},"sensusID":"A@any@` + thingSID + `"}`
	f.expect(f.post(Datastreams, datastreams(cds, nds, tds, ads), nil), 200)
	ref := func(s string) string { return `{"sensusID":"` + s + `@` + thingSID + `"}` }
	cases := []struct {
		name, kind, rec, err string
	}{
		{"thing ok", Things, `{"name":"n","sensusID":"FST2@047"}`, ""},
		{"thing no name", Things, `{"sensusID":"FST2@047"}`, "name: required"},
		{"thing sensus 1 part", Things, `{"name":"n","sensusID":"FST2"}`, "{deviceId}@{customerId}"},
		{"thing sensus 3 parts", Things, `{"name":"n","sensusID":"a@b@c"}`, "{deviceId}@{customerId}"},
		{"thing sensus empty part", Things, `{"name":"n","sensusID":"@047"}`, "{deviceId}@{customerId}"},
		{"thing customer differs", Things, `{"name":"n","customerId":"048","sensusID":"FST2@047"}`, "differs"},
		{"thing properties array", Things, `{"name":"n","properties":[],"sensusID":"FST2@047"}`, "properties: must be an object"},
		{"thing iot id string", Things, `{"@iot.id":"7","name":"n","sensusID":"FST2@047"}`, "@iot.id"},
		{"thing name number", Things, `{"name":5,"sensusID":"FST2@047"}`, "name: must be a string"},
		{"ds bad type", Datastreams, strings.Replace(dsJSON, "OM_Measurement", "OM_Number", 1), "observationType"},
		{"ds no unit", Datastreams, `{"name":"x","observationType":"OM_Measurement","thing":{"sensusID":"` + thingSID + `"},"sensusID":"X@i@` + thingSID + `"}`, "unitOfMeasurement: required"},
		{"ds unit number", Datastreams, `{"name":"x","observationType":"OM_Measurement","unitOfMeasurement":{"symbol":1},"thing":{"sensusID":"` + thingSID + `"},"sensusID":"X@i@` + thingSID + `"}`, "unitOfMeasurement.symbol"},
		{"ds sensus 3 parts", Datastreams, strings.Replace(dsJSON, "T0@analogInput@", "T0@", 1), "{sensor}@{input}@{deviceId}@{customerId}"},
		{"ds thing mismatch", Datastreams, strings.Replace(dsJSON, `"thing":{"sensusID":"FST300234030000001@047"}`, `"thing":{"sensusID":"FST9@047"}`, 1), "thing.sensusID"},
		{"ds thing empty ref", Datastreams, strings.Replace(dsJSON, `"thing":{"sensusID":"FST300234030000001@047"}`, `"thing":{}`, 1), "needs @iot.id or sensusID"},
		{"obs ok interval", Observations, `{"phenomenonTime":"2026-03-01T07:00:00Z/2026-03-01T07:59:00Z","result":1,"datastream":` + ref("T0@analogInput") + `}`, ""},
		{"obs interval reversed", Observations, `{"phenomenonTime":"2026-03-01T07:59:00Z/2026-03-01T07:00:00Z","result":1,"datastream":` + ref("T0@analogInput") + `}`, "ends before"},
		{"obs no result", Observations, `{"phenomenonTime":"2026-03-01T07:00:00Z","datastream":` + ref("T0@analogInput") + `}`, "result: required"},
		{"obs null result measurement", Observations, `{"phenomenonTime":"2026-03-01T07:00:00Z","result":null,"datastream":` + ref("T0@analogInput") + `}`, "does not fit"},
		{"obs bad resultTime", Observations, `{"phenomenonTime":"2026-03-01T07:00:00Z","resultTime":"2026-03-01 07:00","result":1,"datastream":` + ref("T0@analogInput") + `}`, "resultTime"},
		{"obs offset time ok", Observations, `{"phenomenonTime":"2026-03-01T09:00:00+02:00","result":1.25e3,"datastream":` + ref("T0@analogInput") + `}`, ""},
		{"obs no datastream", Observations, `{"phenomenonTime":"2026-03-01T07:00:00Z","result":1}`, "datastream: required"},
		{"category ok", Observations, obs(`"OPEN"`, ref("S@digitalInput")), ""},
		{"category number", Observations, obs(`1`, ref("S@digitalInput")), "does not fit"},
		{"count ok", Observations, obs(`12`, ref("C@counter")), ""},
		{"count decimal", Observations, obs(`12.5`, ref("C@counter")), "does not fit"},
		{"truth ok", Observations, obs(`true`, ref("D@door")), ""},
		{"truth string", Observations, obs(`"true"`, ref("D@door")), "does not fit"},
		{"any object", Observations, obs(`{"a":[1,2]}`, ref("A@any")), ""},
		{"any null", Observations, obs(`null`, ref("A@any")), ""},
		{"alarm ok full", Alarms, alarm("a1", `,"description":"d","thresholdValue":85.0,"currentValue":92.3,"unit":"percent","location":{"latitude":40.7,"longitude":-74.0},"deviceInfo":{"model":"CD100M"}`), ""},
		{"alarm cleared", Alarms, strings.Replace(alarm("a2", ""), "ACTIVE", "CLEARED", 1), ""},
		{"alarm other type ok", Alarms, strings.Replace(alarm("a3", ""), "HIGH_LEVEL", "DOOR_OPEN", 1), ""},
		{"alarm bad status", Alarms, strings.Replace(alarm("a4", ""), "ACTIVE", "RESOLVED", 1), "status"},
		{"alarm bad severity", Alarms, strings.Replace(alarm("a5", ""), `"HIGH"`, `"high"`, 1), "severity"},
		{"alarm no triggeredAt", Alarms, `{"alarmId":"a6","alarmType":"X","severity":"LOW","status":"ACTIVE"}`, "triggeredAt: required"},
		{"alarm bad triggeredAt", Alarms, strings.Replace(alarm("a7", ""), "2026-03-01T07:59:45Z", "1700000000", 1), "triggeredAt"},
		{"alarm no id", Alarms, `{"alarmType":"X","severity":"LOW","status":"ACTIVE","triggeredAt":"2026-03-01T07:00:00Z"}`, "alarmId: required"},
		{"alarm value string", Alarms, alarm("a8", `,"currentValue":"92"`), "currentValue"},
		{"alarm latitude range", Alarms, alarm("a9", `,"location":{"latitude":91,"longitude":0}`), "latitude"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.t = t
			var body string
			switch c.kind {
			case Things:
				body = things(c.rec)
			case Datastreams:
				body = datastreams(c.rec)
			case Observations:
				body = obsBatch(fmt.Sprint("v-", i), c.rec)
			case Alarms:
				body = alarmBatch(fmt.Sprint("v-", i), c.rec)
			}
			r := f.post(c.kind, body, nil)
			if c.err == "" {
				if r.Status != 200 && r.Status != 201 {
					t.Fatalf("status %d: %s", r.Status, r.Body)
				}
				return
			}
			m := f.expect(r, 202)
			e := m["errors"].([]any)[0].(map[string]any)
			if !strings.Contains(e["message"].(string), c.err) || e["recordIndex"] != 0.0 {
				t.Fatalf("error %v, want message with %q", e, c.err)
			}
		})
	}
}

func TestRawEndpoint(t *testing.T) {
	f := newFixture(t, Config{})
	raw := `{"deviceId":"FST9","customerId":"","transportType":"TCP","dataType":"SENSOR_DATA","deviceType":"","payload":"0a1b","timestamp":"2026-03-01T07:59:58Z","metadata":{"source":"TCP","port":8080}}`
	m := f.expect(f.post(Raw, raw, &PostOptions{Query: "source=tcp"}), 200)
	if m["status"] != "ACCEPTED" || m["rawDataId"] != "raw-1" {
		t.Fatalf("answer %v", m)
	}
	recs := f.records(Query{Kind: Raw, DeviceID: "FST9"})
	if len(recs) != 1 || string(recs[0].Record) != raw {
		t.Fatalf("records %+v", recs)
	}
	withBatch := strings.Replace(raw, `{"deviceId"`, `{"batchId":"r-1","deviceId"`, 1)
	f.expect(f.post(Raw, withBatch, nil), 200)
	f.expectError(f.post(Raw, withBatch, nil), 409, ErrCodeDuplicate)
}

func TestUpsertThings(t *testing.T) {
	f := newFixture(t, Config{})
	f.expect(f.post(Things, things(thingJSON), nil), 200)
	changed := strings.Replace(thingJSON, "Pump controller", "Pump controller v2", 1)
	f.expect(f.post(Things, things(changed), nil), 200)
	ents, _ := f.c.Entities(f.ctx, Things)
	if len(ents) != 1 || ents[0].IotID != 1 || ents[0].DeviceID != dev || ents[0].CustomerID != cust {
		t.Fatalf("entities %+v", ents)
	}
	recs := f.records(Query{Kind: Things})
	if len(recs) != 2 || recs[1].IotID != 1 || !strings.Contains(string(recs[1].Record), "v2") {
		t.Fatalf("records %+v", recs)
	}
	// A given @iot.id is kept; one that belongs to another thing is refused.
	f.expect(f.post(Things, things(`{"@iot.id":2235,"name":"n","sensusID":"FST2@047"}`), nil), 200)
	m := f.expect(f.post(Things, things(`{"@iot.id":2235,"name":"n","sensusID":"FST3@047"}`), nil), 202)
	if e := m["errors"].([]any)[0].(map[string]any); e["recordId"] != "FST3@047" || !strings.Contains(e["message"].(string), "FST2@047") {
		t.Fatalf("error %v", e)
	}
	ents, _ = f.c.Entities(f.ctx, Things)
	if len(ents) != 2 || ents[1].IotID != 2235 {
		t.Fatalf("entities %+v", ents)
	}
	// A datastream may reference its thing by that id.
	ds := strings.Replace(strings.ReplaceAll(dsJSON, "FST300234030000001@047", "FST2@047"),
		`"thing":{"sensusID":"FST2@047"}`, `"thing":{"@iot.id":2235}`, 1)
	f.expect(f.post(Datastreams, datastreams(ds), nil), 200)
	// An observation of FST2's datastream in a batch of another device.
	m = f.expect(f.post(Observations, obsBatch("x", obs("1", `{"sensusID":"T0@analogInput@FST2@047"}`)), nil), 202)
	if e := m["errors"].([]any)[0].(map[string]any); !strings.Contains(e["message"].(string), "belongs to FST2@047") {
		t.Fatalf("error %v", e)
	}
}

func TestRecordsServedBackExactly(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	o1 := `{"phenomenonTime":"2026-03-01T07:59:00Z","result":25.6,"resultTime":"2026-03-01T07:59:00Z","datastream":{"sensusID":"` + dsSID + `","name":"T <&> ü"},"featureOfInterest":{"@iot.id":2235,"name":"Pump Location"}}`
	o2 := `{"phenomenonTime":"2026-03-01T07:58:00Z","result":1.0000000000000002,"datastream":{"@iot.id":1}}`
	f.expect(f.post(Observations, obsBatch("r-1", o1, o2), &PostOptions{Gzip: true}), 200)
	recs := f.records(Query{Kind: Observations, DeviceID: dev})
	if len(recs) != 2 {
		t.Fatalf("records %d", len(recs))
	}
	for i, want := range []string{o1, o2} {
		r := recs[i]
		if string(r.Record) != want {
			t.Errorf("record %d\n got %s\nwant %s", i, r.Record, want)
		}
		if r.Kind != Observations || r.Seq != int64(i+1) || r.BatchID != "r-1" || r.DeviceID != dev || r.CustomerID != cust ||
			r.ServiceID != "svc" || r.RecordIndex != i || r.Datastream != dsSID || r.DatastreamID != 1 ||
			!r.ReceivedAt.Equal(f.now.Now()) {
			t.Errorf("envelope %+v", r)
		}
	}
	for q, n := range map[Query]int{
		{Kind: Observations, DeviceID: "other"}:     0,
		{Kind: Observations, Datastream: "1"}:       2,
		{Kind: Observations, Datastream: "X@y@z@w"}: 0,
		{Kind: Observations, BatchID: "r-1"}:        2,
		{Kind: Observations, AfterSeq: 1}:           1,
		{Kind: Observations, Limit: 1}:              1,
		{Kind: Datastreams, Datastream: dsSID}:      1,
		{Kind: Things, DeviceID: dev}:               1,
		{Kind: Alarms}:                              0,
	} {
		if got := len(f.records(q)); got != n {
			t.Errorf("%+v: %d records, want %d", q, got, n)
		}
	}
	if _, err := f.c.Records(f.ctx, Query{Kind: "bogus"}); err == nil {
		t.Error("bogus kind accepted")
	}
}

func TestReloadAfterRestart(t *testing.T) {
	dir := t.TempDir()
	ck := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	cfg := Config{DataDir: dir, Now: ck.Now, Services: map[string]signer.Secret{"svc": signer.NewSecret("s3cr3t")}}
	s1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, s: s1, c: s1.Client(), ctx: context.Background(), now: ck}
	f.c.ServiceID, f.c.Secret, f.c.Now = "svc", signer.NewSecret("s3cr3t"), ck.Now
	f.setup()
	f.expect(f.post(Observations, nObs("before", 3), nil), 200)
	f.expect(f.post(Alarms, alarmBatch("al-1", alarm("a", "")), nil), 201)
	before := f.records(Query{Kind: Observations})
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := StartTest(t, cfg)
	f.s, f.c.BaseURL = s2, s2.URL()
	c := f.counts()
	if c.Accepted[Observations] != 3 || c.Accepted[Alarms] != 1 || c.Accepted[Things] != 1 || c.Entities[Datastreams] != 1 ||
		c.Batches[Observations] != 1 || c.Requests != 0 {
		t.Fatalf("counts after restart %+v", c)
	}
	after := f.records(Query{Kind: Observations})
	a, _ := json.Marshal(after)
	b, _ := json.Marshal(before)
	if !bytes.Equal(a, b) {
		t.Fatalf("records changed over restart\n%s\n%s", a, b)
	}
	// Batch ids and entities survived: a resend is a duplicate, and a new
	// batch needs no thing or datastream again.
	f.expectError(f.post(Observations, nObs("before", 3), nil), 409, ErrCodeDuplicate)
	f.expectError(f.post(Alarms, alarmBatch("al-1", alarm("a", "")), nil), 409, ErrCodeDuplicate)
	f.expect(f.post(Observations, nObs("after", 2), nil), 200)
	recs := f.records(Query{Kind: Observations})
	if len(recs) != 5 || recs[4].Seq != 5 || recs[4].BatchID != "after" {
		t.Fatalf("records %+v", recs)
	}
	// A thing posted after restart gets the next id.
	f.expect(f.post(Things, things(`{"name":"n","sensusID":"FST2@047"}`), nil), 200)
	ents, _ := f.c.Entities(f.ctx, Things)
	if len(ents) != 2 || ents[1].IotID != 2 {
		t.Fatalf("entities %+v", ents)
	}
}

func TestResetData(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	f.expect(f.post(Observations, nObs("b", 2), nil), 200)
	if err := f.c.Reset(f.ctx, false); err != nil {
		t.Fatal(err)
	}
	if c := f.counts(); c.Requests != 0 || c.Accepted[Observations] != 2 {
		t.Fatalf("counts %+v", c)
	}
	if err := f.c.Reset(f.ctx, true); err != nil {
		t.Fatal(err)
	}
	if c := f.counts(); c.Accepted[Observations] != 0 || c.Entities[Things] != 0 || len(f.records(Query{Kind: Things})) != 0 {
		t.Fatalf("counts %+v", c)
	}
	f.expectError(f.post(Observations, nObs("b", 2), nil), 422, ErrCodeUnknownDS)
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, Config{Rate: 2, Burst: 2, Services: map[string]signer.Secret{
		"svc": signer.NewSecret("s3cr3t"), "svc2": signer.NewSecret("k2")}})
	body := things(thingJSON)
	f.expect(f.post(Things, body, nil), 200)
	f.expect(f.post(Things, body, nil), 200)
	r := f.post(Things, body, nil)
	f.expectError(r, 429, ErrCodeRateLimited)
	if r.Header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	// Another service has its own bucket.
	c2 := *f.c
	c2.ServiceID, c2.Secret = "svc2", signer.NewSecret("k2")
	if r, err := c2.Post(f.ctx, Things, []byte(body), nil); err != nil || r.Status != 200 {
		t.Fatalf("svc2: %v %+v", err, r)
	}
	// Half a second later one more request fits.
	f.now.Add(500 * time.Millisecond)
	f.expect(f.post(Things, body, nil), 200)
	f.expectError(f.post(Things, body, nil), 429, ErrCodeRateLimited)
	reqs, _ := f.c.Requests(f.ctx, 0)
	if len(reqs) != 6 || reqs[2].Status != 429 || reqs[2].RetryAfter != "1" || reqs[2].Time != "2026-03-01T08:00:00.000Z" {
		t.Fatalf("log %+v", reqs)
	}
	if got, _ := f.c.Requests(f.ctx, 3); len(got) != 3 || got[0].Seq != 4 || got[1].ServiceID != "svc" || got[0].ServiceID != "svc2" {
		t.Fatalf("since 3: %+v", got)
	}
}

func TestNotFoundAndMethod(t *testing.T) {
	f := newFixture(t, Config{})
	resp, err := http.Post(f.s.URL()+"/xcloud/v2/eventstore/data/parsed/nothing", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	resp, err = http.Get(f.s.URL() + Path(Things))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
