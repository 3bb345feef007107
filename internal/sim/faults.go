package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault kinds.
const (
	FaultFail    = "fail"    // answer the next Count requests with Status (or close the connection)
	FaultLatency = "latency" // delay requests by Latency
	FaultDown    = "down"    // for Duration, close every connection (Mode "close") or answer 503
	FaultReject  = "reject"  // refuse records whose Field equals Equals
)

// Fault is one injected fault (POST /_sim/faults, or -fault on the command
// line, as JSON). Faults apply only to eventstore requests, never to /_sim/.
type Fault struct {
	Kind string `json:"kind"`
	// Endpoint limits the fault to one endpoint (things, datastreams,
	// observations, alarms, raw); "" means all.
	Endpoint string `json:"endpoint,omitempty"`
	// Skip lets that many matching requests (fail, latency) or records
	// (reject) through before the fault starts.
	Skip int `json:"skip,omitempty"`
	// Count is how many requests (fail: default 1; latency: 0 = until
	// cleared) or records (reject: 0 = until cleared) it applies to.
	Count int `json:"count,omitempty"`
	// Status of a fail fault (default 503); a down fault in Mode "503"
	// answers 503. Mode "close" (fail or down) closes the connection
	// without an answer, which a client sees as a network error.
	Status int    `json:"status,omitempty"`
	Mode   string `json:"mode,omitempty"`
	// RetryAfter is sent as the Retry-After header when not empty.
	RetryAfter string `json:"retryAfter,omitempty"`
	// Body of a fail answer; default {"status":"ERROR","error":"INJECTED_FAULT",...}.
	Body string `json:"body,omitempty"`
	// Latency added to each matching request.
	Latency Duration `json:"latency,omitempty"`
	// Duration of a down fault, from when it is installed.
	Duration Duration `json:"duration,omitempty"`
	// Field is a dotted path in a record ("result", "datastream.sensusID",
	// "alarmId") and Equals the JSON value that makes a reject fault fire.
	Field  string          `json:"field,omitempty"`
	Equals json.RawMessage `json:"equals,omitempty"`
	// Action of a reject fault: "record" (default: that record is refused in
	// a 202 answer) or "batch" (the whole request gets 400).
	Action string `json:"action,omitempty"`
	// Message for a rejected record (default "rejected by simulator rule").
	Message string `json:"message,omitempty"`
}

// Duration is a time.Duration written in JSON as a Go duration string
// ("250ms"); a bare number is read as seconds.
type Duration time.Duration

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads "1.5s" or 1.5 (seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("duration: want a string like \"250ms\" or seconds")
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// ActiveFault is an installed fault as GET /_sim/faults lists it.
type ActiveFault struct {
	ID int `json:"id"`
	Fault
	Fired     int       `json:"fired"`
	DownUntil time.Time `json:"downUntil,omitzero"`
	equals    any
}

type faultSet struct {
	mu     sync.Mutex
	now    func() time.Time
	nextID int
	list   []*ActiveFault
}

func newFaultSet(now func() time.Time) *faultSet { return &faultSet{now: now} }

// add validates f and installs it; it returns its id.
func (fs *faultSet) add(f Fault) (int, error) {
	if f.Endpoint != "" && kindPaths[f.Endpoint] == "" {
		return 0, fmt.Errorf("endpoint %q: must be one of %s", f.Endpoint, strings.Join(Kinds, ", "))
	}
	if f.Skip < 0 || f.Count < 0 {
		return 0, errors.New("skip and count must be >= 0")
	}
	a := &ActiveFault{Fault: f}
	switch f.Kind {
	case FaultFail:
		if a.Count == 0 {
			a.Count = 1
		}
		if a.Mode != "" && a.Mode != "close" {
			return 0, fmt.Errorf("mode %q: must be \"\" or \"close\"", a.Mode)
		}
		if a.Mode == "" && a.Status == 0 {
			a.Status = 503
		}
		if a.Mode == "" && (a.Status < 100 || a.Status > 599) {
			return 0, fmt.Errorf("status %d: not an HTTP status", a.Status)
		}
	case FaultLatency:
		if a.Latency <= 0 {
			return 0, errors.New("latency: must be > 0")
		}
	case FaultDown:
		if a.Duration <= 0 {
			return 0, errors.New("duration: must be > 0")
		}
		switch a.Mode {
		case "":
			a.Mode = "close"
		case "close", "503":
		default:
			return 0, fmt.Errorf("mode %q: must be \"close\" or \"503\"", a.Mode)
		}
		a.DownUntil = fs.now().Add(time.Duration(a.Duration))
	case FaultReject:
		if a.Field == "" || len(a.Equals) == 0 {
			return 0, errors.New("reject: field and equals are required")
		}
		if err := json.Unmarshal(a.Equals, &a.equals); err != nil {
			return 0, fmt.Errorf("equals: %w", err)
		}
		switch a.Action {
		case "":
			a.Action = "record"
		case "record", "batch":
		default:
			return 0, fmt.Errorf("action %q: must be \"record\" or \"batch\"", a.Action)
		}
		if a.Message == "" {
			a.Message = "rejected by simulator rule " + a.Field + "=" + string(a.Equals)
		}
	default:
		return 0, fmt.Errorf("kind %q: must be fail, latency, down or reject", f.Kind)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.nextID++
	a.ID = fs.nextID
	fs.list = append(fs.list, a)
	return a.ID, nil
}

func (fs *faultSet) clear() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.list = nil
}

func (fs *faultSet) remove(id int) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, a := range fs.list {
		if a.ID == id {
			fs.list = append(fs.list[:i], fs.list[i+1:]...)
			return true
		}
	}
	return false
}

func (fs *faultSet) snapshot() []ActiveFault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.expire()
	out := make([]ActiveFault, 0, len(fs.list))
	for _, a := range fs.list {
		out = append(out, *a)
	}
	return out
}

// expire drops finished down faults; callers hold mu.
func (fs *faultSet) expire() {
	now := fs.now()
	kept := fs.list[:0]
	for _, a := range fs.list {
		if a.Kind == FaultDown && !now.Before(a.DownUntil) {
			continue
		}
		kept = append(kept, a)
	}
	fs.list = kept
}

// requestFault is what happens to a request before it is processed.
type requestFault struct {
	latency time.Duration
	answer  *ActiveFault // a copy of the fail or down fault that answers, or nil
	down    bool
}

// onRequest consumes the faults that apply to one request to endpoint
// (kind, "" for an unknown path).
func (fs *faultSet) onRequest(kind string) requestFault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.expire()
	var rf requestFault
	kept := fs.list[:0]
	for _, a := range fs.list {
		keep := true
		if a.Endpoint == "" || a.Endpoint == kind {
			switch a.Kind {
			case FaultDown:
				if rf.answer == nil {
					c := *a
					rf.answer, rf.down = &c, true
					a.Fired++
				}
			case FaultFail:
				if rf.answer != nil {
					break
				}
				if a.Skip > 0 {
					a.Skip--
					break
				}
				c := *a
				rf.answer = &c
				a.Fired++
				keep = a.Fired < a.Count
			case FaultLatency:
				if a.Skip > 0 {
					a.Skip--
					break
				}
				rf.latency += time.Duration(a.Latency)
				a.Fired++
				keep = a.Count == 0 || a.Fired < a.Count
			}
		}
		if keep {
			kept = append(kept, a)
		}
	}
	fs.list = kept
	return rf
}

// rejectRule returns the reject fault that fires for one record, if any.
// rec is the record decoded with UseNumber.
func (fs *faultSet) rejectRule(kind string, rec map[string]any) *ActiveFault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, a := range fs.list {
		if a.Kind != FaultReject || (a.Endpoint != "" && a.Endpoint != kind) {
			continue
		}
		v, ok := lookupPath(rec, a.Field)
		if !ok || !jsonEqual(v, a.equals) {
			continue
		}
		if a.Skip > 0 {
			a.Skip--
			continue
		}
		a.Fired++
		c := *a
		if a.Count > 0 && a.Fired >= a.Count {
			fs.list = append(fs.list[:i], fs.list[i+1:]...)
		}
		return &c
	}
	return nil
}

func lookupPath(rec map[string]any, path string) (any, bool) {
	var cur any = rec
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// jsonEqual compares a value decoded with UseNumber to one decoded plainly.
func jsonEqual(a, b any) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		if f, err := strconv.ParseFloat(string(x), 64); err == nil {
			return f
		}
		return string(x)
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = normalize(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = normalize(e)
		}
		return s
	}
	return v
}
