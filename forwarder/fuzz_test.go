package forwarder

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/queue"
)

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, in string
		want     time.Duration
	}{
		{"empty", "", 0},
		{"seconds", "7", 7 * time.Second},
		{"fraction", "1.5", 1500 * time.Millisecond},
		{"spaces", " 3 ", 3 * time.Second},
		{"negative", "-5", 0},
		{"http date", "Thu, 01 Jan 2026 12:01:30 GMT", 90 * time.Second},
		{"past date", "Thu, 01 Jan 2026 11:00:00 GMT", 0},
		{"capped", "999999", maxRetryAfter},
		{"garbage", "soon", 0},
	} {
		if got := retryAfter(tc.in, now); got != tc.want {
			t.Errorf("%s: retryAfter(%q) = %s, want %s", tc.name, tc.in, got, tc.want)
		}
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "7", "1.5", "Thu, 01 Jan 2026 12:01:30 GMT", "-1", "1e300", "NaN", "Inf"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d := retryAfter(s, now); d < 0 || d > maxRetryAfter {
			t.Fatalf("retryAfter(%q) = %s", s, d)
		}
	})
}

func TestWithBatchID(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"object", `{"a":1}`, `{"batchId":"b","a":1}`},
		{"empty object", `{}`, `{"batchId":"b"}`},
		{"spaces", ` { "a":1}`, `{"batchId":"b", "a":1}`},
		{"has one", `{"batchId":"x","a":1}`, `{"batchId":"x","a":1}`},
		{"array", `[1]`, `[1]`},
		{"empty", ``, ``},
	} {
		if got := string(withBatchID([]byte(tc.in), "b")); got != tc.want {
			t.Errorf("%s: got %s want %s", tc.name, got, tc.want)
		}
	}
}

func FuzzWithBatchID(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{}`, ` { }`, `{"batchId":1}`, `[]`, `{`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out := withBatchID(body, "vigd-x-data-1-1-1")
		var v map[string]json.RawMessage
		if json.Unmarshal(body, &v) == nil && json.Valid(body) && !bytes.Contains(body, []byte(`"batchId"`)) {
			var w map[string]json.RawMessage
			if err := json.Unmarshal(out, &w); err != nil || string(w["batchId"]) != `"vigd-x-data-1-1-1"` || len(w) != len(v)+1 {
				t.Fatalf("%q -> %q (%v)", body, out, err)
			}
		} else if !bytes.Equal(out, body) && !bytes.HasPrefix(out, []byte(`{"batchId":`)) {
			t.Fatalf("%q changed to %q", body, out)
		}
	})
}

// FuzzAnswer feeds server answers to the parts that read them: the error
// list must map to items in range or to none, never panic.
func FuzzAnswer(f *testing.F) {
	for _, s := range []string{
		`{"errors":[{"recordId":"r1","recordIndex":1,"error":"VALIDATION_ERROR","message":"m"}]}`,
		`{"errors":[{"alarmId":"al-2","error":"X"}],"failureCount":1}`,
		`{"errors":[{"recordId":7,"recordIndex":-3,"error":"UNKNOWN_THING"}]}`,
		`{"errors":[{"recordId":"ds@x","recordIndex":99,"error":"UNKNOWN_DATASTREAM"}]}`,
		`{"status":"REJECTED","error":"E","message":"m"}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, n uint8) {
		a := &answer{status: 202, body: body}
		_ = json.Unmarshal(body, a)
		b := &batch{ep: &endpoint{name: "alarms", listKey: "alarms"}, id: "b"}
		for i := 0; i < int(n%8)+1; i++ {
			e := &queue.Entry{Rec: alarmRec("FST1", i)}
			b.items = append(b.items, item{body: e.Rec.Body, entry: e})
		}
		for _, e := range a.Errors {
			if i := locate(b, e); i < -1 || i >= len(b.items) {
				t.Fatalf("locate %d of %d", i, len(b.items))
			}
		}
		_ = a.reason()
		for _, u := range unknownRefs(a) {
			_ = rawID(u.err.RecordID)
		}
	})
}
