package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/sirupsen/logrus"
)

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

// Commit implements Queue: pos is written into the older slot of the
// cursor file and synced (no new blocks needed: it works on a full disk),
// then segments wholly before pos are deleted. When pos is the end of
// everything written, the active segment goes too and the next append
// starts a new one, so a drained queue holds no data on disk. A pos at or
// before the cursor is a no-op; one past the end of the log is taken as
// the end.
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
	d.releaseDrained(pos)
	return nil
}

// releaseDrained deletes the active segment when pos is its end: every
// record written is consumed. Holding wmu keeps the writer out: it is
// either idle or waiting for space with nothing buffered, and starts a new
// segment at its next write (active is nil).
func (d *Disk) releaseDrained(pos Position) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.mu.Lock()
	a := d.activeMeta
	drained := a != nil && a.num == pos.Segment && a.size > 0 && pos.Offset >= a.size && len(d.wbuf) == 0
	d.mu.Unlock()
	if !drained {
		return
	}
	if err := d.active.Close(); err != nil {
		d.log.WithError(err).Warn("queue cannot close segment")
	}
	d.mu.Lock()
	d.active, d.activeMeta = nil, nil
	d.mu.Unlock()
	d.dropConsumed(pos)
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
	if len(gone) > 0 {
		d.spaceChanged()
	}
	return len(gone)
}

// Notify implements Queue.
func (d *Disk) Notify() <-chan struct{} { return d.notify }
