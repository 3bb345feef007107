package queue

import (
	"context"
	"errors"
	"time"
)

// Kind is what a record is, which decides the endpoint it goes to.
type Kind uint8

// Record kinds held in the queue. Things and datastreams are not queued:
// the forwarder keeps their definitions in its state store.
const (
	Observation Kind = 1
	Alarm       Kind = 2
	Raw         Kind = 3
)

func (k Kind) String() string {
	switch k {
	case Observation:
		return "observation"
	case Alarm:
		return "alarm"
	case Raw:
		return "raw"
	}
	return "unknown"
}

// Record is one encoded record: the JSON object as it goes into the posted
// list (or, for Raw, the whole request body), plus what the forwarder needs
// to group and order it without parsing the JSON.
type Record struct {
	Kind       Kind
	DeviceID   string
	CustomerID string
	// Ref is the sensusID of the entity the record refers to: the
	// datastream of an observation, the thing of an alarm or raw record.
	Ref string
	// Time is when the record was appended (UnixNano); the queue sets it
	// when zero. Age limits use it.
	Time int64
	Body []byte
}

// Position is a place in the log: a segment number and a byte offset in it.
// Positions order the log: compare with Less.
type Position struct {
	Segment uint64
	Offset  int64
}

// Less orders positions.
func (p Position) Less(q Position) bool {
	return p.Segment < q.Segment || (p.Segment == q.Segment && p.Offset < q.Offset)
}

// Entry is a record read back with where it is and where the next one
// starts (commit Next to consume it).
type Entry struct {
	Pos  Position
	Next Position
	Rec  Record
}

// Stats describe the backlog (records not yet committed).
type Stats struct {
	Records   int64
	Bytes     int64
	Oldest    time.Time // zero when empty
	Segments  int
	Evicted   int64 // records dropped by the size/age policy since start
	Corrupted int64 // torn or garbled records skipped since start (Disk counts damaged regions: how many records a garbled stretch held is unknown)

	// Counters since start added after the first contract; zero in
	// implementations that do not track them.
	Appended    int64 // records appended durably
	Rejected    int64 // records refused with ErrFull
	Fsyncs      int64 // fsync calls (Disk only): group commit keeps this well below Appended
	Quarantined int64 // damaged segment files put aside (Disk only)
}

// Errors callers classify with errors.Is.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("queue closed")
	// ErrFull is returned by Append under the reject/drop-newest policy when
	// the queue is at its byte limit.
	ErrFull = errors.New("queue full")
)

// Queue is the contract every implementation meets (one test suite runs
// against each).
//
// Append is called by many goroutines (one per frame in flight); Read, Commit
// by the forwarder's single loop.
type Queue interface {
	// Append writes the records and returns only when they are on disk
	// (fsync). Concurrent appends share one fsync (group commit). Records
	// of one call are contiguous and in order. Under back-pressure (limit
	// reached, policy "block") it waits until space frees or ctx ends.
	Append(ctx context.Context, recs ...Record) error
	// Read returns up to max records, at most maxBytes of bodies (but always
	// at least one record if any is there), starting at from, oldest first.
	// A from before the oldest kept record (evicted or committed) starts at
	// the oldest kept one. Returns an empty slice when nothing is there.
	Read(from Position, max, maxBytes int) ([]Entry, error)
	// Cursor is the committed position: where reading starts after a
	// restart.
	Cursor() Position
	// Commit durably records that everything before pos is consumed;
	// segments wholly before it are deleted.
	Commit(pos Position) error
	// Notify is signalled (non-blocking, coalesced) after every Append.
	Notify() <-chan struct{}
	Stats() Stats
	Close() error
}
