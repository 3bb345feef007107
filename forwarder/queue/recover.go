package queue

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

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

	// A new segment gets a number above every file and above the cursor
	// (whose segment may have been removed by hand).
	d.nextSeq = max(1, d.cursor.Segment+1)
	for _, s := range d.segs {
		d.nextSeq = max(d.nextSeq, s.lastSeq+1)
	}

	// Segments wholly before the cursor were committed; a crash between
	// saving the cursor and deleting them leaves them behind. The newest
	// goes too when it is wholly consumed: appends start a new segment.
	keep := d.segs[:0]
	for _, s := range d.segs {
		if s.num < d.cursor.Segment || (s.num == d.cursor.Segment && d.cursor.Offset >= s.size) {
			d.removeSegment(s.num)
			continue
		}
		keep = append(keep, s)
	}
	d.segs = keep

	if n := len(d.segs); n > 0 {
		last := d.segs[n-1]
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
	// The two-slot cursor file is created (or migrated from the old
	// format) now that committed segments are deleted: on a full disk
	// that is what frees room for it. If it still does not fit, the first
	// commit tries again.
	if err := d.openCursor(); err != nil {
		d.log.WithError(err).Warn("queue cannot create the cursor file yet")
	}
	d.curSeq, d.curTime = d.seqAt(d.cursor)
	d.mu.Lock()
	d.recountLocked()
	d.mu.Unlock()
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
