package queue

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

const (
	spaceCacheAge   = time.Second // statfs at most this often on the append path
	spacePageSlack  = 4 << 10     // a write may allocate one more page than its bytes
	spaceClearSlack = 64 << 10    // hysteresis: readiness turns green with some room
	defaultMaxFloor = 64 << 20
	defaultMinFloor = 64 << 10
)

// spaceError is the refusal of an append because the filesystem's free
// space is below the floor (Options.MinFreeBytes). It wraps ENOSPC so that
// callers treat it as a full disk: the pipeline answers non-durable and
// adapters stop acknowledging.
type spaceError struct{ free, floor int64 }

func (e *spaceError) Error() string {
	// A write is refused when it would cross the floor, so free space may
	// still be a little above it.
	rel := "below"
	if e.free >= e.floor {
		rel = "at"
	}
	return fmt.Sprintf("free space %s %s the %s floor: %v", human(e.free), rel, human(e.floor), syscall.ENOSPC)
}

func (e *spaceError) Unwrap() error { return syscall.ENOSPC }

func human(n int64) string {
	if n < 1<<20 && n > -1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// floorFor resolves Options.MinFreeBytes for a filesystem of total bytes:
// 0 means min(64 MiB, 5% of the filesystem) but at least 64 KiB, negative
// disables the floor. The floor is never more than half the filesystem, so
// a tiny one (a 4 MiB tmpfs gets a 205 KiB floor) still holds data.
func floorFor(opt, total int64) int64 {
	if opt < 0 || total <= 0 {
		return 0
	}
	f := opt
	if f == 0 {
		f = min(defaultMaxFloor, max(total/20, defaultMinFloor))
	}
	return min(f, total/2)
}

// segmentSizeFor caps the segment size at a sixteenth of the filesystem:
// consumed records are freed a whole segment at a time, so a segment that
// is a large part of the disk keeps the disk full long after its records
// were sent.
func segmentSizeFor(size, total int64) int64 {
	if total <= 0 || size <= total/16 {
		return size
	}
	return max(total/16, minSegmentSize)
}

// initSpace reads the filesystem once at open: the floor and the segment
// size depend on its size.
func (d *Disk) initSpace() {
	avail, total, err := d.opts.statfs(d.dir)
	if err != nil {
		if d.opts.MinFreeBytes >= 0 {
			d.log.WithError(err).Warn("queue cannot read free space, no free-space floor")
		}
		return
	}
	d.floor = floorFor(d.opts.MinFreeBytes, total)
	if s := segmentSizeFor(d.opts.SegmentSize, total); s != d.opts.SegmentSize {
		d.log.WithFields(logrus.Fields{"segment_bytes": s, "configured": d.opts.SegmentSize, "filesystem_bytes": total}).
			Info("queue segments lowered to a sixteenth of the filesystem")
		d.opts.SegmentSize = s
	}
	d.spaceFree, d.spaceAt = avail, time.Now()
}

// freeSpace is the free space of the filesystem, read by statfs at most
// every maxAge (0: now) and lowered by what the queue wrote since, so a burst of
// appends within the cache time cannot eat the reserve. ok is false when
// it cannot be known.
func (d *Disk) freeSpace(maxAge time.Duration) (int64, bool) {
	d.smu.Lock()
	defer d.smu.Unlock()
	if time.Since(d.spaceAt) > maxAge {
		avail, _, err := d.opts.statfs(d.dir)
		if err != nil {
			return 0, false
		}
		d.spaceFree, d.spaceAt = avail, time.Now()
	}
	return d.spaceFree, true
}

// noteWritten lowers the cached free space by a write's bytes.
func (d *Disk) noteWritten(n int64) {
	d.smu.Lock()
	d.spaceFree -= n + spacePageSlack // pessimistic: a new page per write
	d.smu.Unlock()
}

// spaceChanged makes the next check read statfs again (files were deleted).
func (d *Disk) spaceChanged() {
	d.smu.Lock()
	d.spaceAt = time.Time{}
	d.smu.Unlock()
}

// checkFloor refuses a write of need bytes that would leave less than the
// floor free. Once it refused, it goes on refusing until the floor plus
// spaceClearSlack is free (the point where Health turns green): without
// that, small appends would still trickle in at the edge, each one filling
// an already allocated page, while readiness is red.
func (d *Disk) checkFloor(need int64) error {
	if d.floor <= 0 {
		return nil
	}
	floor := d.floor
	if d.low.Load() {
		floor += spaceClearSlack
	}
	free, ok := d.freeSpace(spaceCacheAge)
	if !ok || free-need-spacePageSlack >= floor {
		d.low.Store(false)
		return nil
	}
	// The cached figure is pessimistic (a page per write): read the real
	// one before refusing. A statfs per refused append is cheap next to
	// the refused device's reconnect.
	if free, ok = d.freeSpace(0); !ok || free-need-spacePageSlack >= floor {
		d.low.Store(false)
		return nil
	}
	d.low.Store(true)
	return &spaceError{free: free, floor: d.floor}
}

// recheckSpace clears a refusal by the floor once space is back, without
// waiting for an append to succeed: readiness turns green as soon as the
// queue is writable again.
func (d *Disk) recheckSpace(err error) error {
	var se *spaceError
	if !errors.As(err, &se) {
		return err
	}
	free, ok := d.freeSpace(spaceCacheAge)
	if !ok || free < d.floor+spaceClearSlack {
		return err
	}
	d.low.Store(false)
	d.mu.Lock()
	if d.lastErr == err {
		d.lastErr = nil
		d.log.WithField("free_bytes", free).Info("queue has free space again")
	}
	d.mu.Unlock()
	return nil
}
