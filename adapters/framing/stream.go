package framing

import (
	"bytes"
	"io"
	"time"
)

// wholeFramer makes the whole stream one frame (a logger uploading a file
// and closing the connection). Over MaxFrameBytes the frame is reported as
// too long and the rest of the stream is skipped.
type wholeFramer struct {
	src        *source
	max        int
	out        []byte
	discarding bool
	done       bool
}

func (f *wholeFramer) Next() (Frame, error) {
	s := f.src
	for !f.done {
		p := s.data()
		if !f.discarding {
			if len(f.out)+len(p) > f.max {
				f.discarding = true
				f.out = nil
				s.consume(len(p))
				return Frame{}, &FrameError{Offset: 0, Reason: ReasonTooLong,
					Detail: "the stream exceeds max_frame_bytes; skipped to its end"}
			}
			f.out = append(f.out, p...)
		}
		s.consume(len(p))
		if err := s.fill(0); err != nil {
			if err != io.EOF {
				return Frame{}, err
			}
			f.done = true
			if len(f.out) > 0 && !f.discarding {
				out := f.out
				f.out = nil
				return Frame{Offset: 0, Data: out}, nil
			}
		}
	}
	return Frame{}, io.EOF
}

// idleFramer ends a frame when no byte has come for gap (serial loggers
// that send a burst and fall silent). It sets the source's read deadline
// itself: the last byte's arrival plus gap while a frame is open, none
// otherwise. A deadline passing while no frame is open is somebody else's
// (the caller's idle timeout) and is returned.
type idleFramer struct {
	src        *source
	dr         DeadlineReader
	gap        time.Duration
	max        int
	deadline   time.Time
	frameOff   int64
	out        []byte
	inFrame    bool
	discarding bool
	last       time.Time
}

func newIdle(dr DeadlineReader, gap time.Duration, maxBytes int) *idleFramer {
	return &idleFramer{src: newSource(dr, 4096), dr: dr, gap: gap, max: maxBytes}
}

func (f *idleFramer) setDeadline(t time.Time) {
	if t.Equal(f.deadline) || f.src.err != nil {
		return
	}
	if err := f.dr.SetReadDeadline(t); err != nil {
		// A source whose peer has gone (net.Pipe refuses deadlines then)
		// fails the read that follows with the error that matters, EOF
		// included; so read anyway and set the deadline again next time.
		return
	}
	f.deadline = t
}

func (f *idleFramer) Next() (Frame, error) {
	s := f.src
	for {
		if p := s.data(); len(p) > 0 {
			if !f.inFrame {
				f.inFrame, f.frameOff = true, s.off
			}
			f.last = time.Now()
			if !f.discarding && len(f.out)+len(p) > f.max {
				f.discarding = true
				f.out = f.out[:0]
				s.consume(len(p))
				return Frame{}, &FrameError{Offset: f.frameOff, Reason: ReasonTooLong,
					Detail: "no silence within max_frame_bytes; skipped to the next silence"}
			}
			if !f.discarding {
				f.out = append(f.out, p...)
			}
			s.consume(len(p))
		}
		var dl time.Time
		if f.inFrame {
			dl = f.last.Add(f.gap)
		}
		f.setDeadline(dl)
		err := s.fill(0)
		if err == nil {
			continue
		}
		if (isTimeout(err) && f.inFrame) || err == io.EOF {
			if fr, ok := f.end(); ok {
				return fr, nil
			}
			if isTimeout(err) {
				continue
			}
		}
		if err == io.EOF {
			f.setDeadline(time.Time{})
		}
		return Frame{}, err
	}
}

// end closes the open frame; ok when it has data to deliver.
func (f *idleFramer) end() (Frame, bool) {
	out, off := f.out, f.frameOff
	ok := f.inFrame && !f.discarding && len(out) > 0
	f.inFrame, f.discarding = false, false
	f.out = f.out[:0]
	if !ok {
		return Frame{}, false
	}
	return Frame{Offset: off, Data: bytes.Clone(out)}, true
}
