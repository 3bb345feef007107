package framing

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"testing"
	"time"

	"go.bug.st/serial"
)

// gapGap in a script marks a silence.
const gapMark = "\x00GAP\x00"

// scripted is a DeadlineReader that plays chunks and silences: a silence
// times the read out only while a deadline is set (as a real one would);
// otherwise it passes unnoticed, like a pause nobody waited for.
type scripted struct {
	items    []string
	deadline bool
	chunk    func() int
}

func (s *scripted) SetReadDeadline(t time.Time) error {
	s.deadline = !t.IsZero()
	return nil
}

func (s *scripted) Read(b []byte) (int, error) {
	for len(s.items) > 0 {
		it := s.items[0]
		if it == gapMark {
			s.items = s.items[1:]
			if s.deadline {
				return 0, os.ErrDeadlineExceeded
			}
			continue
		}
		n := min(len(it), len(b))
		if s.chunk != nil {
			n = min(n, s.chunk())
		}
		copy(b, it[:n])
		if n == len(it) {
			s.items = s.items[1:]
		} else {
			s.items[0] = it[n:]
		}
		return n, nil
	}
	return 0, io.EOF
}

func TestIdle(t *testing.T) {
	c := Config{Type: "idle", Gap: time.Second, MaxFrameBytes: 8}
	cases := []struct {
		name  string
		items []string
		want  []res
	}{
		{"two bursts", []string{"abc", "de", gapMark, "fgh", gapMark}, []res{f(0, "abcde"), f(5, "fgh")}},
		{"last burst ended by EOF", []string{"abc", gapMark, "de"}, []res{f(0, "abc"), f(3, "de")}},
		{"silences with nothing open are not frames", []string{gapMark, gapMark, "a", gapMark, gapMark, "b"}, []res{f(0, "a"), f(1, "b")}},
		{"too long then good", []string{"123456", "789", gapMark, "ok", gapMark}, []res{e(0, ReasonTooLong), f(9, "ok")}},
		{"exactly max", []string{"12345678", gapMark}, []res{f(0, "12345678")}},
		{"too long at EOF", []string{"123456789"}, []res{e(0, ReasonTooLong)}},
		{"empty", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			chunkers := map[string]func() int{
				"all":      nil,
				"one_byte": func() int { return 1 },
				"random":   func() int { return 1 + rand.IntN(4) },
			}
			for name, ch := range chunkers {
				src := &scripted{items: append([]string(nil), tc.items...), chunk: ch}
				fr, err := New(c, src)
				if err != nil {
					t.Fatal(err)
				}
				got := collect(t, fr, 1000)
				if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
					t.Fatalf("%s: got %v, want %v", name, got, tc.want)
				}
			}
		})
	}
}

func TestIdleNeedsDeadlines(t *testing.T) {
	_, err := New(Config{Type: "idle", Gap: time.Second}, struct{ io.Reader }{})
	if err == nil {
		t.Fatal("idle framing over a reader without deadlines: no error")
	}
}

// TestIdleRealTime runs the idle framing over a real net.Conn pair and
// real silences.
func TestIdleRealTime(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	// Generous margins: the machine running the tests may be busy.
	gap := 100 * time.Millisecond
	go func() {
		for _, burst := range []string{"ab", "cd"} {
			for i := range len(burst) {
				_, _ = a.Write([]byte{burst[i]})
				time.Sleep(gap / 50)
			}
			time.Sleep(5 * gap)
		}
		_, _ = a.Write([]byte("e"))
		a.Close()
	}()
	fr, err := New(Config{Type: "idle", Gap: gap, MaxFrameBytes: 8}, b)
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, fr, 1000)
	want := []res{f(0, "ab"), f(2, "cd"), f(4, "e")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestIdleCallerTimeout: a deadline passing while no frame is open is the
// caller's (its own idle timeout) and comes back from Next; the framer goes
// on after it.
func TestIdleCallerTimeout(t *testing.T) {
	src := &callerTimeouts{steps: []any{os.ErrDeadlineExceeded, "a", gapMark, "b"}}
	fr, _ := New(Config{Type: "idle", Gap: time.Second}, src)
	if _, err := fr.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("first Next: %v, want the caller's timeout", err)
	}
	got := collect(t, fr, 100)
	if want := []res{f(0, "a"), f(1, "b")}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// callerTimeouts plays strings and errors; gapMark times out only under
// the framer's own deadline.
type callerTimeouts struct {
	steps    []any
	deadline bool
}

func (c *callerTimeouts) SetReadDeadline(t time.Time) error {
	c.deadline = !t.IsZero()
	return nil
}

func (c *callerTimeouts) Read(b []byte) (int, error) {
	for len(c.steps) > 0 {
		st := c.steps[0]
		c.steps = c.steps[1:]
		switch v := st.(type) {
		case error:
			return 0, v
		case string:
			if v == gapMark {
				if c.deadline {
					return 0, os.ErrDeadlineExceeded
				}
				continue
			}
			return copy(b, v), nil
		}
	}
	return 0, io.EOF
}

// fakePort mimics go.bug.st/serial: a read that times out returns (0, nil).
type fakePort struct {
	items   []string
	timeout time.Duration
	sets    int
}

func (p *fakePort) SetReadTimeout(d time.Duration) error {
	p.timeout = d
	p.sets++
	return nil
}

func (p *fakePort) Read(b []byte) (int, error) {
	if len(p.items) == 0 {
		return 0, errors.New("port closed")
	}
	it := p.items[0]
	p.items = p.items[1:]
	if it == gapMark {
		if p.timeout == serial.NoTimeout {
			return 0, errors.New("a blocking read timed out")
		}
		return 0, nil
	}
	return copy(b, it), nil
}

func TestDeadlineReaderSerial(t *testing.T) {
	if noTimeout != serial.NoTimeout {
		t.Fatalf("noTimeout %v != serial.NoTimeout %v", noTimeout, serial.NoTimeout)
	}
	p := &fakePort{items: []string{"ab", "c", gapMark, "de", gapMark}}
	fr, err := New(Config{Type: "idle", Gap: time.Hour}, NewDeadlineReader(p))
	if err != nil {
		t.Fatal(err)
	}
	var got []res
	for {
		fm, err := fr.Next()
		if err != nil {
			if err.Error() != "port closed" {
				t.Fatalf("want the port's error, got %v", err)
			}
			break
		}
		got = append(got, f(fm.Offset, string(fm.Data)))
	}
	if want := []res{f(0, "abc"), f(3, "de")}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if p.timeout != serial.NoTimeout {
		t.Fatalf("idle port left with timeout %v, want NoTimeout", p.timeout)
	}

	// A deadline already past does not touch the port.
	dr := NewDeadlineReader(&fakePort{items: []string{"x"}})
	_ = dr.SetReadDeadline(time.Now().Add(-time.Second))
	if n, err := dr.Read(make([]byte, 4)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past deadline: %d %v", n, err)
	}
}
