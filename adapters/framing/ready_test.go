package framing

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
)

// guard fails the test when the framer reads while Ready said it need not.
type guard struct {
	t      testing.TB
	r      io.Reader
	forbid bool
}

func (g *guard) Read(b []byte) (int, error) {
	if g.forbid {
		g.t.Fatalf("Next read from the source although Ready was true")
	}
	return g.r.Read(b)
}

// collectReady is collect with a Ready check before every Next: when Ready
// is true, Next must not read. It returns the results and how often Ready
// was true.
func collectReady(t testing.TB, cfg Config, r io.Reader, budget int) ([]res, int) {
	t.Helper()
	g := &guard{t: t, r: r}
	fr, err := New(cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := fr.(Buffered)
	if !ok {
		t.Fatalf("%T is not Buffered", fr)
	}
	var out []res
	readies := 0
	for range budget {
		g.forbid = b.Ready()
		if g.forbid {
			readies++
		}
		fm, err := fr.Next()
		g.forbid = false
		var fe *FrameError
		switch {
		case err == nil:
			out = append(out, f(fm.Offset, string(fm.Data)))
		case errors.As(err, &fe):
			out = append(out, e(fe.Offset, fe.Reason))
		case errors.Is(err, os.ErrDeadlineExceeded):
		case err == io.EOF:
			return out, readies
		default:
			return append(out, res{Err: "error " + err.Error()}), readies
		}
	}
	t.Fatalf("framer did not finish within %d calls", budget)
	return nil, 0
}

// readyEverywhere checks Ready against every feed and that asking it
// changes nothing.
func readyEverywhere(t *testing.T, cfg Config, p []byte) int {
	t.Helper()
	fr, err := New(cfg, bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	want := collect(t, fr, 8*len(p)+100)
	total := 0
	for _, fd := range feeds {
		got, n := collectReady(t, cfg, fd.r(p, uint64(len(p))), 8*len(p)+100)
		if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("fed %s with Ready checks:\n got %v\nwant %v", fd.name, got, want)
		}
		total += n
	}
	return total
}

func TestReadyNeverBlocks(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		in   string
		// minReady: Ready must have been true at least this often when the
		// whole input came in one read (frames in hand are seen).
		minReady int
	}{
		{"lf lines", Config{}, "a\nbc\nd\n", 2},
		{"crlf split", Config{}, "ab\r\ncd\r\n\r\nx", 1},
		{"blank lines skipped", Config{}, "\n\n\na\n\n\nb\n", 1},
		{"over-long then good", Config{MaxFrameBytes: 3}, "abcdefgh\nok\nyes\n", 1},
		{"over-long without end", Config{MaxFrameBytes: 3}, "abcdefghijkl", 0},
		{"any: CR then LF", Config{Terminator: TermAny}, "a\r\nb\rc\n\r\n", 2},
		{"crlf only", Config{Terminator: TermCRLF}, "a\rb\r\nc\r\n", 1},
		{"cr", Config{Terminator: TermCR}, "a\rb\r", 1},
		{"delimiter", Config{Type: TypeDelimiter, Delimiter: "hex:0304"}, "ab\x03\x04cd\x03\x04e", 1},
		{"delimiter kept", Config{Type: TypeDelimiter, Delimiter: "aab", KeepDelimiter: true}, "xaabyaabaab", 1},
		{"no terminator at EOF", Config{}, "last", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			readyEverywhere(t, tc.cfg, []byte(tc.in))
			_, n := collectReady(t, tc.cfg, bytes.NewReader([]byte(tc.in)), 1000)
			if n < tc.minReady {
				t.Fatalf("Ready was true %d times reading all at once, want at least %d", n, tc.minReady)
			}
		})
	}
}

// A busy stream's buffer grows, so one read takes in many frames.
func TestBufferGrowsForBusyStream(t *testing.T) {
	line := []byte("BENCH0001,2026-12-03T17:30:00.123456789Z,21.5,1013.25,3.75\n")
	p := bytes.Repeat(line, 4000)
	fr, err := New(Config{}, bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	d := fr.(*delimFramer)
	run, best := 0, 0
	for range 4000 {
		if d.Ready() {
			run++
			best = max(best, run)
		} else {
			run = 0
		}
		if _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.src.buf) != growMax {
		t.Fatalf("buffer %d bytes after a busy stream, want %d", len(d.src.buf), growMax)
	}
	if best < 500 {
		t.Fatalf("at most %d frames in hand at once, want a 64 KiB read's worth", best)
	}
}

func FuzzLineReady(f *testing.F) {
	seedFrom(f, "a\nbc\n", "ab\r\ncd\n", "\n\r\n\nx\n", "123456789\nok\n", "a\rb\nc\r\nd\n\re", "a\r\r\nb")
	terms := []string{"lf", "crlf", "cr", "any"}
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		readyEverywhere(t, Config{Terminator: terms[sel%4], MaxFrameBytes: 1 + int(sel>>2)%16}, p)
	})
}
