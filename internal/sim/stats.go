package sim

import (
	"strconv"
	"sync"
)

// RequestLog is one eventstore request as the simulator saw it.
type RequestLog struct {
	Seq        int64  `json:"seq"`
	Time       string `json:"time"` // arrival, RFC 3339 UTC with milliseconds
	Method     string `json:"method"`
	Path       string `json:"path"` // with query
	Endpoint   string `json:"endpoint,omitempty"`
	ServiceID  string `json:"serviceId,omitempty"`
	Status     int    `json:"status"` // 0: connection closed without an answer
	Error      string `json:"error,omitempty"`
	BatchID    string `json:"batchId,omitempty"`
	Records    int    `json:"records"` // records in the body (0 when not read)
	Accepted   int    `json:"accepted"`
	Rejected   int    `json:"rejected"`
	RetryAfter string `json:"retryAfter,omitempty"` // the Retry-After header given
	Gzip       bool   `json:"gzip,omitempty"`
	Fault      string `json:"fault,omitempty"` // the injected fault that answered
	DurationMS int64  `json:"durationMs"`
}

// TimeFormat is how RequestLog.Time is written.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Counts are the simulator's counters (GET /_sim/counts).
type Counts struct {
	// Accepted records per kind, and accepted batches per kind; both kept
	// across restarts.
	Accepted map[string]int64 `json:"accepted"`
	Batches  map[string]int64 `json:"batches"`
	// Entities is the number of distinct things and datastreams.
	Entities map[string]int64 `json:"entities"`
	// The rest count since start or the last reset.
	Rejected         map[string]int64 `json:"rejected"` // records refused inside 202 answers
	Requests         int64            `json:"requests"` // eventstore requests (not /_sim/)
	ByStatus         map[string]int64 `json:"byStatus"` // "0" = connection closed
	Duplicates       int64            `json:"duplicates"`
	DuplicateRecords int64            `json:"duplicateRecords"` // records inside 409'd bodies
}

type stats struct {
	mu               sync.Mutex
	requests         int64
	byStatus         map[int]int64
	duplicates       int64
	duplicateRecords int64
	rejected         map[string]int64
	seq              int64
	ring             []RequestLog
	start            int
	size             int
}

func newStats(size int) *stats {
	return &stats{byStatus: map[int]int64{}, rejected: map[string]int64{}, size: size}
}

func (s *stats) record(e RequestLog) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.byStatus[e.Status]++
	if e.Status == 409 {
		s.duplicates++
		s.duplicateRecords += int64(e.Records)
	}
	if e.Rejected > 0 && e.Endpoint != "" {
		s.rejected[e.Endpoint] += int64(e.Rejected)
	}
	s.seq++
	e.Seq = s.seq
	if len(s.ring) < s.size {
		s.ring = append(s.ring, e)
		return
	}
	s.ring[s.start] = e
	s.start = (s.start + 1) % s.size
}

// requests returns the logged requests with Seq > since, oldest first.
func (s *stats) requestsSince(since int64) []RequestLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []RequestLog{}
	for i := range s.ring {
		e := s.ring[(s.start+i)%len(s.ring)]
		if e.Seq > since {
			out = append(out, e)
		}
	}
	return out
}

func (s *stats) fill(c *Counts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.Requests = s.requests
	c.Duplicates = s.duplicates
	c.DuplicateRecords = s.duplicateRecords
	c.ByStatus = map[string]int64{}
	for st, n := range s.byStatus {
		c.ByStatus[strconv.Itoa(st)] = n
	}
	c.Rejected = map[string]int64{}
	for _, k := range Kinds {
		c.Rejected[k] = s.rejected[k]
	}
}

func (s *stats) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests, s.duplicates, s.duplicateRecords = 0, 0, 0
	s.byStatus = map[int]int64{}
	s.rejected = map[string]int64{}
	s.ring, s.start = nil, 0
}
