package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

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
		d.mu.Lock() // activeMeta is read under mu by Commit and Read
		d.active, d.activeMeta = nil, nil
		d.mu.Unlock()
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
	d.active, d.activeMeta = d.opts.wrapFile(f), meta
	d.updateGaugesLocked()
	d.mu.Unlock()
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
	// The floor is checked here, on the bytes about to be written, so
	// appends keep being refused while the disk is low however many
	// devices retry.
	err := d.checkFloor(int64(len(d.wbuf)))
	if err == nil && d.dirty {
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
	d.noteWritten(int64(len(d.wbuf)))
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
