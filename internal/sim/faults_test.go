package sim

import (
	"strings"
	"testing"
	"time"
)

func (f *fixture) inject(fl Fault) int {
	f.t.Helper()
	id, err := f.c.InjectFault(f.ctx, fl)
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

func TestFaultFailNext(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	f.inject(Fault{Kind: FaultFail, Count: 2, Status: 503, RetryAfter: "3"})
	for i := 0; i < 2; i++ {
		r := f.post(Observations, nObs("f-1", 2), nil)
		f.expectError(r, 503, ErrCodeInjected)
		if r.Header.Get("Retry-After") != "3" {
			t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
		}
	}
	f.expect(f.post(Observations, nObs("f-1", 2), nil), 200)
	reqs, _ := f.c.Requests(f.ctx, 2) // after the setup posts
	if len(reqs) != 3 || reqs[0].RetryAfter != "3" || reqs[0].Fault != FaultFail || reqs[1].Status != 503 ||
		reqs[2].Status != 200 || reqs[2].BatchID != "f-1" || reqs[2].Records != 2 || reqs[2].RetryAfter != "" {
		t.Fatalf("log %+v", reqs)
	}
	if fs, _ := f.c.Faults(f.ctx); len(fs) != 0 {
		t.Fatalf("spent fault still listed: %+v", fs)
	}

	// Only one endpoint, after letting one through, with a custom body.
	f.inject(Fault{Kind: FaultFail, Endpoint: Alarms, Skip: 1, Status: 500, Body: `{"oops":true}`})
	f.expect(f.post(Things, things(thingJSON), nil), 200)
	f.expect(f.post(Alarms, alarmBatch("a-1", alarm("a", "")), nil), 201)
	r := f.post(Alarms, alarmBatch("a-2", alarm("a", "")), nil)
	if r.Status != 500 || string(r.Body) != `{"oops":true}` {
		t.Fatalf("answer %d %s", r.Status, r.Body)
	}
	f.expect(f.post(Alarms, alarmBatch("a-2", alarm("a", "")), nil), 201)

	// 429 with Retry-After as a real server's rate limit would.
	f.inject(Fault{Kind: FaultFail, Status: 429, RetryAfter: "2"})
	r = f.post(Things, things(thingJSON), nil)
	if r.Status != 429 || r.Header.Get("Retry-After") != "2" {
		t.Fatalf("answer %d %v", r.Status, r.Header)
	}

	// Closing the connection is a network error for the client.
	f.inject(Fault{Kind: FaultFail, Mode: "close"})
	if _, err := f.c.Post(f.ctx, Things, []byte(things(thingJSON)), nil); err == nil {
		t.Fatal("closed connection not seen")
	}
	f.expect(f.post(Things, things(thingJSON), nil), 200)
	// The client sees the closed connection before the server's handler
	// has counted it: wait for the count.
	c := f.counts()
	for deadline := time.Now().Add(5 * time.Second); c.ByStatus["0"] == 0 && time.Now().Before(deadline); c = f.counts() {
		time.Sleep(10 * time.Millisecond)
	}
	if c.ByStatus["0"] != 1 || c.ByStatus["503"] != 2 || c.ByStatus["500"] != 1 || c.ByStatus["429"] != 1 {
		t.Fatalf("by status %v", c.ByStatus)
	}
}

func TestFaultDown(t *testing.T) {
	f := newFixture(t, Config{})
	f.inject(Fault{Kind: FaultDown, Duration: Duration(30 * time.Second)})
	for i := 0; i < 2; i++ {
		if _, err := f.c.Post(f.ctx, Things, []byte(things(thingJSON)), nil); err == nil {
			t.Fatal("down but answered")
		}
	}
	// Admin still answers while down.
	fs, err := f.c.Faults(f.ctx)
	if err != nil || len(fs) != 1 || fs[0].Fired != 2 || !fs[0].DownUntil.Equal(f.now.Now().Add(30*time.Second)) {
		t.Fatalf("faults %+v %v", fs, err)
	}
	f.now.Add(30 * time.Second)
	f.expect(f.post(Things, things(thingJSON), nil), 200)

	f.inject(Fault{Kind: FaultDown, Duration: Duration(time.Minute), Mode: "503", RetryAfter: "60", Endpoint: Observations})
	f.expect(f.post(Things, things(thingJSON), nil), 200)
	r := f.post(Observations, nObs("x", 1), nil)
	f.expectError(r, 503, ErrCodeUnavailable)
	if r.Header.Get("Retry-After") != "60" {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	if err := f.c.ClearFaults(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.expectError(f.post(Observations, nObs("x", 1), nil), 422, ErrCodeUnknownDS)
}

func TestFaultLatency(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.inject(Fault{Kind: FaultLatency, Latency: Duration(150 * time.Millisecond)})
	start := time.Now()
	f.expect(f.post(Things, things(thingJSON), nil), 200)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("answered after %v", d)
	}
	if err := f.c.RemoveFault(f.ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := f.c.RemoveFault(f.ctx, id); err == nil {
		t.Fatal("removed twice")
	}
	reqs, _ := f.c.Requests(f.ctx, 0)
	if reqs[0].DurationMS < 150 {
		t.Fatalf("logged %d ms", reqs[0].DurationMS)
	}
}

func TestFaultReject(t *testing.T) {
	f := newFixture(t, Config{})
	f.setup()
	f.inject(Fault{Kind: FaultReject, Endpoint: Observations, Field: "result", Equals: []byte("3"), Message: "no threes"})
	m := f.expect(f.post(Observations, nObs("r-1", 6), nil), 202)
	e := m["errors"].([]any)
	if len(e) != 1 || e[0].(map[string]any)["recordIndex"] != 3.0 || e[0].(map[string]any)["message"] != "no threes" {
		t.Fatalf("errors %v", e)
	}
	if n := len(f.records(Query{Kind: Observations})); n != 5 {
		t.Fatalf("stored %d", n)
	}
	f.c.ClearFaults(f.ctx)

	// Nested path, whole batch refused, once.
	f.inject(Fault{Kind: FaultReject, Field: "datastream.sensusID", Equals: []byte(`"` + dsSID + `"`), Action: "batch", Count: 1})
	m = f.expectError(f.post(Observations, nObs("r-2", 2), nil), 400, ErrCodeValidation)
	if e := m["errors"].([]any)[0].(map[string]any); e["recordIndex"] != 0.0 {
		t.Fatalf("error %v", e)
	}
	f.expect(f.post(Observations, nObs("r-2", 2), nil), 200)
	reqs, _ := f.c.Requests(f.ctx, 0)
	if last := reqs[len(reqs)-2]; last.Fault != FaultReject || last.Status != 400 {
		t.Fatalf("log %+v", last)
	}

	// Bad fault definitions are refused.
	for _, bad := range []Fault{
		{Kind: "explode"},
		{Kind: FaultFail, Endpoint: "nowhere"},
		{Kind: FaultFail, Status: 42},
		{Kind: FaultLatency},
		{Kind: FaultDown},
		{Kind: FaultReject, Field: "x"},
		{Kind: FaultReject, Field: "x", Equals: []byte("1"), Action: "explode"},
	} {
		if _, err := f.c.InjectFault(f.ctx, bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestFaultsFromConfig(t *testing.T) {
	f := newFixture(t, Config{Faults: []Fault{{Kind: FaultFail, Status: 502, Count: 1}}})
	f.expectError(f.post(Things, things(thingJSON), nil), 502, ErrCodeInjected)
	f.expect(f.post(Things, things(thingJSON), nil), 200)
	if _, err := New(Config{DataDir: t.TempDir(), Faults: []Fault{{Kind: "nope"}}}); err == nil ||
		!strings.Contains(err.Error(), "faults[0]") {
		t.Fatalf("err %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	for in, want := range map[string]time.Duration{`"250ms"`: 250 * time.Millisecond, `1.5`: 1500 * time.Millisecond, `"2m"`: 2 * time.Minute} {
		var d Duration
		if err := d.UnmarshalJSON([]byte(in)); err != nil || time.Duration(d) != want {
			t.Errorf("%s: %v %v", in, time.Duration(d), err)
		}
	}
	var d Duration
	if err := d.UnmarshalJSON([]byte(`"soon"`)); err == nil {
		t.Error("accepted soon")
	}
	b, _ := Duration(time.Second).MarshalJSON()
	if string(b) != `"1s"` {
		t.Error(string(b))
	}
}
