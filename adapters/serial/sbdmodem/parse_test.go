package sbdmodem

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vigd/vigd/internal/testpeers"
)

func TestParseSBDIX(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want SBDIX
		err  string
	}{
		{"guide spacing", "+SBDIX: 0, 23, 1, 237, 90, 2", SBDIX{0, 23, 1, 237, 90, 2, false}, ""},
		{"A form without spaces", "+SBDIXA:0,23,1,237,90,2", SBDIX{0, 23, 1, 237, 90, 2, true}, ""},
		{"no network", "+SBDIX: 32, 24, 2, 0, 0, 0", SBDIX{32, 24, 2, 0, 0, 0, false}, ""},
		{"CRLF and odd spacing", "  +SBDIX :0 ,  5,0,0,0 , 0\r\n", SBDIX{0, 5, 0, 0, 0, 0, false}, ""},
		{"lower case prefix", "+sbdix: 1, 2, 0, 0, 0, 0", SBDIX{1, 2, 0, 0, 0, 0, false}, ""},
		{"tabs", "+SBDIX:\t35,\t1,\t2,\t0,\t0,\t0", SBDIX{35, 1, 2, 0, 0, 0, false}, ""},
		{"MTMSN -1", "+SBDIX: 0, 7, 0, -1, 0, 0", SBDIX{0, 7, 0, -1, 0, 0, false}, ""},
		{"max values", "+SBDIX: 255, 65535, 2, 65535, 1960, 65535", SBDIX{255, 65535, 2, 65535, 1960, 65535, false}, ""},
		{"five fields", "+SBDIX: 0, 23, 1, 237, 90", SBDIX{}, "5 fields"},
		{"seven fields", "+SBDIX: 0, 23, 1, 237, 90, 2, 1", SBDIX{}, "7 fields"},
		{"no colon", "+SBDIX 0, 23, 1, 237, 90, 2", SBDIX{}, "no ':'"},
		{"other result", "+SBDI: 1, 23, 1, 237, 90, 2", SBDIX{}, "unexpected prefix"},
		{"SBDSX is not SBDIX", "+SBDSX: 0, 23, 1, 237, 0, 2", SBDIX{}, "unexpected prefix"},
		{"empty field", "+SBDIX: 0, , 1, 237, 90, 2", SBDIX{}, "MOMSN"},
		{"text", "+SBDIX: ok, 23, 1, 237, 90, 2", SBDIX{}, "MO status"},
		{"plus sign", "+SBDIX: +0, 23, 1, 237, 90, 2", SBDIX{}, "not a number"},
		{"MT status 3", "+SBDIX: 0, 23, 3, 237, 90, 2", SBDIX{}, "MT status 3 is out of range"},
		{"negative MOMSN", "+SBDIX: 0, -1, 1, 237, 90, 2", SBDIX{}, "MOMSN -1 is out of range"},
		{"MT length too big", "+SBDIX: 0, 23, 1, 237, 4000, 2", SBDIX{}, "MT length 4000"},
		{"huge number", "+SBDIX: 0, 99999999999999999999, 1, 237, 90, 2", SBDIX{}, "not a number"},
		{"empty", "", SBDIX{}, "no ':'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSBDIX(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestTranscriptSample parses the +SBDIX lines of the illustrative
// session transcript; samples/README.md gives their meaning.
func TestTranscriptSample(t *testing.T) {
	b, err := os.ReadFile(testpeers.Sample(t, "at_sbd_session_transcript.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var got []SBDIX
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "+SBDIX") {
			r, err := ParseSBDIX(l)
			if err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			got = append(got, r)
		}
	}
	want := []SBDIX{{0, 23, 1, 237, 90, 2, false}, {32, 24, 2, 0, 0, 0, false}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if ClassifyMO(got[0].MOStatus) != MOSuccess || ClassifyMO(got[1].MOStatus) != MORetry {
		t.Fatalf("classes %v %v", ClassifyMO(got[0].MOStatus), ClassifyMO(got[1].MOStatus))
	}
}

func TestParseSBDSX(t *testing.T) {
	got, err := ParseSBDSX("+SBDSX: 0, 23, 1, 237, 0, 2")
	if err != nil {
		t.Fatal(err)
	}
	if want := (SBDSX{0, 23, 1, 237, 0, 2}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"+SBDSX: 2, 23, 1, 237, 0, 2", "+SBDIX: 0, 23, 1, 237, 0, 2", "+SBDSX: 0, 23, 1"} {
		if _, err := ParseSBDSX(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSBDRBSample: at_sbdrb_hello.hex is an SBDRB response; it decodes
// to "Hello" with checksum 0x01F4.
func TestSBDRBSample(t *testing.T) {
	b, err := os.ReadFile(testpeers.Sample(t, "at_sbdrb_hello.hex"))
	if err != nil {
		t.Fatal(err)
	}
	raw := hexBytes(t, string(b))
	msg, n, err := ParseSBDRB(raw)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != "Hello" || n != len(raw) || n != 9 {
		t.Fatalf("msg %q n %d", msg, n)
	}
	if Checksum(msg) != 0x01F4 {
		t.Fatalf("checksum %#x", Checksum(msg))
	}
	if !bytes.Equal(EncodeSBDRB(msg), raw) {
		t.Fatalf("EncodeSBDRB(%q) = %x, want %x", msg, EncodeSBDRB(msg), raw)
	}
}

func TestParseSBDRB(t *testing.T) {
	cases := []struct {
		name string
		in   string // hex
		msg  string
		n    int
		err  any // nil, ErrShort, *ChecksumError, *LengthError
	}{
		{"hello", "000548656C6C6F01F4", "Hello", 9, nil},
		{"hello then OK", "000548656C6C6F01F40D0A4F4B0D0A", "Hello", 9, nil},
		{"empty buffer", "00000000", "", 4, nil},
		{"checksum wraps at 16 bits", "0102" + strings.Repeat("FF", 258) + "00FE", strings.Repeat("\xff", 258), 262, nil},
		{"bytes that look like text", "00040D0A4F4B00B1", "\r\nOK", 8, nil},
		{"bad checksum", "000548656C6C6F01F5", "", 9, &ChecksumError{}},
		{"checksum bytes swapped", "000548656C6C6FF401", "", 9, &ChecksumError{}},
		{"length says more: short", "000648656C6C6F01F4", "", 0, ErrShort},
		{"only one byte", "00", "", 0, ErrShort},
		{"nothing", "", "", 0, ErrShort},
		{"no checksum yet", "000548656C6C6F", "", 0, ErrShort},
		{"length over max", "0800", "", 0, &LengthError{}},
		{"length FFFF", "FFFF00", "", 0, &LengthError{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, n, err := ParseSBDRB(hexBytes(t, tc.in))
			switch want := tc.err.(type) {
			case nil:
				if err != nil {
					t.Fatal(err)
				}
				if string(msg) != tc.msg || n != tc.n {
					t.Fatalf("msg %q n %d, want %q %d", msg, n, tc.msg, tc.n)
				}
				return
			case *ChecksumError:
				var ck *ChecksumError
				if !errors.As(err, &ck) {
					t.Fatalf("err %v, want a checksum error", err)
				}
			case *LengthError:
				var le *LengthError
				if !errors.As(err, &le) {
					t.Fatalf("err %v, want a length error", err)
				}
			case error:
				if !errors.Is(err, want) {
					t.Fatalf("err %v, want %v", err, want)
				}
			}
			if msg != nil {
				t.Fatalf("damaged response returned data %q", msg)
			}
			if n != tc.n {
				t.Fatalf("n %d, want %d", n, tc.n)
			}
		})
	}
}

func TestClassifyMO(t *testing.T) {
	want := map[int]MOClass{
		0: MOSuccess, 1: MOSuccess, 2: MOSuccess, 4: MOSuccess,
		5: MORetry, 10: MORetry, 13: MORetry, 17: MORetry, 18: MORetry, 32: MORetry, 36: MORetry, 64: MORetry,
		35: MOBusy,
		12: MOFatal, 14: MOFatal, 15: MOFatal, 16: MOFatal,
	}
	for code, c := range want {
		if got := ClassifyMO(code); got != c {
			t.Errorf("ClassifyMO(%d) = %v, want %v", code, got, c)
		}
		if MOStatusText(code) == "" {
			t.Errorf("no text for %d", code)
		}
	}
}

func FuzzParseSBDIX(f *testing.F) {
	for _, s := range []string{
		"+SBDIX: 0, 23, 1, 237, 90, 2", "+SBDIXA:0,23,1,237,90,2", "+SBDIX: 32, 24, 2, 0, 0, 0",
		"+SBDIX: 0, 7, 0, -1, 0, 0", "+SBDIX: 0, , 1", "+SBDIX:", "", ":,,,,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseSBDIX(s)
		if err != nil {
			return
		}
		if r.MTStatus < 0 || r.MTStatus > 2 || r.MTLength > MaxMTBytes || r.MTLength < 0 {
			t.Fatalf("out of range result %+v from %q", r, s)
		}
		// What parsed renders and parses back to the same result.
		back, err := ParseSBDIX(r.String())
		if err != nil || back != r {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, r, r.String(), back, err)
		}
	})
}

func FuzzParseSBDRB(f *testing.F) {
	for _, s := range []string{"000548656C6C6F01F4", "00000000", "000548656C6C6F01F5", "0800", "00", "0102" + strings.Repeat("FF", 258) + "00FE"} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, n, err := ParseSBDRB(b)
		if err != nil {
			if msg != nil {
				t.Fatalf("error %v with data", err)
			}
			var ck *ChecksumError
			if errors.As(err, &ck) && (n < 4 || n > len(b)) {
				t.Fatalf("checksum error with n %d of %d", n, len(b))
			}
			return
		}
		if n != len(msg)+4 || n > len(b) {
			t.Fatalf("n %d for %d-byte message in %d bytes", n, len(msg), len(b))
		}
		if !bytes.Equal(EncodeSBDRB(msg), b[:n]) {
			t.Fatalf("re-encoding differs: %x vs %x", EncodeSBDRB(msg), b[:n])
		}
		// Every byte short of the whole response asks for more.
		for i := 0; i < n; i++ {
			if _, _, err := ParseSBDRB(b[:i]); !errors.Is(err, ErrShort) {
				t.Fatalf("prefix %d: %v, want ErrShort", i, err)
			}
		}
	})
}
