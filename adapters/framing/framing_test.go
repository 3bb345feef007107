package framing

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// res is one result of Next: a frame (Err "") or a FrameError's reason
// ("!" appended when fatal).
type res struct {
	Off  int64
	Data string
	Err  string
}

func (r res) String() string {
	if r.Err != "" {
		return fmt.Sprintf("%d!%s", r.Off, r.Err)
	}
	return fmt.Sprintf("%d:%q", r.Off, r.Data)
}

func f(off int64, data string) res   { return res{Off: off, Data: data} }
func e(off int64, reason string) res { return res{Off: off, Err: reason} }

// collect runs a framer to the end of its stream. Timeouts are retried:
// they must not change what comes out.
func collect(t testing.TB, fr Framer, budget int) []res {
	t.Helper()
	var out []res
	for range budget {
		fm, err := fr.Next()
		if err == nil {
			if len(fm.Data) == 0 {
				t.Fatalf("empty frame at %d", fm.Offset)
			}
			out = append(out, f(fm.Offset, string(fm.Data)))
			continue
		}
		var fe *FrameError
		switch {
		case errors.As(err, &fe):
			r := e(fe.Offset, fe.Reason)
			if fe.Fatal {
				r.Err += "!"
				return append(out, r)
			}
			out = append(out, r)
		case errors.Is(err, os.ErrDeadlineExceeded):
		case err == io.EOF:
			// EOF is sticky.
			if _, err := fr.Next(); err != io.EOF {
				t.Fatalf("Next after EOF: %v", err)
			}
			return out
		default:
			return append(out, res{Err: "error " + err.Error()})
		}
	}
	t.Fatalf("framer did not finish within %d calls (loop?)", budget)
	return nil
}

// randomChunks returns its data in chunks of 1..max bytes.
type randomChunks struct {
	p   []byte
	rng *rand.Rand
	max int
}

func (r *randomChunks) Read(b []byte) (int, error) {
	if len(r.p) == 0 {
		return 0, io.EOF
	}
	n := min(1+r.rng.IntN(r.max), len(b), len(r.p))
	copy(b, r.p[:n])
	r.p = r.p[n:]
	return n, nil
}

// timeouts interleaves read timeouts, empty reads and small chunks.
type timeouts struct {
	p   []byte
	rng *rand.Rand
}

func (r *timeouts) Read(b []byte) (int, error) {
	switch r.rng.IntN(4) {
	case 0:
		return 0, os.ErrDeadlineExceeded
	case 1:
		return 0, nil
	}
	if len(r.p) == 0 {
		return 0, io.EOF
	}
	n := min(1+r.rng.IntN(5), len(b), len(r.p))
	copy(b, r.p[:n])
	r.p = r.p[n:]
	if r.rng.IntN(3) == 0 {
		return n, os.ErrDeadlineExceeded // data and a timeout together
	}
	return n, nil
}

type feed struct {
	name string
	r    func(p []byte, seed uint64) io.Reader
}

var feeds = []feed{
	{"all", func(p []byte, _ uint64) io.Reader { return bytes.NewReader(p) }},
	{"one_byte", func(p []byte, _ uint64) io.Reader { return iotest.OneByteReader(bytes.NewReader(p)) }},
	{"data_err", func(p []byte, _ uint64) io.Reader { return iotest.DataErrReader(bytes.NewReader(p)) }},
	{"random_chunks", func(p []byte, seed uint64) io.Reader {
		return &randomChunks{p: p, rng: rand.New(rand.NewPCG(seed, 1)), max: 17}
	}},
	{"timeouts", func(p []byte, seed uint64) io.Reader {
		return &timeouts{p: p, rng: rand.New(rand.NewPCG(seed, 2))}
	}},
}

type tcase struct {
	name string
	cfg  Config
	in   string
	want []res
}

func runCases(t *testing.T, cases []tcase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, fd := range feeds {
				for seed := range uint64(3) {
					if seed > 0 && (fd.name == "all" || fd.name == "one_byte" || fd.name == "data_err") {
						continue
					}
					fr, err := New(tc.cfg, fd.r([]byte(tc.in), seed))
					if err != nil {
						t.Fatal(err)
					}
					got := collect(t, fr, 8*len(tc.in)+100)
					if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
						t.Fatalf("fed %s (seed %d):\n got %v\nwant %v", fd.name, seed, got, tc.want)
					}
				}
			}
		})
	}
}

func TestLine(t *testing.T) {
	lf := Config{Type: "line", MaxFrameBytes: 8}
	crlf := Config{Type: "line", Terminator: "crlf", MaxFrameBytes: 8}
	cr := Config{Type: "line", Terminator: "cr", MaxFrameBytes: 8}
	anyEOL := Config{Type: "line", Terminator: "any", MaxFrameBytes: 8}
	long := strings.Repeat("x", 30)
	runCases(t, []tcase{
		{"lf/simple", lf, "a\nbc\n", []res{f(0, "a"), f(2, "bc")}},
		{"lf/crlf stripped", lf, "ab\r\ncd\n", []res{f(0, "ab"), f(4, "cd")}},
		{"lf/only one CR stripped", lf, "ab\r\r\n", []res{f(0, "ab\r")}},
		{"lf/bare CR is data", lf, "a\rb\n", []res{f(0, "a\rb")}},
		{"lf/empty lines dropped", lf, "\n\r\n\nx\n", []res{f(4, "x")}},
		{"lf/last line without LF", lf, "a\nbc", []res{f(0, "a"), f(2, "bc")}},
		{"lf/last line CR at EOF", lf, "ab\r", []res{f(0, "ab")}},
		{"lf/exactly max", lf, "12345678\n", []res{f(0, "12345678")}},
		{"lf/exactly max with CRLF", lf, "12345678\r\nz\n", []res{f(0, "12345678"), f(10, "z")}},
		{"lf/one over max then good", lf, "123456789\nok\n", []res{e(0, ReasonTooLong), f(10, "ok")}},
		{"lf/far over max then good", lf, long + "\nok\n", []res{e(0, ReasonTooLong), f(31, "ok")}},
		{"lf/good, too long, good", lf, "a\n" + long + "\r\nb\n", []res{f(0, "a"), e(2, ReasonTooLong), f(34, "b")}},
		{"lf/too long at EOF", lf, "123456789", []res{e(0, ReasonTooLong)}},
		{"lf/far too long at EOF", lf, long, []res{e(0, ReasonTooLong)}},
		{"lf/empty input", lf, "", nil},
		{"lf/binary bytes", lf, "\x00\xff\n", []res{f(0, "\x00\xff")}},
		{"crlf/lone LF is data", crlf, "a\r\nb\nc\r\n", []res{f(0, "a"), f(3, "b\nc")}},
		{"crlf/lone CR is data", crlf, "a\rb\r\n", []res{f(0, "a\rb")}},
		{"crlf/too long then good", crlf, "123456789\r\nok\r\n", []res{e(0, ReasonTooLong), f(11, "ok")}},
		{"crlf/far too long, delimiter split", crlf, long + "\r\nok\r\n", []res{e(0, ReasonTooLong), f(32, "ok")}},
		{"crlf/CR before CRLF", crlf, "ab\r\r\n", []res{f(0, "ab\r")}},
		{"crlf/trailing CR kept", crlf, "ab\r", []res{f(0, "ab\r")}},
		{"cr/simple", cr, "a\rb\r", []res{f(0, "a"), f(2, "b")}},
		{"cr/LF is data", cr, "a\nb\r", []res{f(0, "a\nb")}},
		{"any/mixed", anyEOL, "a\rb\nc\r\nd\n\re", []res{f(0, "a"), f(2, "b"), f(4, "c"), f(7, "d"), f(10, "e")}},
		{"any/CR CR LF", anyEOL, "a\r\r\nb", []res{f(0, "a"), f(4, "b")}},
		{"any/LF after CR skipped once", anyEOL, "a\r\n\nb\r", []res{f(0, "a"), f(4, "b")}},
		{"any/too long then good", anyEOL, "123456789\r\nok", []res{e(0, ReasonTooLong), f(11, "ok")}},
		{"any/far too long then good", anyEOL, long + "\rok\n", []res{e(0, ReasonTooLong), f(31, "ok")}},
	})
}

func TestDelimiter(t *testing.T) {
	crlf := Config{Type: "delimiter", Delimiter: "hex:0d0a", MaxFrameBytes: 8}
	keep := Config{Type: "delimiter", Delimiter: `\x03\x04`, KeepDelimiter: true, MaxFrameBytes: 4}
	aab := Config{Type: "delimiter", Delimiter: "aab", MaxFrameBytes: 8}
	rs := Config{Type: "delimiter", Delimiter: `\x1e`, MaxFrameBytes: 8}
	runCases(t, []tcase{
		{"crlf/simple", crlf, "ab\r\ncd\r\n", []res{f(0, "ab"), f(4, "cd")}},
		{"crlf/empty frames dropped", crlf, "\r\n\r\nx\r\n", []res{f(4, "x")}},
		{"crlf/too long, delimiter split at the discard edge", crlf, "xxxxxxxxx\r\nok\r\n", []res{e(0, ReasonTooLong), f(11, "ok")}},
		{"crlf/trailing data is a frame", crlf, "ab\r\ncd", []res{f(0, "ab"), f(4, "cd")}},
		{"keep/delimiter kept", keep, "ab\x03\x04cd\x03\x04", []res{f(0, "ab\x03\x04"), f(4, "cd\x03\x04")}},
		{"keep/max counts data only", keep, "abcd\x03\x04", []res{f(0, "abcd\x03\x04")}},
		{"keep/half a delimiter is data", keep, "a\x03b\x03\x04", []res{f(0, "a\x03b\x03\x04")}},
		{"keep/too long then good", keep, "abcde\x03\x04ok\x03\x04", []res{e(0, ReasonTooLong), f(7, "ok\x03\x04")}},
		{"overlap/aab in aaab", aab, "aaabxaab", []res{f(0, "a"), f(4, "x")}},
		{"overlap/long run of a", aab, "aaaaaaaaaaaaab", []res{e(0, ReasonTooLong)}},
		{"rs/records", rs, "\x1e{}\x1e[1]\x1e", []res{f(1, "{}"), f(4, "[1]")}},
	})
}

func TestLength(t *testing.T) {
	def := Config{Type: "length", MaxFrameBytes: 4}
	keep := Config{Type: "length", KeepHeader: true, MaxFrameBytes: 8}
	one := Config{Type: "length", LengthBytes: 1, MaxFrameBytes: 4}
	le2 := Config{Type: "length", LengthBytes: 2, LengthEndian: "little", MaxFrameBytes: 4}
	le4 := Config{Type: "length", LengthBytes: 4, LengthEndian: "little", MaxFrameBytes: 4}
	be4 := Config{Type: "length", LengthBytes: 4, MaxFrameBytes: 4}
	self := Config{Type: "length", LengthCounts: "self", MaxFrameBytes: 4}
	frame := Config{Type: "length", LengthOffset: 1, LengthCounts: "frame", MaxFrameBytes: 4}
	dip := Config{Type: "length", LengthOffset: 1, KeepHeader: true, MaxFrameBytes: 8}
	trailer := Config{Type: "length", LengthBytes: 1, TrailerBytes: 2, MaxFrameBytes: 4}
	runCases(t, []tcase{
		{"be2/two frames", def, "\x00\x03abc\x00\x01z", []res{f(0, "abc"), f(5, "z")}},
		{"be2/empty body dropped", def, "\x00\x00\x00\x01z", []res{f(2, "z")}},
		{"be2/exactly max", def, "\x00\x04abcd", []res{f(0, "abcd")}},
		{"be2/too long then good", def, "\x00\x05abcde\x00\x02ok", []res{e(0, ReasonTooLong), f(7, "ok")}},
		{"be2/too long, cut by EOF", def, "\x00\x09abc", []res{e(0, ReasonTooLong)}},
		{"be2/truncated body", def, "\x00\x03ab", []res{e(0, ReasonTruncated)}},
		{"be2/truncated header", def, "\x00", []res{e(0, ReasonTruncated)}},
		{"be2/good then truncated", def, "\x00\x01a\x00", []res{f(0, "a"), e(3, ReasonTruncated)}},
		{"keep/header kept", keep, "\x00\x03abc\x00\x01z", []res{f(0, "\x00\x03abc"), f(5, "\x00\x01z")}},
		{"keep/empty body kept", keep, "\x00\x00", []res{f(0, "\x00\x00")}},
		{"keep/max counts the header", keep, "\x00\x07abcdefg\x00\x01z", []res{e(0, ReasonTooLong), f(9, "\x00\x01z")}},
		{"u8/two frames", one, "\x02ab\x01c", []res{f(0, "ab"), f(3, "c")}},
		{"le2", le2, "\x02\x00ab\x01\x00c", []res{f(0, "ab"), f(4, "c")}},
		{"le4", le4, "\x02\x00\x00\x00ab", []res{f(0, "ab")}},
		{"be4", be4, "\x00\x00\x00\x02ab", []res{f(0, "ab")}},
		{"be4/huge length skipped to EOF", be4, "\xff\xff\xff\xffabc", []res{e(0, ReasonTooLong)}},
		{"self/counts itself", self, "\x00\x05abc\x00\x03z", []res{f(0, "abc"), f(5, "z")}},
		{"self/length below itself is fatal", self, "\x00\x03a\x00\x01zz", []res{f(0, "a"), e(3, ReasonLength+"!")}},
		{"frame/counts the header", frame, "\x07\x00\x05ab\x09\x00\x04z", []res{f(0, "ab"), f(5, "z")}},
		{"frame/length below header is fatal", frame, "\x07\x00\x02ab", []res{e(0, ReasonLength+"!")}},
		{"directip-like/header kept", dip, "\x01\x00\x02ab\x01\x00\x01c", []res{f(0, "\x01\x00\x02ab"), f(5, "\x01\x00\x01c")}},
		{"trailer/checksum after body", trailer, "\x02abXY\x01cZZ", []res{f(0, "abXY"), f(5, "cZZ")}},
		{"trailer/max counts trailer", trailer, "\x03abcXY\x01cZZ", []res{e(0, ReasonTooLong), f(6, "cZZ")}},
	})
}

func TestFixed(t *testing.T) {
	three := Config{Type: "fixed", Size: 3, MaxFrameBytes: 8}
	runCases(t, []tcase{
		{"two frames", three, "abcdef", []res{f(0, "abc"), f(3, "def")}},
		{"truncated last", three, "abcdefg", []res{f(0, "abc"), f(3, "def"), e(6, ReasonTruncated)}},
		{"zero bytes are data", three, "\x00\x00\x00", []res{f(0, "\x00\x00\x00")}},
		{"empty", three, "", nil},
	})
}

func TestSLIP(t *testing.T) {
	c := Config{Type: "slip", MaxFrameBytes: 8}
	runCases(t, []tcase{
		{"leading and trailing END", c, "\xc0abc\xc0", []res{f(1, "abc")}},
		{"no leading END", c, "abc\xc0de\xc0", []res{f(0, "abc"), f(4, "de")}},
		{"escapes", c, "\xc0a\xdb\xdcb\xdb\xddc\xc0", []res{f(1, "a\xc0b\xdbc")}},
		{"empty frames dropped", c, "\xc0\xc0\xc0x\xc0", []res{f(3, "x")}},
		{"only ENDs", c, "\xc0\xc0", nil},
		{"bad escape then good", c, "\xc0a\xdbxb\xc0ok\xc0", []res{e(1, ReasonEscape), f(6, "ok")}},
		{"ESC END ends a bad frame", c, "\xc0a\xdb\xc0ok\xc0", []res{e(1, ReasonEscape), f(4, "ok")}},
		{"ESC ESC", c, "\xdb\xdb\xc0z\xc0", []res{e(0, ReasonEscape), f(3, "z")}},
		{"bad escape at EOF", c, "\xdbx", []res{e(0, ReasonEscape)}},
		{"too long then good", c, "\xc0123456789\xc0ok\xc0", []res{e(1, ReasonTooLong), f(11, "ok")}},
		{"max counts decoded bytes", c, "\xc0" + strings.Repeat("\xdb\xdd", 8) + "\xc0", []res{f(1, strings.Repeat("\xdb", 8))}},
		{"truncated", c, "\xc0abc", []res{e(1, ReasonTruncated)}},
		{"truncated in an escape", c, "ab\xdb", []res{e(0, ReasonTruncated)}},
		{"good then truncated", c, "a\xc0b", []res{f(0, "a"), e(2, ReasonTruncated)}},
	})
}

func TestCOBS(t *testing.T) {
	c := Config{Type: "cobs", MaxFrameBytes: 8}
	big := Config{Type: "cobs", MaxFrameBytes: 600}
	x254 := strings.Repeat("x", 254)
	y300 := strings.Repeat("y", 300)
	runCases(t, []tcase{
		{"basic", c, "\x04abc\x00", []res{f(0, "abc")}},
		{"a zero", c, "\x01\x01\x00", []res{f(0, "\x00")}},
		{"zero inside", c, "\x03ab\x02c\x00", []res{f(0, "ab\x00c")}},
		{"trailing zero", c, "\x02a\x01\x00", []res{f(0, "a\x00")}},
		{"empty frames dropped", c, "\x01\x00\x00\x00\x02a\x00", []res{f(4, "a")}},
		{"0x00 inside a group then good", c, "\x05ab\x00\x03xy\x00", []res{e(0, ReasonCOBS), f(4, "xy")}},
		{"too long then good", c, "\x0a123456789\x00\x03ok\x00", []res{e(0, ReasonTooLong), f(11, "ok")}},
		{"implied zero makes it too long", c, "\x09abcdefgh\x01\x00", []res{e(0, ReasonTooLong)}},
		{"truncated", c, "\x03ab", []res{e(0, ReasonTruncated)}},
		{"truncated mid group", c, "\x03a", []res{e(0, ReasonTruncated)}},
		{"good then truncated", c, "\x02a\x00\x02", []res{f(0, "a"), e(3, ReasonTruncated)}},
		{"254 bytes, one full group", big, string(EncodeCOBS([]byte(x254))), []res{f(0, x254)}},
		{"300 bytes, two groups", big, string(EncodeCOBS([]byte(y300))), []res{f(0, y300)}},
		{"full group then a zero", big, "\xff" + x254 + "\x01\x01\x00", []res{f(0, x254+"\x00")}},
	})
}

func TestNone(t *testing.T) {
	c := Config{Type: "none", MaxFrameBytes: 8}
	runCases(t, []tcase{
		{"empty", c, "", nil},
		{"whole stream", c, "ab\ncd\x00", []res{f(0, "ab\ncd\x00")}},
		{"exactly max", c, "12345678", []res{f(0, "12345678")}},
		{"too long", c, "123456789", []res{e(0, ReasonTooLong)}},
		{"stream alias", Config{Type: "stream", MaxFrameBytes: 8}, "abc", []res{f(0, "abc")}},
	})
}

func TestEncodeSLIP(t *testing.T) {
	got := EncodeSLIP([]byte("a\xc0b\xdb"))
	if want := "\xc0a\xdb\xdcb\xdb\xdd\xc0"; string(got) != want {
		t.Fatalf("got % x, want % x", got, want)
	}
}

func TestEncodeCOBS(t *testing.T) {
	// Examples from the COBS paper / common test vectors.
	cases := []struct{ in, want string }{
		{"", "\x01\x00"},
		{"\x00", "\x01\x01\x00"},
		{"\x00\x00", "\x01\x01\x01\x00"},
		{"\x11\x22\x00\x33", "\x03\x11\x22\x02\x33\x00"},
		{"\x11\x22\x33\x44", "\x05\x11\x22\x33\x44\x00"},
		{"\x11\x00\x00\x00", "\x02\x11\x01\x01\x01\x00"},
	}
	for _, c := range cases {
		if got := EncodeCOBS([]byte(c.in)); string(got) != c.want {
			t.Errorf("EncodeCOBS(% x) = % x, want % x", c.in, got, c.want)
		}
		dec, err := DecodeCOBS([]byte(c.want[:len(c.want)-1]))
		if err != nil || string(dec) != c.in {
			t.Errorf("DecodeCOBS(% x) = % x, %v; want % x", c.want, dec, err, c.in)
		}
	}
	seq := make([]byte, 254)
	for i := range seq {
		seq[i] = byte(i + 1)
	}
	enc := EncodeCOBS(seq)
	if len(enc) != 256 || enc[0] != 0xFF || enc[255] != 0 {
		t.Fatalf("254 non-zero bytes: got %d bytes, first % x", len(enc), enc[:2])
	}
	if _, err := DecodeCOBS([]byte("\x03a\x00")); !errors.Is(err, ErrCOBS) {
		t.Fatalf("zero in group: %v", err)
	}
	if _, err := DecodeCOBS([]byte("\x05a")); !errors.Is(err, ErrCOBS) {
		t.Fatalf("short group: %v", err)
	}
}

func TestParseBytes(t *testing.T) {
	good := []struct{ in, want string }{
		{"hex:0d0a", "\r\n"},
		{"hex:0D 0A", "\r\n"},
		{"hex:06", "\x06"},
		{`\r\n`, "\r\n"},
		{"\r\n", "\r\n"},
		{`\x06`, "\x06"},
		{`ACK\0`, "ACK\x00"},
		{`a\\b\t`, "a\\b\t"},
		{"", ""},
	}
	for _, c := range good {
		got, err := ParseBytes(c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("ParseBytes(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"hex:0", "hex:zz", `\q`, `\x1`, `\xzz`, `abc\`} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q): no error", in)
		}
	}
}
