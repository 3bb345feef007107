package queue

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// segFile is what the queue needs of a segment file. Tests wrap it to
// inject write and sync faults (a full or read-only disk).
type segFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Close() error
}

var _ segFile = (*os.File)(nil)

const readWindow = 64 << 10

// segReader reads frames from a segment through one reused window buffer:
// the file is read in large chunks rather than two small reads per record,
// and memory stays at the window (or the largest record) whatever the
// backlog.
type segReader struct {
	f          io.ReaderAt
	limit      int64 // readable bytes: the durable size of the segment
	maxPayload int
	buf        []byte
	start      int64 // file offset of buf[0]
	n          int   // valid bytes in buf
}

func (r *segReader) reset(f io.ReaderAt, limit int64, maxPayload int) {
	r.f, r.limit, r.maxPayload = f, limit, maxPayload
	r.start, r.n = 0, 0
	if cap(r.buf) > 4*readWindow {
		r.buf = nil // do not keep one huge record's buffer for ever
	}
}

// peek returns bytes [off, off+n) of the file, which must lie below limit.
// The slice is valid until the next call.
func (r *segReader) peek(off int64, n int) ([]byte, error) {
	if off < 0 || off+int64(n) > r.limit {
		return nil, errTruncated
	}
	if off >= r.start && off+int64(n) <= r.start+int64(r.n) {
		i := int(off - r.start)
		return r.buf[i : i+n], nil
	}
	size := max(readWindow, n)
	if cap(r.buf) < size {
		r.buf = make([]byte, size)
	}
	want := int(min(int64(cap(r.buf)), r.limit-off))
	m, err := r.f.ReadAt(r.buf[:want], off)
	if m < n {
		r.n = 0
		if err == nil || errors.Is(err, io.EOF) {
			// The file is shorter than the size we were told: it was
			// truncated under us (or lies). Treat like a torn frame.
			return nil, errTruncated
		}
		return nil, fmt.Errorf("read segment: %w", err)
	}
	r.start, r.n = off, m
	return r.buf[:n], nil
}

type frameInfo struct {
	seq     uint64
	size    int64  // whole frame, header included
	payload []byte // aliases the window: valid until the next read
}

// frameAt reads and verifies the frame at off. Errors: errTruncated (the
// frame does not fit before limit), errGarbled (bad magic, length or
// checksum), or an I/O error.
func (r *segReader) frameAt(off int64) (frameInfo, error) {
	h, err := r.peek(off, headerSize)
	if err != nil {
		return frameInfo{}, err
	}
	n, seq, err := parseHeader(h, r.limit-off, r.maxPayload)
	if err != nil {
		return frameInfo{}, err
	}
	b, err := r.peek(off, headerSize+n)
	if err != nil {
		return frameInfo{}, err
	}
	if !checkCRC(b) {
		return frameInfo{}, errGarbled
	}
	return frameInfo{seq: seq, size: int64(headerSize + n), payload: b[headerSize:]}, nil
}

func isFrameError(err error) bool {
	return errors.Is(err, errGarbled) || errors.Is(err, errTruncated)
}

// resync looks for the next valid frame after a damaged one at off. A
// candidate must start with the magic byte, pass its checksum and carry a
// sequence number that can follow: at least lo (the number the record at
// base has or would have), at most one more per headerSize bytes after
// base (every frame is longer than that), and at most hi. A random match
// of all three is far below one in 2^32, so records found are real
// records of this segment. It returns the offset of the frame, or -1.
func (r *segReader) resync(off, base int64, lo, hi uint64) (int64, error) {
	for p := off + 1; p+headerSize+minPayload <= r.limit; {
		win, err := r.peek(p, int(min(readWindow, r.limit-p)))
		if err != nil {
			return -1, err
		}
		i := bytes.IndexByte(win, frameMagic)
		if i < 0 {
			p += int64(len(win))
			continue
		}
		p += int64(i)
		f, err := r.frameAt(p)
		switch {
		case err == nil:
			if f.seq >= lo && f.seq <= hi && f.seq-lo <= uint64((p-base)/headerSize) {
				return p, nil
			}
		case !isFrameError(err):
			return -1, err
		}
		p++
	}
	return -1, nil
}

// scanResult describes a segment after reading it whole.
type scanResult struct {
	count     int64
	lastSeq   uint64
	firstTime int64 // time of the first record
	lastTime  int64 // newest record time in the segment
	good      int64 // end of the last valid frame
	damaged   int   // garbled regions followed by valid frames
	tail      bool  // bytes after the last valid frame that are not one
}

// scan reads every frame of segment num (whose first record has sequence
// number num) up to r.limit, skipping garbled regions by resync. Only I/O
// errors are returned.
func (r *segReader) scan(num uint64) (scanResult, error) {
	res := scanResult{lastSeq: num - 1}
	expect := num
	var off int64
	for off < r.limit {
		f, err := r.frameAt(off)
		if err == nil && f.seq == expect {
			t, terr := payloadTime(f.payload)
			if terr == nil {
				if res.count == 0 {
					res.firstTime = t
				}
				res.lastTime = max(res.lastTime, t)
				res.count++
				res.lastSeq = f.seq
				expect++
				off += f.size
				res.good = off
				continue
			}
		} else if err != nil && !isFrameError(err) {
			return res, err
		}
		p, err := r.resync(off, off, expect, ^uint64(0))
		if err != nil {
			return res, err
		}
		if p < 0 {
			res.tail = true
			return res, nil
		}
		res.damaged++
		f, err = r.frameAt(p)
		if err != nil {
			return res, err
		}
		expect = f.seq
		off = p
	}
	return res, nil
}
