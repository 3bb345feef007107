package framing

import (
	"bytes"
	"fmt"
	"io"
)

// delimFramer cuts at a delimiter; line framing is a delimiter framing with
// two twists (lf strips one CR before the LF; any also ends at a bare CR and
// then swallows an LF right after it).
type delimFramer struct {
	src   *source
	delim []byte
	keep  bool
	// stripCR: "lf" lines, where one CR before the LF belongs to the
	// terminator.
	stripCR bool
	// anyEOL: CR or LF ends a line; an LF right after a CR is the rest of a
	// CRLF, dropped even when it arrives in a later read.
	anyEOL bool
	max    int
	// limit: with this many unread bytes and no delimiter among them the
	// frame is surely over max.
	limit int

	scanned    int  // bytes of data() already searched without a match
	discarding bool // skipping the rest of an over-long frame
	skipLF     bool // anyEOL: the last frame ended at a CR
}

func newLine(term string, maxBytes int, r io.Reader) *delimFramer {
	d := &delimFramer{max: maxBytes}
	switch term {
	case TermCRLF:
		d.delim = []byte("\r\n")
	case TermCR:
		d.delim = []byte("\r")
	case TermAny:
		d.anyEOL = true
		d.delim = []byte("\n") // length only; find handles both bytes
	default:
		d.delim = []byte("\n")
		d.stripCR = true
	}
	d.limit = maxBytes + len(d.delim)
	if d.stripCR {
		d.limit++
	}
	d.src = newSource(r, min(4096, d.limit+1))
	return d
}

func newDelimiter(delim []byte, keep bool, maxBytes int, r io.Reader) *delimFramer {
	d := &delimFramer{delim: delim, keep: keep, max: maxBytes, limit: maxBytes + len(delim)}
	d.src = newSource(r, min(4096, d.limit+1))
	return d
}

// find returns the index of the first terminator in p at or after from, and
// its length.
func (d *delimFramer) find(p []byte, from int) (int, int) {
	if d.anyEOL {
		q := p[from:]
		i := bytes.IndexByte(q, '\n')
		if j := bytes.IndexByte(q, '\r'); j >= 0 && (i < 0 || j < i) {
			i = j
		}
		if i < 0 {
			return -1, 0
		}
		return from + i, 1
	}
	if len(d.delim) == 1 {
		if i := bytes.IndexByte(p[from:], d.delim[0]); i >= 0 {
			return from + i, 1
		}
		return -1, 0
	}
	if i := bytes.Index(p[from:], d.delim); i >= 0 {
		return from + i, len(d.delim)
	}
	return -1, 0
}

// rescanFrom is where the next search may start: a delimiter could straddle
// the end of what was searched.
func (d *delimFramer) rescanFrom() int {
	return max(0, d.scanned-(len(d.delim)-1))
}

func (d *delimFramer) Next() (Frame, error) {
	s := d.src
	for {
		p := s.data()
		if d.skipLF && len(p) > 0 {
			d.skipLF = false
			if p[0] == '\n' {
				s.consume(1)
				d.scanned = 0
				continue
			}
		}
		i, tl := d.find(p, d.rescanFrom())
		if i >= 0 {
			off := s.off
			content := p[:i]
			if d.stripCR && len(content) > 0 && content[len(content)-1] == '\r' {
				content = content[:len(content)-1]
			}
			if d.anyEOL && p[i] == '\r' {
				d.skipLF = true
			}
			wasDiscarding := d.discarding
			d.discarding = false
			d.scanned = 0
			n := len(content)
			var out []byte
			if !wasDiscarding && n > 0 && n <= d.max {
				if d.keep {
					out = bytes.Clone(p[:i+tl])
				} else {
					out = bytes.Clone(content)
				}
			}
			s.consume(i + tl)
			switch {
			case wasDiscarding, n == 0:
				continue
			case n > d.max:
				return Frame{}, tooLong(off, n, d.max)
			}
			return Frame{Offset: off, Data: out}, nil
		}
		d.scanned = len(p)
		if d.discarding {
			// Keep only what could be the start of a split delimiter.
			if drop := len(p) - (len(d.delim) - 1); drop > 0 {
				s.consume(drop)
				d.scanned = len(d.delim) - 1
			}
		} else if len(p) >= d.limit {
			off := s.off
			d.discarding = true
			return Frame{}, &FrameError{Offset: off, Reason: ReasonTooLong,
				Detail: fmt.Sprintf("no frame end within max_frame_bytes %d; skipped to the next one", d.max)}
		}
		if err := s.fill(d.limit + 1); err != nil {
			if err != io.EOF {
				return Frame{}, err
			}
			return d.atEOF()
		}
	}
}

// Ready implements Buffered: it runs Next's search over the unread bytes
// without consuming them.
func (d *delimFramer) Ready() bool {
	s := d.src
	if s.err != nil {
		return true // Next returns it, or the last frame before EOF
	}
	p := s.data()
	from := d.rescanFrom()
	skipLF, discarding := d.skipLF, d.discarding
	for {
		if skipLF && len(p) > 0 {
			skipLF = false
			if p[0] == '\n' {
				p, from = p[1:], 0
				continue
			}
		}
		i, tl := d.find(p, from)
		if i < 0 {
			// Nothing ends here: only an over-long frame is news.
			return !discarding && len(p) >= d.limit
		}
		n := i
		if d.stripCR && n > 0 && p[n-1] == '\r' {
			n--
		}
		if !discarding && n > 0 {
			return true // a frame, or a too-long error
		}
		if d.anyEOL && p[i] == '\r' {
			skipLF = true
		}
		discarding = false
		p, from = p[i+tl:], 0
	}
}

// atEOF ends the stream: unterminated data left over is a last frame (a
// file or a logger that closes after its last line).
func (d *delimFramer) atEOF() (Frame, error) {
	s := d.src
	p := s.data()
	off := s.off
	n := len(p)
	wasDiscarding := d.discarding
	d.discarding = false
	content := p
	if d.stripCR && n > 0 && p[n-1] == '\r' {
		content = p[:n-1]
	}
	var out []byte
	if len(content) > 0 && len(content) <= d.max && !wasDiscarding {
		out = bytes.Clone(content)
	}
	s.consume(n)
	d.scanned = 0
	switch {
	case wasDiscarding || len(content) == 0:
		return Frame{}, io.EOF
	case len(content) > d.max:
		return Frame{}, tooLong(off, len(content), d.max)
	}
	return Frame{Offset: off, Data: out}, nil
}

func tooLong(off int64, n, maxBytes int) *FrameError {
	return &FrameError{Offset: off, Reason: ReasonTooLong,
		Detail: fmt.Sprintf("%d bytes exceed max_frame_bytes %d; skipped", n, maxBytes)}
}
