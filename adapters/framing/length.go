package framing

import (
	"encoding/binary"
	"fmt"
	"io"
)

// lengthFramer reads frames laid out as
//
//	[header: offset bytes][length field: n bytes][body][trailer]
//
// and fixed-size frames (n = 0, a constant total). The body of a frame is
// read straight into the frame's own slice, so large frames cost no buffer
// growth.
type lengthFramer struct {
	src     *source
	offset  int // header bytes before the length field
	n       int // length field bytes; 0 for fixed size
	little  bool
	counts  string
	trailer int
	keep    bool // deliver header and length field too
	fixed   int  // fixed: bytes per frame
	max     int

	// A frame being read: total wire bytes, delivered bytes so far.
	inFrame  bool
	frameOff int64
	remain   int64  // wire bytes of this frame still to read
	out      []byte // nil while skipping an over-long frame
	fatal    *FrameError
}

func newLength(c Config, maxBytes int, r io.Reader) *lengthFramer {
	f := &lengthFramer{
		offset: c.LengthOffset, n: c.LengthBytes, little: c.LengthEndian == "little",
		counts: c.LengthCounts, trailer: c.TrailerBytes, keep: c.KeepHeader, max: maxBytes,
	}
	if f.n == 0 {
		f.n = 2
	}
	if f.counts == "" {
		f.counts = CountsBody
	}
	f.src = newSource(r, 4096)
	return f
}

func newFixed(size, maxBytes int, r io.Reader) *lengthFramer {
	return &lengthFramer{fixed: size, keep: true, max: maxBytes, src: newSource(r, min(4096, size))}
}

func (f *lengthFramer) header() int { return f.offset + f.n }

// total works out the frame's wire size from its header, or why it cannot.
func (f *lengthFramer) total(h []byte) (int64, error) {
	if f.fixed > 0 {
		return int64(f.fixed), nil
	}
	lf := h[f.offset : f.offset+f.n]
	var v uint64
	switch {
	case f.n == 1:
		v = uint64(lf[0])
	case f.n == 2 && f.little:
		v = uint64(binary.LittleEndian.Uint16(lf))
	case f.n == 2:
		v = uint64(binary.BigEndian.Uint16(lf))
	case f.little:
		v = uint64(binary.LittleEndian.Uint32(lf))
	default:
		v = uint64(binary.BigEndian.Uint32(lf))
	}
	hdr := uint64(f.header())
	var t uint64
	switch f.counts {
	case CountsSelf:
		if v < uint64(f.n) {
			return 0, fmt.Errorf("length %d is smaller than the %d-byte length field it counts", v, f.n)
		}
		t = uint64(f.offset) + v
	case CountsFrame:
		if v < hdr {
			return 0, fmt.Errorf("length %d is smaller than the %d-byte header it counts", v, hdr)
		}
		t = v
	default:
		t = hdr + v
	}
	return int64(t) + int64(f.trailer), nil
}

func (f *lengthFramer) Next() (Frame, error) {
	if f.fatal != nil {
		return Frame{}, f.fatal
	}
	s := f.src
	for {
		if !f.inFrame {
			hdr := f.header()
			if f.fixed > 0 {
				hdr = 0
			}
			p := s.data()
			if len(p) < hdr || len(p) == 0 {
				if err := s.fill(hdr); err != nil {
					return Frame{}, f.short(err)
				}
				continue
			}
			total, err := f.total(p)
			if err != nil {
				f.fatal = &FrameError{Offset: s.off, Reason: ReasonLength, Fatal: true,
					Detail: err.Error() + "; cannot find the next frame"}
				return Frame{}, f.fatal
			}
			deliver := total
			if !f.keep {
				deliver = total - int64(hdr)
			}
			f.inFrame, f.frameOff, f.remain = true, s.off, total
			if deliver > int64(f.max) {
				f.out = nil
				f.consume(total) // as much as is buffered
				return Frame{}, &FrameError{Offset: f.frameOff, Reason: ReasonTooLong,
					Detail: fmt.Sprintf("length says %d bytes, over max_frame_bytes %d; skipped", deliver, f.max)}
			}
			f.out = make([]byte, 0, deliver)
			if !f.keep {
				s.consume(hdr)
				f.remain -= int64(hdr)
			}
		}
		if f.remain > 0 {
			if len(s.data()) == 0 {
				if err := f.read(); err != nil {
					return Frame{}, f.short(err)
				}
			}
			f.consume(f.remain)
		}
		if f.remain == 0 {
			f.inFrame = false
			out := f.out
			f.out = nil
			if len(out) == 0 {
				continue // skipped over-long frame, or an empty body
			}
			return Frame{Offset: f.frameOff, Data: out}, nil
		}
	}
}

// consume takes up to n of the frame's bytes from the buffer.
func (f *lengthFramer) consume(n int64) {
	p := f.src.data()
	k := min(int64(len(p)), n, f.remain)
	if f.out != nil {
		f.out = append(f.out, p[:k]...)
	}
	f.src.consume(int(k))
	f.remain -= k
}

// read gets more of the current frame: a large rest goes straight into the
// frame's slice instead of through the buffer.
func (f *lengthFramer) read() error {
	s := f.src
	if f.out != nil && f.remain >= int64(len(s.buf)) && s.err == nil {
		dst := f.out[len(f.out):cap(f.out)]
		for range 100 {
			n, err := s.r.Read(dst)
			if n < 0 || n > len(dst) {
				return io.ErrShortBuffer
			}
			f.out = f.out[:len(f.out)+n]
			s.off += int64(n)
			f.remain -= int64(n)
			if err != nil {
				if n > 0 {
					if isTimeout(err) {
						return nil
					}
					s.err = err
					return nil
				}
				if !isTimeout(err) {
					s.err = err
				}
				return err
			}
			if n > 0 {
				return nil
			}
		}
		return io.ErrNoProgress
	}
	return s.fill(0)
}

// short turns the end of the stream inside a frame into a truncated frame.
func (f *lengthFramer) short(err error) error {
	if err != io.EOF {
		return err
	}
	s := f.src
	wasIn, skipping := f.inFrame, f.out == nil
	f.inFrame, f.out, f.remain = false, nil, 0
	if wasIn && !skipping {
		return &FrameError{Offset: f.frameOff, Reason: ReasonTruncated,
			Detail: "the stream ended inside the frame"}
	}
	if !wasIn && len(s.data()) > 0 {
		off := s.off
		s.consume(len(s.data()))
		return &FrameError{Offset: off, Reason: ReasonTruncated,
			Detail: "the stream ended inside the frame header"}
	}
	return io.EOF
}
