package framing

import (
	"errors"
	"io"
	"os"
	"time"
)

// source is the buffered reader every framer sits on: unread bytes are
// buf[start:end], and off is the stream offset of buf[start].
type source struct {
	r          io.Reader
	buf        []byte
	start, end int
	off        int64
	// err is a read error that came with data; it is returned by the next
	// fill. Terminal errors (anything but a timeout) stay here for good.
	err error
	// grow is set when a read filled all the free space: the source has
	// more waiting, and a larger buffer takes it in fewer reads (and lets
	// the tcp adapter queue more frames per fsync).
	grow bool
}

// growMax bounds how far a busy stream's buffer grows.
const growMax = 64 << 10

func newSource(r io.Reader, size int) *source {
	return &source{r: r, buf: make([]byte, size)}
}

// data is the unread bytes.
func (s *source) data() []byte { return s.buf[s.start:s.end] }

// consume drops n unread bytes.
func (s *source) consume(n int) {
	s.start += n
	s.off += int64(n)
	if s.start == s.end {
		s.start, s.end = 0, 0
	}
}

// fill reads more bytes, keeping the unread ones; it makes the buffer at
// least need bytes long when fewer are unread. It returns nil when it added
// at least one byte, else the read error.
func (s *source) fill(need int) error {
	if s.err != nil {
		err := s.err
		if isTimeout(err) {
			s.err = nil
		}
		return err
	}
	if s.grow && len(s.buf) < growMax {
		nb := make([]byte, min(2*len(s.buf), growMax))
		s.end = copy(nb, s.buf[s.start:s.end])
		s.start, s.buf = 0, nb
	}
	s.grow = false
	if s.end == len(s.buf) {
		n := s.end - s.start
		if s.start > 0 && n < len(s.buf) {
			copy(s.buf, s.buf[s.start:s.end])
		} else {
			size := 2 * len(s.buf)
			if size < need {
				size = need
			}
			if size < 64 {
				size = 64
			}
			nb := make([]byte, size)
			copy(nb, s.buf[s.start:s.end])
			s.buf = nb
		}
		s.start, s.end = 0, n
	}
	for range 100 {
		free := len(s.buf) - s.end
		n, err := s.r.Read(s.buf[s.end:])
		if n < 0 || n > free {
			return errors.New("framing: source returned an invalid count")
		}
		s.end += n
		s.grow = n == free
		if err != nil {
			if n > 0 {
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

// isTimeout reports whether err is a read deadline passing, which leaves the
// stream usable.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// DeadlineReader is a source whose reads can time out: net.Conn, or a
// serial port wrapped by NewDeadlineReader. The idle framing needs one.
type DeadlineReader interface {
	io.Reader
	SetReadDeadline(t time.Time) error
}

// TimeoutPort is the part of a go.bug.st/serial Port the idle framing needs.
type TimeoutPort interface {
	io.Reader
	SetReadTimeout(t time.Duration) error
}

// noTimeout is go.bug.st/serial's NoTimeout (checked by a test) copied so
// that this package does not import the serial library.
const noTimeout time.Duration = -1

// NewDeadlineReader makes a serial port usable by the idle framing: it turns
// read deadlines into the port's relative read timeout, and the port's
// "no byte before the timeout" result (0, nil) into os.ErrDeadlineExceeded.
func NewDeadlineReader(p TimeoutPort) DeadlineReader {
	return &deadlinePort{p: p, current: noTimeout}
}

type deadlinePort struct {
	p        TimeoutPort
	deadline time.Time
	current  time.Duration
}

func (d *deadlinePort) SetReadDeadline(t time.Time) error {
	d.deadline = t
	return nil
}

func (d *deadlinePort) Read(b []byte) (int, error) {
	want := noTimeout
	if !d.deadline.IsZero() {
		want = time.Until(d.deadline)
		if want <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
	}
	if want != d.current || want != noTimeout {
		if err := d.p.SetReadTimeout(want); err != nil {
			return 0, err
		}
		d.current = want
	}
	n, err := d.p.Read(b)
	if n == 0 && err == nil && want != noTimeout {
		return 0, os.ErrDeadlineExceeded
	}
	return n, err
}
