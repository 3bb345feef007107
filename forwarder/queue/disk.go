package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

	// Test hooks.
	wrapFile func(segFile) segFile
	now      func() time.Time
	noSync   bool // the fuzzer checks parsing, not durability
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

// appendReq is one Append call on its way to the writer goroutine.
type appendReq struct {
	ctx      context.Context
	payload  []byte // encoded records, back to back
	ends     []int  // end of each record in payload
	size     int64  // bytes on disk (frames)
	first    int64  // time of the first record
	newest   int64
	state    atomic.Int32
	done     chan error
	reserved bool
}

const (
	reqPending int32 = iota
	reqClaimed
	reqCancelled
)

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
// It clears on the next successful append.
func (d *Disk) Health() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastErr
}

func segName(num uint64) string { return fmt.Sprintf("%020d.seg", num) }

func (d *Disk) segPath(num uint64) string { return filepath.Join(d.dir, segName(num)) }

// load scans the folder once: every segment is read through (checksums
// verified), a torn tail of the newest is cut off, damaged segments are put
// aside, and segments wholly before the cursor are deleted.
func (d *Disk) load() error {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return err
	}
	var nums []uint64
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			_ = os.Remove(filepath.Join(d.dir, name)) // an interrupted cursor save
		case strings.HasSuffix(name, ".seg"):
			n, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
			if err != nil || segName(n) != name {
				d.log.WithField("file", name).Warn("queue ignores unexpected file")
				continue
			}
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)

	if err := d.loadCursor(); err != nil {
		return err
	}
	var r segReader
	for i, num := range nums {
		last := i == len(nums)-1
		meta, err := d.loadSegment(&r, num, last)
		if err != nil {
			d.quarantine(num, true, err)
			continue
		}
		if meta != nil {
			d.segs = append(d.segs, meta)
		}
	}

	// Segments wholly before the cursor were committed; a crash between
	// saving the cursor and deleting them leaves them behind.
	keep := d.segs[:0]
	for i, s := range d.segs {
		last := i == len(d.segs)-1
		if !last && (s.num < d.cursor.Segment || (s.num == d.cursor.Segment && d.cursor.Offset >= s.size)) {
			d.removeSegment(s.num)
			continue
		}
		keep = append(keep, s)
	}
	d.segs = keep

	// A new segment gets a number above every file and above the cursor
	// (whose segment may have been removed by hand).
	d.nextSeq = max(1, d.cursor.Segment+1)
	if n := len(d.segs); n > 0 {
		last := d.segs[n-1]
		d.nextSeq = max(d.nextSeq, last.lastSeq+1)
		if d.cursor.Segment <= last.num {
			// Go on writing the newest segment, unless it ends in bytes
			// kept for the operator (a sealed segment with a garbled end
			// became the newest when the one after it was put aside):
			// then the next append starts a new segment.
			f, err := os.OpenFile(d.segPath(last.num), os.O_RDWR, 0)
			if err != nil {
				return err
			}
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return err
			}
			if fi.Size() == last.size {
				d.active, d.activeMeta = d.opts.wrapFile(f), last
				// Sequence numbers in a segment follow each other.
				d.nextSeq = last.lastSeq + 1
			} else {
				f.Close()
			}
		}
		if s := d.segByNum(d.cursor.Segment); s != nil && d.cursor.Offset > s.size {
			d.cursor.Offset = s.size
		}
	}
	d.curSeq, d.curTime = d.seqAt(d.cursor)
	d.mu.Lock()
	d.recountLocked()
	d.mu.Unlock()
	return nil
}

func (d *Disk) loadCursor() error {
	b, err := os.ReadFile(filepath.Join(d.dir, "cursor"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	p, err := decodeCursor(b)
	if err != nil {
		// Re-sending from the oldest record beats losing any.
		d.corrupted.Add(1)
		d.m.corrupted.Inc()
		d.log.WithError(err).Warn("queue cursor garbled, reading from the oldest record")
		return nil
	}
	d.cursor = p
	return nil
}

// loadSegment scans one segment. An error means the file is unreadable.
// It returns nil meta for a file to forget (an empty sealed one).
func (d *Disk) loadSegment(r *segReader, num uint64, last bool) (*segMeta, error) {
	path := d.segPath(num)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	r.reset(f, fi.Size(), d.opts.MaxRecordBytes)
	res, err := r.scan(num)
	if err != nil {
		return nil, err
	}
	meta := &segMeta{num: num, size: fi.Size(), count: res.count, lastSeq: res.lastSeq,
		firstTime: res.firstTime, lastTime: res.lastTime}
	log := d.log.WithField("segment", segName(num))
	switch {
	case !last && fi.Size() == 0:
		d.removeSegment(num)
		return nil, nil
	case !last && res.count == 0:
		return nil, errors.New("no valid record")
	}
	if res.damaged > 0 || (res.tail && !last) {
		// Keep reading the records that verify (Read skips the damage the
		// same way) and keep the file as it was for the operator.
		meta.damaged = true
		regions := res.damaged
		if res.tail && !last {
			regions++
		}
		d.corrupted.Add(int64(regions))
		d.m.corrupted.Add(float64(regions))
		d.keepEvidence(num, res.tail && last)
		log.WithFields(logrus.Fields{"regions": regions, "records": res.count}).
			Error("queue segment garbled, put a copy in quarantine and kept its valid records")
	}
	if res.tail {
		if last {
			// A torn tail: the last write before a crash did not complete,
			// so it was never acknowledged. Cut it off so appends go on
			// after the last good record.
			if err := d.truncateFile(path, res.good); err != nil {
				return nil, err
			}
			d.corrupted.Add(1)
			d.m.corrupted.Inc()
			log.WithFields(logrus.Fields{"offset": res.good, "bytes": fi.Size() - res.good}).
				Warn("queue segment had a torn tail, truncated after the last good record")
		}
		meta.size = res.good
	}
	return meta, nil
}

func (d *Disk) truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = d.fsync(f)
	}
	return errors.Join(err, f.Close())
}

func (d *Disk) segByNum(num uint64) *segMeta {
	for _, s := range d.segs {
		if s.num == num {
			return s
		}
	}
	return nil
}

func (d *Disk) removeSegment(num uint64) {
	if err := os.Remove(d.segPath(num)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.WithError(err).WithField("segment", segName(num)).Warn("queue cannot delete segment")
	}
}

func (d *Disk) quarantineDir() (string, error) {
	q := filepath.Join(d.dir, "quarantine")
	return q, os.MkdirAll(q, 0o750)
}

func quarantineName(q string, num uint64) string {
	p := filepath.Join(q, segName(num))
	if _, err := os.Lstat(p); err == nil {
		p = fmt.Sprintf("%s.%d", p, time.Now().UnixNano())
	}
	return p
}

// keepEvidence puts a copy of a garbled segment in quarantine/ while its
// valid records stay in the queue. A hard link costs no space; a real copy
// is made when the file is about to be truncated.
func (d *Disk) keepEvidence(num uint64, willTruncate bool) {
	q, err := d.quarantineDir()
	if err == nil {
		if _, serr := os.Lstat(filepath.Join(q, segName(num))); serr == nil {
			return // put aside by an earlier run: the file has not changed
		}
		d.quarantined.Add(1)
		d.m.quarantined.Inc()
		dst := quarantineName(q, num)
		if willTruncate || os.Link(d.segPath(num), dst) != nil {
			err = copyFile(d.segPath(num), dst)
		}
	}
	if err != nil {
		d.log.WithError(err).WithField("segment", segName(num)).Warn("queue cannot copy garbled segment to quarantine")
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// quarantine moves an unreadable segment aside. Its records are lost to the
// queue (counted as one corrupted region) but the file is kept.
func (d *Disk) quarantine(num uint64, loading bool, cause error) {
	d.quarantined.Add(1)
	d.m.quarantined.Inc()
	d.corrupted.Add(1)
	d.m.corrupted.Inc()
	var lost int64
	if !loading {
		d.mu.Lock()
		if s := d.segByNum(num); s != nil && s != d.activeMeta {
			lost, _ = d.backlogOfLocked(s)
			d.segs = slices.DeleteFunc(d.segs, func(x *segMeta) bool { return x == s })
			d.recountLocked()
		}
		d.mu.Unlock()
	}
	log := d.log.WithError(cause).WithFields(logrus.Fields{"segment": segName(num), "records": lost})
	q, err := d.quarantineDir()
	if err == nil {
		err = os.Rename(d.segPath(num), quarantineName(q, num))
	}
	if err != nil {
		log = log.WithField("move_error", err.Error())
	}
	log.Error("queue segment unreadable, moved to quarantine")
}

// seqAt finds the sequence number and time of the record at pos (or the
// first valid one after it in the same segment). When there is none it
// returns the number the next record there would have.
func (d *Disk) seqAt(pos Position) (uint64, int64) {
	d.mu.Lock()
	s := d.segByNum(pos.Segment)
	var view segMeta
	if s != nil {
		view = *s
	}
	d.mu.Unlock()
	if s == nil || pos.Offset >= view.size {
		return view.lastSeq + 1, 0
	}
	d.rmu.Lock()
	defer d.rmu.Unlock()
	r, err := d.reader(&view)
	if err != nil {
		return view.num, view.firstTime // overcounts at worst
	}
	off := pos.Offset
	for range 2 {
		f, err := r.frameAt(off)
		if err == nil && f.seq >= view.num && f.seq <= view.lastSeq {
			if t, err := payloadTime(f.payload); err == nil {
				return f.seq, t
			}
		}
		p, err := r.resync(off, 0, view.num, view.lastSeq)
		if err != nil {
			return view.num, view.firstTime
		}
		if p < 0 {
			break
		}
		off = p
	}
	return view.lastSeq + 1, 0
}

// reader returns the cached read file positioned on segment s, with s.size
// as the readable limit. Called with rmu held.
func (d *Disk) reader(s *segMeta) (*segReader, error) {
	if d.rf != nil && d.rnum == s.num {
		d.rr.limit = s.size
		return &d.rr, nil
	}
	if d.rf != nil {
		d.rf.Close()
		d.rf = nil
	}
	f, err := os.Open(d.segPath(s.num))
	if err != nil {
		return nil, err
	}
	d.rf, d.rnum = f, s.num
	d.rr.reset(f, s.size, d.opts.MaxRecordBytes)
	return &d.rr, nil
}

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
}

// signalSpaceLocked wakes an Append blocked on a full queue.
func (d *Disk) signalSpaceLocked() {
	close(d.space)
	d.space = make(chan struct{})
}

// Append implements Queue. Records are encoded here, in the caller's
// goroutine; the writer goroutine only frames, writes and syncs.
func (d *Disk) Append(ctx context.Context, recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	select {
	case <-d.closing:
		return ErrClosed
	default:
	}
	now := d.opts.now().UnixNano()
	n := 0
	for i := range recs {
		n += payloadSize(&recs[i])
	}
	r := &appendReq{ctx: ctx, payload: make([]byte, 0, n), ends: make([]int, 0, len(recs)), done: make(chan error, 1)}
	for i := range recs {
		t := recs[i].Time
		if t == 0 {
			t = now
		}
		if i == 0 {
			r.first = t
		}
		r.newest = max(r.newest, t)
		start := len(r.payload)
		r.payload = appendPayload(r.payload, &recs[i], t)
		if len(r.payload)-start > d.opts.MaxRecordBytes {
			return d.reject(len(recs), ErrTooLarge)
		}
		r.ends = append(r.ends, len(r.payload))
	}
	r.size = int64(len(r.payload) + len(recs)*headerSize)
	if d.opts.MaxBytes > 0 && r.size > d.opts.MaxBytes {
		return d.reject(len(recs), ErrTooLarge)
	}
	select {
	case d.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.closing:
		return ErrClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqPending, reqCancelled) {
			return ctx.Err()
		}
		// The writer has it: the write is under way, wait for its result.
		return <-r.done
	}
}

func (d *Disk) reject(n int, err error) error {
	d.rejected.Add(int64(n))
	d.m.rejected.Add(float64(n))
	return fmt.Errorf("queue %s: %w", d.opts.Name, err)
}

// writer is the one goroutine that writes segment files.
func (d *Disk) writer() {
	defer d.wg.Done()
	batch := make([]*appendReq, 0, 64)
	for {
		select {
		case <-d.closing:
			return
		case r := <-d.reqs:
			batch = append(batch[:0], r)
		}
		// Everyone who queued up during the previous write+fsync joins
		// this one: that is the group commit.
		size := batch[0].size
	gather:
		for len(batch) < maxGather && size < maxGatherBytes {
			select {
			case r := <-d.reqs:
				batch = append(batch, r)
				size += r.size
			default:
				break gather
			}
		}
		d.process(batch)
		clear(batch)
	}
}

type verdict int

const (
	admitOK verdict = iota
	admitFull
	admitFlush // write what is buffered first, then ask again
	admitWait
)

// admit applies the size policy to r, reserving its bytes when it fits.
// Called with wmu held.
func (d *Disk) admit(r *appendReq) (verdict, chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opts.MaxBytes <= 0 || d.bytes+d.pending+r.size <= d.opts.MaxBytes {
		d.pending += r.size
		r.reserved = true
		return admitOK, nil
	}
	switch d.opts.Policy {
	case DropNewest:
		return admitFull, nil
	case DropOldest:
		if d.pending > 0 {
			return admitFlush, nil
		}
		var lost, segs int64
		for d.bytes+r.size > d.opts.MaxBytes {
			n, ok := d.evictOldestLocked()
			if !ok {
				break
			}
			lost += n
			segs++
		}
		d.logEviction("size", lost, segs)
		d.pending += r.size
		r.reserved = true
		return admitOK, nil
	default:
		if d.pending > 0 {
			return admitFlush, nil
		}
		return admitWait, d.space
	}
}

func (d *Disk) logEviction(reason string, lost, segs int64) {
	if segs == 0 {
		return
	}
	d.log.WithFields(logrus.Fields{"reason": reason, "records": lost, "segments": segs,
		"evicted_total": d.evicted.Load()}).Error("queue evicted records not yet sent")
}

// evictOldestLocked deletes the oldest segment (sealing it first if it is
// the active one) and returns how many uncommitted records it held. Called
// with wmu and mu held.
func (d *Disk) evictOldestLocked() (int64, bool) {
	if len(d.segs) == 0 {
		return 0, false
	}
	s := d.segs[0]
	if s == d.activeMeta {
		if s.count == 0 {
			return 0, false
		}
		if err := d.active.Close(); err != nil {
			d.log.WithError(err).Warn("queue cannot close segment")
		}
		d.active, d.activeMeta = nil, nil // the next write starts a new segment
	}
	n, _ := d.backlogOfLocked(s)
	d.segs = d.segs[1:]
	d.removeSegment(s.num)
	d.evicted.Add(n)
	d.m.evicted.Add(float64(n))
	d.recountLocked()
	return n, true
}

// process admits and writes one gathered batch. Called by the writer.
func (d *Disk) process(batch []*appendReq) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	var ready []*appendReq
	startSeq := d.nextSeq
	flush := func() {
		if len(ready) > 0 {
			d.flush(ready, startSeq)
		}
		ready = ready[:0]
		startSeq = d.nextSeq
	}
	for i, r := range batch {
	admission:
		for {
			if r.state.Load() == reqCancelled {
				break
			}
			v, space := d.admit(r)
			switch v {
			case admitFull:
				r.done <- d.reject(len(r.ends), ErrFull)
				break admission
			case admitFlush:
				flush()
				continue
			case admitWait:
				d.wmu.Unlock()
				select {
				case <-space:
					d.wmu.Lock()
					continue
				case <-r.ctx.Done():
					d.wmu.Lock()
					if r.state.CompareAndSwap(reqPending, reqCancelled) {
						r.done <- r.ctx.Err()
					}
					break admission
				case <-d.closing:
					d.wmu.Lock()
					flush()
					for _, r := range batch[i:] {
						d.finish(r, ErrClosed)
					}
					return
				}
			}
			if !r.state.CompareAndSwap(reqPending, reqClaimed) {
				d.unreserve(r) // cancelled while we waited
				break
			}
			// Seal the active segment when this append would overflow it.
			if d.active == nil || (d.activeMeta.size+int64(len(d.wbuf)) > 0 &&
				d.activeMeta.size+int64(len(d.wbuf))+r.size > d.opts.SegmentSize) {
				flush()
				if err := d.roll(); err != nil {
					d.failed([]*appendReq{r}, err)
					break
				}
			}
			off := 0
			for _, end := range r.ends {
				d.wbuf = appendFrame(d.wbuf, d.nextSeq, r.payload[off:end])
				d.nextSeq++
				off = end
			}
			ready = append(ready, r)
			break
		}
	}
	flush()
}

func (d *Disk) finish(r *appendReq, err error) {
	if r.state.CompareAndSwap(reqPending, reqCancelled) || r.state.Load() == reqClaimed {
		d.unreserve(r)
		r.done <- err
	}
}

func (d *Disk) unreserve(r *appendReq) {
	if !r.reserved {
		return
	}
	r.reserved = false
	d.mu.Lock()
	d.pending -= r.size
	d.mu.Unlock()
}

// roll seals the active segment and starts the next one, named after the
// sequence number of the record that will come first in it. Called by the
// writer with an empty write buffer.
func (d *Disk) roll() error {
	if d.active != nil {
		if err := d.active.Close(); err != nil {
			d.log.WithError(err).Warn("queue cannot close segment")
		}
		d.active, d.activeMeta = nil, nil
	}
	num := d.nextSeq
	f, err := os.OpenFile(d.segPath(num), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	// A file of that name can only be an empty segment whose first write
	// failed: nothing in it was acknowledged.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	// The new name must be durable before records in it are acknowledged.
	if err := d.syncDir(); err != nil {
		f.Close()
		return err
	}
	d.mu.Lock()
	meta := d.segByNum(num)
	if meta == nil {
		meta = &segMeta{num: num, lastSeq: num - 1}
		d.segs = append(d.segs, meta)
	}
	d.updateGaugesLocked()
	d.mu.Unlock()
	d.active, d.activeMeta = d.opts.wrapFile(f), meta
	return nil
}

func (d *Disk) syncDir() error {
	f, err := os.Open(d.dir)
	if err != nil {
		return err
	}
	err = d.fsync(f)
	return errors.Join(err, f.Close())
}

func (d *Disk) fsync(f interface{ Sync() error }) error {
	d.fsyncs.Add(1)
	d.m.fsyncs.Inc()
	if d.opts.noSync {
		return nil
	}
	return f.Sync()
}

// flush writes the buffered frames of ready to the active segment with one
// write and one fsync, then acknowledges them all.
func (d *Disk) flush(ready []*appendReq, startSeq uint64) {
	meta := d.activeMeta
	off := meta.size
	var err error
	if d.dirty {
		if err = d.active.Truncate(off); err == nil {
			d.dirty = false
		}
	}
	if err == nil {
		_, err = d.active.WriteAt(d.wbuf, off)
	}
	if err == nil {
		err = d.fsync(d.active)
	}
	if err != nil {
		// Leave no half record behind: later frames start at off again.
		// If even the truncate fails, the next flush retries it first,
		// and the bytes beyond off are overwritten anyway.
		if terr := d.active.Truncate(off); terr != nil {
			d.dirty = true
		}
		d.nextSeq = startSeq
		d.wbuf = d.wbuf[:0]
		d.failed(ready, err)
		return
	}
	var recs, size int64
	first, newest := ready[0].first, int64(0)
	for _, r := range ready {
		recs += int64(len(r.ends))
		size += r.size
		newest = max(newest, r.newest)
	}
	d.mu.Lock()
	meta.size += int64(len(d.wbuf))
	if meta.count == 0 {
		meta.firstTime = first
	}
	meta.count += recs
	meta.lastSeq = d.nextSeq - 1
	meta.lastTime = max(meta.lastTime, newest)
	if d.records == 0 {
		d.oldest = first
		if meta.num == d.cursor.Segment {
			d.curTime = first
		}
	}
	d.records += recs
	d.bytes += size
	d.pending -= size
	if d.lastErr != nil {
		d.log.Info("queue writes again")
		d.lastErr = nil
	}
	d.updateGaugesLocked()
	d.mu.Unlock()
	d.wbuf = d.wbuf[:0]
	if cap(d.wbuf) > 1<<20 {
		d.wbuf = nil // do not hold a large batch's buffer for ever
	}
	d.appended.Add(recs)
	d.m.appends.Add(float64(recs))
	for _, r := range ready {
		r.reserved = false
		r.done <- nil
	}
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

// failed answers appends whose write failed. The error wraps the system
// error, so errors.Is(err, syscall.ENOSPC) works.
func (d *Disk) failed(reqs []*appendReq, cause error) {
	err := fmt.Errorf("queue %s: append: %w", d.opts.Name, cause)
	var n int64
	for _, r := range reqs {
		n += int64(len(r.ends))
	}
	d.m.appendErrors.Add(float64(n))
	d.mu.Lock()
	if d.lastErr == nil {
		d.log.WithError(cause).Warn("queue cannot write")
	}
	d.lastErr = err
	d.mu.Unlock()
	for _, r := range reqs {
		d.unreserve(r)
		r.done <- err
	}
}

// Read implements Queue. It reads the segment files through one reused
// window; only the returned records are in memory.
func (d *Disk) Read(from Position, maxRecs, maxBytes int) ([]Entry, error) {
	maxRecs = max(maxRecs, 1)
	d.rmu.Lock()
	defer d.rmu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrClosed
	}
	if from.Less(d.cursor) {
		from = d.cursor
	}
	var snap []segMeta
	for _, s := range d.segs {
		if s.num >= from.Segment {
			snap = append(snap, *s)
		}
	}
	d.mu.Unlock()

	// Allocated at the first record: an empty poll costs nothing. Bodies
	// share one slab per call.
	var out []Entry
	var slab []byte
	slabCap := 64 << 10
	if maxBytes > 0 {
		slabCap = min(maxBytes, 1<<20)
	}
	var bodies int
	var sc stringCache
	for i := range snap {
		s := &snap[i]
		off := int64(0)
		if s.num == from.Segment {
			off = from.Offset
		}
		if off >= s.size {
			continue
		}
		r, err := d.reader(s)
		if errors.Is(err, fs.ErrNotExist) {
			continue // committed or evicted meanwhile
		}
		if err != nil {
			if done := d.readFailed(s, err); done != nil {
				return out, done
			}
			continue
		}
		expect, base := s.num, int64(0) // unknown until the first good frame
		known := false
		for off < s.size {
			f, err := r.frameAt(off)
			var rec Record
			ok := err == nil && f.seq >= s.num && f.seq <= s.lastSeq && (!known || f.seq == expect)
			if ok {
				if out == nil {
					out = make([]Entry, 0, min(maxRecs, 1024))
					slab = make([]byte, 0, slabCap)
				}
				var derr error
				if slab, derr = decodePayload(f.payload, &rec, &sc, slab); derr != nil {
					ok = false
				}
			}
			if !ok {
				if err != nil && !isFrameError(err) {
					if done := d.readFailed(s, err); done != nil {
						return out, done
					}
					break
				}
				p, err := r.resync(off, base, expect, s.lastSeq)
				if err != nil {
					if done := d.readFailed(s, err); done != nil {
						return out, done
					}
					break
				}
				d.noteDamage(s.num, off)
				if p < 0 {
					break
				}
				off, known = p, false
				continue
			}
			if len(out) > 0 && maxBytes > 0 && bodies+len(rec.Body) > maxBytes {
				return out, nil
			}
			next := off + f.size
			out = append(out, Entry{Pos: Position{s.num, off}, Next: Position{s.num, next}, Rec: rec})
			bodies += len(rec.Body)
			if len(out) >= maxRecs {
				return out, nil
			}
			off, expect, base, known = next, f.seq+1, next, true
		}
	}
	return out, nil
}

// readFailed handles an I/O error reading segment s: a sealed segment is
// moved to quarantine and reading goes on; the active one reports the
// error.
func (d *Disk) readFailed(s *segMeta, err error) error {
	d.mu.Lock()
	active := d.activeMeta != nil && d.activeMeta.num == s.num
	d.mu.Unlock()
	if active {
		return fmt.Errorf("queue %s: read: %w", d.opts.Name, err)
	}
	if d.rf != nil && d.rnum == s.num {
		d.rf.Close()
		d.rf = nil
	}
	d.quarantine(s.num, false, err)
	return nil
}

// noteDamage reports a garbled region met by Read that the scan at open did
// not see (the file changed since), once per segment.
func (d *Disk) noteDamage(num uint64, off int64) {
	d.mu.Lock()
	s := d.segByNum(num)
	if s == nil || s.damaged {
		d.mu.Unlock()
		return
	}
	s.damaged = true
	d.mu.Unlock()
	d.corrupted.Add(1)
	d.m.corrupted.Inc()
	d.keepEvidence(num, false)
	d.log.WithFields(logrus.Fields{"segment": segName(num), "offset": off}).
		Error("queue segment garbled, put a copy in quarantine and skipped the damage")
}

// Cursor implements Queue.
func (d *Disk) Cursor() Position {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cursor
}

// Commit implements Queue: the cursor file is replaced atomically (write a
// temporary file, fsync, rename, fsync the folder), then segments wholly
// before pos are deleted. A pos at or before the cursor is a no-op; one
// past the end of the log is taken as the end.
func (d *Disk) Commit(pos Position) error {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	if !d.cursor.Less(pos) {
		d.mu.Unlock()
		return nil
	}
	if n := len(d.segs); n > 0 {
		if end := (Position{d.segs[n-1].num, d.segs[n-1].size}); end.Less(pos) {
			pos = end
		}
	}
	d.mu.Unlock()

	if err := d.writeCursor(pos); err != nil {
		// On a full disk even the small cursor file may not fit. Deleting
		// the consumed segments first frees space; a crash before the
		// cursor is saved then re-sends at most the consumed part of
		// pos's segment (the reader starts at the oldest kept segment),
		// never loses a record.
		if d.dropConsumed(pos) == 0 {
			return fmt.Errorf("queue %s: commit: %w", d.opts.Name, err)
		}
		if err := d.writeCursor(pos); err != nil {
			return fmt.Errorf("queue %s: commit: %w", d.opts.Name, err)
		}
	}
	seq, t := d.seqAt(pos)
	d.mu.Lock()
	d.cursor, d.curSeq, d.curTime = pos, seq, t
	d.mu.Unlock()
	d.dropConsumed(pos)
	return nil
}

// dropConsumed deletes the segments wholly before pos (never the active
// one) and returns how many it deleted.
func (d *Disk) dropConsumed(pos Position) int {
	d.mu.Lock()
	var gone []uint64
	d.segs = slices.DeleteFunc(d.segs, func(s *segMeta) bool {
		before := s.num < pos.Segment || (s.num == pos.Segment && pos.Offset >= s.size)
		if before && s != d.activeMeta {
			gone = append(gone, s.num)
			return true
		}
		return false
	})
	d.recountLocked()
	d.signalSpaceLocked()
	d.mu.Unlock()
	// An open descriptor would keep a deleted file's space in use.
	d.rmu.Lock()
	if d.rf != nil && slices.Contains(gone, d.rnum) {
		d.rf.Close()
		d.rf = nil
	}
	d.rmu.Unlock()
	for _, num := range gone {
		d.removeSegment(num)
	}
	return len(gone)
}

func (d *Disk) writeCursor(pos Position) error {
	tmp := filepath.Join(d.dir, "cursor.tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(encodeCursor(pos))
	if err == nil {
		err = d.fsync(f)
	}
	if err = errors.Join(err, f.Close()); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, "cursor")); err != nil {
		return err
	}
	return d.syncDir()
}

// Notify implements Queue.
func (d *Disk) Notify() <-chan struct{} { return d.notify }

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

// evictAged deletes whole segments whose newest record is older than
// MaxAge, oldest first.
func (d *Disk) evictAged() {
	if d.opts.MaxAge <= 0 {
		return
	}
	cutoff := d.opts.now().Add(-d.opts.MaxAge).UnixNano()
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	var lost, segs int64
	for len(d.segs) > 0 {
		s := d.segs[0]
		if s.count > 0 && s.lastTime >= cutoff {
			break
		}
		n, ok := d.evictOldestLocked()
		if !ok {
			break
		}
		lost += n
		segs++
	}
	if segs > 0 {
		d.signalSpaceLocked()
	}
	d.logEviction("age", lost, segs)
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
	if d.lock != nil {
		d.lock.Close()
	}
}

var _ Queue = (*Disk)(nil)
