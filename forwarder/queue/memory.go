package queue

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Memory is a Queue held in memory, for other packages' unit tests. It
// follows the same contract (the same suite runs against it) including
// MaxBytes and Policy, but nothing survives Close. Positions are
// {Segment: 1, Offset: record number}. Bodies are copied on Append; Read
// returns slices the caller must not modify.
type Memory struct {
	opts   Options
	notify chan struct{}

	mu        sync.Mutex
	recs      []Record // recs[0] has number first
	first     int64
	cursor    Position
	bytes     int64
	space     chan struct{}
	closed    bool
	appendErr error
	evicted   int64
	rejected  int64
	appended  int64
}

// NewMemory returns an empty in-memory queue. Of opts it uses MaxBytes
// (counting bodies, identifiers and 16 bytes per record), Policy and
// MaxRecordBytes.
func NewMemory(opts Options) *Memory {
	if p, err := ParsePolicy(string(opts.Policy)); err == nil {
		opts.Policy = p
	} else {
		opts.Policy = Block
	}
	if opts.MaxRecordBytes <= 0 {
		opts.MaxRecordBytes = DefaultMaxRecordBytes
	}
	return &Memory{opts: opts, notify: make(chan struct{}, 1), space: make(chan struct{}), first: 1,
		cursor: Position{Segment: 1, Offset: 1}}
}

// SetAppendError makes every Append fail with err (nil restores normal
// operation): a full or broken disk for tests of callers.
func (m *Memory) SetAppendError(err error) {
	m.mu.Lock()
	m.appendErr = err
	m.mu.Unlock()
}

func memSize(r *Record) int64 {
	return int64(len(r.Body)+len(r.DeviceID)+len(r.CustomerID)+len(r.Ref)) + 16
}

// Append implements Queue.
func (m *Memory) Append(ctx context.Context, recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	cp := make([]Record, len(recs))
	var size int64
	for i, r := range recs {
		if r.Time == 0 {
			r.Time = now
		}
		r.Body = slices.Clone(r.Body)
		cp[i] = r
		n := memSize(&r)
		if n > int64(m.opts.MaxRecordBytes) {
			return m.reject(len(recs), ErrTooLarge)
		}
		size += n
	}
	if m.opts.MaxBytes > 0 && size > m.opts.MaxBytes {
		return m.reject(len(recs), ErrTooLarge)
	}
	m.mu.Lock()
	for {
		if m.closed {
			m.mu.Unlock()
			return ErrClosed
		}
		if m.appendErr != nil {
			err := m.appendErr
			m.mu.Unlock()
			return err
		}
		if m.opts.MaxBytes <= 0 || m.bytes+size <= m.opts.MaxBytes {
			break
		}
		if m.opts.Policy == DropNewest {
			m.mu.Unlock()
			return m.reject(len(recs), ErrFull)
		}
		if m.opts.Policy == DropOldest {
			for m.bytes+size > m.opts.MaxBytes && len(m.recs) > 0 {
				m.dropFirstLocked(true)
			}
			continue
		}
		space := m.space
		m.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
		m.mu.Lock()
	}
	m.recs = append(m.recs, cp...)
	m.bytes += size
	m.appended += int64(len(cp))
	m.mu.Unlock()
	select {
	case m.notify <- struct{}{}:
	default:
	}
	return nil
}

func (m *Memory) reject(n int, err error) error {
	m.mu.Lock()
	m.rejected += int64(n)
	m.mu.Unlock()
	return fmt.Errorf("queue memory: %w", err)
}

// dropFirstLocked forgets the oldest record kept, counting it as evicted
// when it was not committed.
func (m *Memory) dropFirstLocked(evict bool) {
	if evict && m.first >= m.cursor.Offset {
		m.evicted++
	}
	m.bytes -= memSize(&m.recs[0])
	m.recs[0] = Record{}
	m.recs = m.recs[1:]
	m.first++
}

// Read implements Queue.
func (m *Memory) Read(from Position, maxRecs, maxBytes int) ([]Entry, error) {
	maxRecs = max(maxRecs, 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	start := max(m.first, m.cursor.Offset)
	if from.Segment > 1 {
		return nil, nil
	}
	if from.Segment == 1 {
		start = max(start, from.Offset)
	}
	var out []Entry
	bodies := 0
	for n := start; n < m.first+int64(len(m.recs)) && len(out) < maxRecs; n++ {
		r := m.recs[n-m.first]
		if len(out) > 0 && maxBytes > 0 && bodies+len(r.Body) > maxBytes {
			break
		}
		bodies += len(r.Body)
		out = append(out, Entry{Pos: Position{1, n}, Next: Position{1, n + 1}, Rec: r})
	}
	return out, nil
}

// Cursor implements Queue.
func (m *Memory) Cursor() Position {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cursor
}

// Commit implements Queue.
func (m *Memory) Commit(pos Position) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if !m.cursor.Less(pos) {
		return nil
	}
	if end := (Position{1, m.first + int64(len(m.recs))}); end.Less(pos) {
		pos = end
	}
	m.cursor = pos
	for len(m.recs) > 0 && m.first < pos.Offset {
		m.dropFirstLocked(false)
	}
	close(m.space)
	m.space = make(chan struct{})
	return nil
}

// Notify implements Queue.
func (m *Memory) Notify() <-chan struct{} { return m.notify }

// Stats implements Queue.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Stats{Records: int64(len(m.recs)), Bytes: m.bytes, Evicted: m.evicted,
		Rejected: m.rejected, Appended: m.appended}
	if len(m.recs) > 0 {
		st.Oldest = time.Unix(0, m.recs[0].Time)
	}
	return st
}

// Close implements Queue.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		close(m.space)
	}
	return nil
}

var _ Queue = (*Memory)(nil)
