package framing

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// cobsFramer decodes Consistent Overhead Byte Stuffing (Cheshire & Baker,
// 1999): every 0x00 ends a frame; inside one, a code byte n (1..255) is
// followed by n-1 data bytes and stands for a zero after them, except when
// n is 0xFF or the frame ends. A 0x00 that cuts a group short spoils that
// frame only: decoding starts afresh after it.
type cobsFramer struct {
	src *source
	max int

	out        []byte
	inFrame    bool
	frameOff   int64
	remain     int  // data bytes left in the current group
	code       byte // the current group's code byte (0 before the first)
	discarding bool
}

func (f *cobsFramer) Next() (Frame, error) {
	s := f.src
	for {
		p := s.data()
		for i, b := range p {
			pos := s.off + int64(i)
			if b == 0 {
				wasIn, wasDiscarding, remain := f.inFrame, f.discarding, f.remain
				off, out := f.frameOff, f.out
				f.reset(pos + 1)
				if !wasIn || wasDiscarding {
					continue
				}
				if remain > 0 {
					s.consume(i + 1)
					return Frame{}, &FrameError{Offset: off, Reason: ReasonCOBS,
						Detail: fmt.Sprintf("0x00 at offset %d inside a COBS group (%d bytes short)", pos, remain)}
				}
				if len(out) == 0 {
					continue
				}
				s.consume(i + 1)
				return Frame{Offset: off, Data: bytes.Clone(out)}, nil
			}
			f.inFrame = true
			if f.discarding {
				continue
			}
			if f.remain == 0 {
				// A code byte: the previous group's implied zero goes
				// out only now that the frame has not ended.
				if f.code != 0 && f.code != 0xFF {
					if !f.put(0) {
						s.consume(i + 1)
						return Frame{}, tooLong(f.frameOff, len(f.out)+1, f.max)
					}
				}
				f.code = b
				f.remain = int(b) - 1
				continue
			}
			f.remain--
			if !f.put(b) {
				s.consume(i + 1)
				return Frame{}, tooLong(f.frameOff, len(f.out)+1, f.max)
			}
		}
		s.consume(len(p))
		if err := s.fill(0); err != nil {
			if err != io.EOF {
				return Frame{}, err
			}
			if f.inFrame && !f.discarding {
				off := f.frameOff
				f.reset(s.off)
				return Frame{}, &FrameError{Offset: off, Reason: ReasonTruncated,
					Detail: "the stream ended before the frame's 0x00"}
			}
			f.reset(s.off)
			return Frame{}, io.EOF
		}
	}
}

// put appends a decoded byte, or starts discarding when the frame is full.
func (f *cobsFramer) put(b byte) bool {
	if len(f.out) >= f.max {
		f.discarding = true
		return false
	}
	f.out = append(f.out, b)
	return true
}

func (f *cobsFramer) reset(off int64) {
	f.out = f.out[:0]
	f.inFrame, f.discarding = false, false
	f.remain, f.code = 0, 0
	f.frameOff = off
}

// EncodeCOBS returns p COBS-encoded and followed by the 0x00 delimiter,
// ready to send.
func EncodeCOBS(p []byte) []byte {
	out := make([]byte, 1, len(p)+len(p)/254+2)
	codeAt, code := 0, byte(1)
	for i, b := range p {
		if b != 0 {
			out = append(out, b)
			code++
		}
		// A full group ends without an implied zero; at the very end of
		// p no empty group follows it (the canonical encoding).
		if b == 0 || (code == 0xFF && i < len(p)-1) {
			out[codeAt] = code
			codeAt, code = len(out), 1
			out = append(out, 0)
		}
	}
	out[codeAt] = code
	return append(out, 0)
}

// ErrCOBS is returned by DecodeCOBS for a malformed encoding.
var ErrCOBS = errors.New("malformed COBS frame")

// DecodeCOBS decodes one COBS frame given without its 0x00 delimiter.
func DecodeCOBS(enc []byte) ([]byte, error) {
	out := make([]byte, 0, len(enc))
	for i := 0; i < len(enc); {
		code := enc[i]
		if code == 0 {
			return nil, fmt.Errorf("%w: 0x00 at %d", ErrCOBS, i)
		}
		i++
		end := i + int(code) - 1
		if end > len(enc) {
			return nil, fmt.Errorf("%w: group at %d runs past the end", ErrCOBS, i-1)
		}
		for ; i < end; i++ {
			if enc[i] == 0 {
				return nil, fmt.Errorf("%w: 0x00 at %d", ErrCOBS, i)
			}
			out = append(out, enc[i])
		}
		if code != 0xFF && i < len(enc) {
			out = append(out, 0)
		}
	}
	return out, nil
}
