package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Policy says what Append does when the backlog is at Options.MaxBytes.
type Policy string

// Policies for a full queue.
const (
	// Block makes Append wait until Commit (or age eviction) frees space,
	// or its context ends: back-pressure up to the sources.
	Block Policy = "block"
	// DropOldest deletes the oldest whole segments, committed or not, to
	// make room; the records lost are counted and logged.
	DropOldest Policy = "drop-oldest"
	// DropNewest refuses the new records with ErrFull; the caller counts
	// and logs them.
	DropNewest Policy = "drop-newest"
)

// ParsePolicy reads a policy name from configuration. "reject" is accepted
// as another name for drop-newest; "" means block.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case "", Block:
		return Block, nil
	case DropOldest:
		return DropOldest, nil
	case DropNewest, "reject":
		return DropNewest, nil
	}
	return "", fmt.Errorf("queue policy %q: must be one of block, drop-oldest, drop-newest", s)
}

// Defaults of Options.
const (
	DefaultSegmentSize    = 8 << 20
	DefaultMaxRecordBytes = 4 << 20
	DefaultCheckInterval  = 10 * time.Second
	minSegmentSize        = 4 << 10
	maxGather             = 1024    // appends written by one write+fsync at most
	maxGatherBytes        = 4 << 20 // and their bytes: bounds the write buffer
)

var (
	// ErrTooLarge is returned for a record above MaxRecordBytes or an
	// Append larger than MaxBytes: it could never fit. It wraps ErrFull.
	ErrTooLarge = fmt.Errorf("%w: records larger than the queue allows", ErrFull)
	// ErrLocked is returned by Open when another process holds the folder.
	ErrLocked = errors.New("queue folder is in use by another process")
)

// Options configure a Disk queue. The zero value is usable: 8 MiB
// segments, no size or age limit.
type Options struct {
	// Name labels metrics (queue=<name>) and logs.
	Name string
	Log  *logrus.Entry
	// SegmentSize is the size at which a segment file is sealed and a new
	// one started. When MaxBytes is set it is lowered to MaxBytes/4 (at
	// least 4 KiB) so that eviction, which works on whole segments, drops
	// at most a quarter of the backlog at a time.
	SegmentSize int64
	// MaxBytes bounds the backlog: bytes on disk of records not yet
	// committed (frame headers included). 0 means no limit. The folder may
	// hold up to one more segment of committed records.
	MaxBytes int64
	// MaxAge drops whole segments whose newest record is older. 0 means
	// no limit.
	MaxAge time.Duration
	// Policy applies when MaxBytes is reached; default Block.
	Policy Policy
	// MaxRecordBytes bounds one encoded record; larger ones get
	// ErrTooLarge. Default 4 MiB.
	MaxRecordBytes int
	// CheckInterval is how often age eviction runs and the oldest-age
	// gauge is refreshed. Default 10s (or MaxAge/10 when smaller).
	CheckInterval time.Duration
	// MinFreeBytes is the free space the queue leaves on its filesystem:
	// appends are refused (an error wrapping syscall.ENOSPC) while less is
	// free, keeping room for cursor commits, the forwarder's state and
	// dead letters, so that a full disk recovers by itself once the
	// backlog drains. 0 means min(64 MiB, 5% of the filesystem), at least
	// 64 KiB; it is never more than half the filesystem. Negative
	// disables the floor.
	MinFreeBytes int64

	// Test hooks.
	wrapFile   func(segFile) segFile
	wrapCursor func(segFile) segFile
	statfs     func(dir string) (avail, total int64, err error)
	now        func() time.Time
	noSync     bool // the fuzzer checks parsing, not durability
}

func (o *Options) setDefaults() error {
	if o.Name == "" {
		o.Name = "default"
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	o.Log = o.Log.WithFields(logrus.Fields{"component": "queue", "name": o.Name})
	p, err := ParsePolicy(string(o.Policy))
	if err != nil {
		return err
	}
	o.Policy = p
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.MaxBytes < 0 || o.MaxAge < 0 {
		return errors.New("queue: negative max_bytes or max_age")
	}
	if o.MaxBytes > 0 && o.SegmentSize > o.MaxBytes/4 {
		o.SegmentSize = max(o.MaxBytes/4, minSegmentSize)
	}
	if o.MaxRecordBytes <= 0 {
		o.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
		if o.MaxAge > 0 && o.MaxAge/10 < o.CheckInterval {
			o.CheckInterval = max(o.MaxAge/10, 10*time.Millisecond)
		}
	}
	if o.wrapFile == nil {
		o.wrapFile = func(f segFile) segFile { return f }
	}
	if o.wrapCursor == nil {
		o.wrapCursor = func(f segFile) segFile { return f }
	}
	if o.statfs == nil {
		o.statfs = statFS
	}
	if o.now == nil {
		o.now = time.Now
	}
	return nil
}

// segMeta is what the queue keeps in memory per segment file: a few words,
// never the records.
type segMeta struct {
	num       uint64 // segment number = sequence number of its first record
	size      int64  // durable bytes (what readers may read)
	count     int64  // valid records
	lastSeq   uint64 // sequence number of the last record (num-1 when empty)
	firstTime int64
	lastTime  int64 // newest record time
	damaged   bool  // a garbled region was found and reported
}

// Disk is the durable queue: a folder of segment files (see doc.go,
// FORMAT). One writer goroutine does every write, so that appends arriving
// while a write+fsync is in progress share the next one (group commit).
// Readers read the files, never a copy of the backlog in memory.
type Disk struct {
	dir  string
	opts Options
	log  *logrus.Entry
	m    *metricSet
	lock io.Closer

	reqs    chan *appendReq
	closing chan struct{}
	notify  chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	// wmu is held by the writer goroutine while it writes a batch, and by
	// age eviction: whoever holds it may seal or delete the active segment.
	// Lock order: wmu, then rmu, then mu.
	wmu        sync.Mutex
	active     segFile
	activeMeta *segMeta
	nextSeq    uint64
	wbuf       []byte
	dirty      bool // a failed write could not be truncated away yet

	// rmu serialises Read and Commit's use of the cached read file.
	rmu  sync.Mutex
	cmu  sync.Mutex // serialises Commit
	rf   *os.File
	rnum uint64
	rr   segReader
	// curF is the two-slot cursor file (nil until created); curGen the
	// generation of its newest slot. Both are used under cmu.
	curF   segFile
	curGen uint64

	// Free-space floor (space.go). smu guards the cached statfs figure.
	floor     int64
	low       atomic.Bool // the floor refused: refuse until it is clear with a margin
	smu       sync.Mutex
	spaceFree int64
	spaceAt   time.Time

	mu      sync.Mutex
	segs    []*segMeta // ascending numbers; the last one is active when activeMeta is set
	cursor  Position
	curSeq  uint64 // sequence number of the record at cursor
	curTime int64  // its time
	records int64
	bytes   int64
	oldest  int64
	pending int64         // bytes admitted by the writer, not yet on disk
	space   chan struct{} // closed (and replaced) whenever backlog shrinks
	closed  bool
	lastErr error

	appended, fsyncs, evicted, rejected, corrupted, quarantined atomic.Int64
}

// Open opens (creating it if needed) the queue in dir. Damage found in the
// files is repaired or put aside and reported, never a reason to fail:
// Open fails only when the folder itself cannot be used.
func Open(dir string, opts Options) (*Disk, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("queue %s: %w", opts.Name, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", opts.Name, err)
	}
	d := &Disk{
		dir:     dir,
		opts:    opts,
		log:     opts.Log,
		m:       newMetricSet(opts.Name),
		lock:    lock,
		reqs:    make(chan *appendReq),
		closing: make(chan struct{}),
		notify:  make(chan struct{}, 1),
		space:   make(chan struct{}),
	}
	d.initSpace()
	start := time.Now()
	if err := d.load(); err != nil {
		d.closeFiles()
		return nil, fmt.Errorf("queue %s: %w", opts.Name, err)
	}
	st := d.Stats()
	d.log.WithFields(logrus.Fields{
		"records": st.Records, "bytes": st.Bytes, "segments": st.Segments,
		"duration": time.Since(start).Round(time.Millisecond).String(),
	}).Info("queue opened")
	d.wg.Add(2)
	go d.writer()
	go d.maintain()
	return d, nil
}

// Dir is the queue folder.
func (d *Disk) Dir() string { return d.dir }

// Health is nil while the last write succeeded, else the error of the last
// failed write or sync (a full or read-only disk): readiness reports it.
// It clears on the next successful append; a refusal by the free-space
// floor also clears as soon as space is back (checked here, at most once a
// second), so readiness turns green without waiting for a new record.
func (d *Disk) Health() error {
	d.mu.Lock()
	err := d.lastErr
	d.mu.Unlock()
	if err == nil {
		return nil
	}
	return d.recheckSpace(err)
}

func segName(num uint64) string { return fmt.Sprintf("%020d.seg", num) }

func (d *Disk) segPath(num uint64) string { return filepath.Join(d.dir, segName(num)) }

// backlogOfLocked is how many records and bytes of s are not committed.
func (d *Disk) backlogOfLocked(s *segMeta) (int64, int64) {
	switch {
	case s.num < d.cursor.Segment:
		return 0, 0
	case s.num > d.cursor.Segment:
		return s.count, s.size
	case d.cursor.Offset >= s.size || d.curSeq > s.lastSeq:
		return 0, 0
	}
	n := min(s.count, int64(s.lastSeq-d.curSeq+1))
	return n, s.size - d.cursor.Offset
}

// recountLocked recomputes the backlog from the per-segment counts: a walk
// over a few dozen segments, not over records.
func (d *Disk) recountLocked() {
	d.records, d.bytes, d.oldest = 0, 0, 0
	for _, s := range d.segs {
		n, b := d.backlogOfLocked(s)
		if n > 0 && d.records == 0 {
			d.oldest = s.firstTime
			if s.num == d.cursor.Segment {
				d.oldest = d.curTime
			}
		}
		d.records += n
		d.bytes += b
	}
	d.updateGaugesLocked()
}

func (d *Disk) updateGaugesLocked() {
	d.m.records.Set(float64(d.records))
	d.m.bytes.Set(float64(d.bytes))
	d.m.segments.Set(float64(len(d.segs)))
	if d.records == 0 {
		// Empty now: do not show the last age until the next refresh.
		d.m.oldestAge.Set(0)
	}
}

// signalSpaceLocked wakes an Append blocked on a full queue.
func (d *Disk) signalSpaceLocked() {
	close(d.space)
	d.space = make(chan struct{})
}

// Stats implements Queue. It reads counters kept up to date by appends,
// commits and evictions: no file is touched.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	st := Stats{Records: d.records, Bytes: d.bytes, Segments: len(d.segs)}
	if d.records > 0 {
		st.Oldest = time.Unix(0, d.oldest)
	}
	d.mu.Unlock()
	st.Evicted = d.evicted.Load()
	st.Corrupted = d.corrupted.Load()
	st.Appended = d.appended.Load()
	st.Rejected = d.rejected.Load()
	st.Fsyncs = d.fsyncs.Load()
	st.Quarantined = d.quarantined.Load()
	return st
}

// maintain runs age eviction and refreshes the oldest-age gauge.
func (d *Disk) maintain() {
	defer d.wg.Done()
	t := time.NewTicker(d.opts.CheckInterval)
	defer t.Stop()
	for {
		d.evictAged()
		d.Health() // clears a floor refusal once space is back, and logs it
		st := d.Stats()
		age := 0.0
		if !st.Oldest.IsZero() {
			age = max(0, d.opts.now().Sub(st.Oldest).Seconds())
		}
		d.m.oldestAge.Set(age)
		select {
		case <-d.closing:
			return
		case <-t.C:
		}
	}
}

// Close stops the writer (appends waiting get ErrClosed; a write under way
// completes) and closes the files.
func (d *Disk) Close() error {
	d.once.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		close(d.closing)
		d.wg.Wait()
		d.closeFiles()
		d.log.Info("queue closed")
	})
	return nil
}

func (d *Disk) closeFiles() {
	d.wmu.Lock()
	if d.active != nil {
		d.active.Close()
		d.active = nil
	}
	d.wmu.Unlock()
	d.rmu.Lock()
	if d.rf != nil {
		d.rf.Close()
		d.rf = nil
	}
	d.rmu.Unlock()
	d.cmu.Lock()
	if d.curF != nil {
		d.curF.Close()
		d.curF = nil
	}
	d.cmu.Unlock()
	if d.lock != nil {
		d.lock.Close()
	}
}

var _ Queue = (*Disk)(nil)
