package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/signer"
)

// FuzzIngest posts arbitrary signed bodies to every endpoint: the simulator
// must not panic, must answer one of the contract's statuses, and must store
// exactly the records it says it accepted.
func FuzzIngest(f *testing.F) {
	seeds := []string{
		things(thingJSON), datastreams(dsJSON), nObs("b", 3), alarmBatch("a", alarm("x", "")),
		`{"deviceId":"FST9","customerId":"","transportType":"TCP","dataType":"SENSOR_DATA","payload":"0a","timestamp":"2026-03-01T07:59:58Z"}`,
		obsBatch("p", obs(`"x"`, `{"sensusID":"`+dsSID+`"}`), `7`, `{}`),
		`{"things":[{"name":"n","sensusID":"a@b","@iot.id":1e30}]}`,
		`{"observations":[{"phenomenonTime":"2026-03-01T07:00:00Z/","result":1,"datastream":{"@iot.id":-1}}],"deviceId":"d","customerId":"c","batchType":"OBSERVATIONS"}`,
		`[`, `null`, ``,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	s, err := New(Config{DataDir: f.TempDir(), Now: func() time.Time { return now }, MaxRecords: 50, MaxBytes: 1 << 16,
		Services: map[string]signer.Secret{"svc": signer.NewSecret("k")}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	allowed := map[int]bool{200: true, 201: true, 202: true, 400: true, 409: true, 413: true, 422: true}
	f.Fuzz(func(t *testing.T, k uint8, body []byte) {
		kind := Kinds[int(k)%len(Kinds)]
		h, err := signer.Sign(signer.Config{}, "POST", Path(kind), "application/json", signer.BodyMD5(body), now, "svc", signer.NewSecret("k"))
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("POST", Path(kind), bytes.NewReader(body))
		h.Apply(req.Header)
		req.Header.Set("Content-Type", "application/json")
		before := s.st.counts().Accepted[kind]
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if !allowed[w.Code] {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("answer not JSON: %q", w.Body)
		}
		after := s.st.counts().Accepted[kind]
		var res BatchResult
		_ = json.Unmarshal(w.Body.Bytes(), &res)
		want := int64(0)
		switch w.Code {
		case http.StatusOK, http.StatusCreated:
			var m map[string]any
			json.Unmarshal(w.Body.Bytes(), &m)
			want = 1
			if n, ok := m[kind+"Processed"].(float64); ok {
				want = int64(n)
			} else if kind == Alarms {
				want = int64(res.RecordsAccepted)
			}
		case http.StatusAccepted:
			want = int64(res.RecordsAccepted)
			if res.RecordsAccepted+res.RecordsRejected != res.RecordsProcessed || len(res.Errors) != res.RecordsRejected {
				t.Fatalf("inconsistent 202: %s", w.Body)
			}
		}
		if after-before != want {
			t.Fatalf("stored %d, answer says %d: %s", after-before, want, w.Body)
		}
	})
}
