package framing

import (
	"bytes"
	"fmt"
	"io"
)

// SLIP special bytes (RFC 1055).
const (
	slipEND    = 0xC0
	slipESC    = 0xDB
	slipESCEND = 0xDC
	slipESCESC = 0xDD
)

// slipFramer decodes RFC 1055 SLIP. Senders often open every frame with
// END as well, so the empty frames between two ENDs are dropped. The RFC's
// sample receiver passes a bad escape through; here it spoils the frame,
// since SLIP has no checksum and a bad escape means corrupted bytes.
type slipFramer struct {
	src *source
	max int

	out        []byte
	inFrame    bool  // a byte came since the last END
	frameOff   int64 // offset of the byte after the last END
	esc        bool
	discarding bool // skipping to the next END after an error
}

func (f *slipFramer) Next() (Frame, error) {
	s := f.src
	for {
		p := s.data()
		for i, b := range p {
			pos := s.off + int64(i)
			if b == slipEND {
				if f.esc && !f.discarding {
					// The END still ends the frame, a bad one.
					off := f.frameOff
					f.reset(pos + 1)
					s.consume(i + 1)
					return Frame{}, &FrameError{Offset: off, Reason: ReasonEscape,
						Detail: fmt.Sprintf("invalid SLIP escape 0xDB 0xC0 at offset %d", pos-1)}
				}
				wasIn, wasDiscarding := f.inFrame, f.discarding
				off, out := f.frameOff, f.out
				f.reset(pos + 1)
				if !wasIn || wasDiscarding || len(out) == 0 {
					continue
				}
				s.consume(i + 1)
				return Frame{Offset: off, Data: bytes.Clone(out)}, nil
			}
			f.inFrame = true
			if f.discarding {
				continue
			}
			if f.esc {
				f.esc = false
				switch b {
				case slipESCEND:
					b = slipEND
				case slipESCESC:
					b = slipESC
				default:
					f.discarding = true
					s.consume(i + 1)
					return Frame{}, &FrameError{Offset: f.frameOff, Reason: ReasonEscape,
						Detail: fmt.Sprintf("invalid SLIP escape 0xDB 0x%02X at offset %d", b, pos-1)}
				}
			} else if b == slipESC {
				f.esc = true
				continue
			}
			if len(f.out) >= f.max {
				f.discarding = true
				s.consume(i + 1)
				return Frame{}, tooLong(f.frameOff, len(f.out)+1, f.max)
			}
			f.out = append(f.out, b)
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
					Detail: "the stream ended before the frame's END"}
			}
			f.reset(s.off)
			return Frame{}, io.EOF
		}
	}
}

// reset starts a new frame at offset off.
func (f *slipFramer) reset(off int64) {
	f.out = f.out[:0]
	f.inFrame, f.esc, f.discarding = false, false, false
	f.frameOff = off
}

// EncodeSLIP returns p as one SLIP frame, with an END before it (flushing
// any line noise at the receiver) and after it.
func EncodeSLIP(p []byte) []byte {
	out := make([]byte, 0, len(p)+len(p)/8+2)
	out = append(out, slipEND)
	for _, b := range p {
		switch b {
		case slipEND:
			out = append(out, slipESC, slipESCEND)
		case slipESC:
			out = append(out, slipESC, slipESCESC)
		default:
			out = append(out, b)
		}
	}
	return append(out, slipEND)
}
