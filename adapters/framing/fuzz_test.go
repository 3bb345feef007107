package framing

import (
	"bytes"
	"io"
	"reflect"
	"testing"
	"testing/iotest"
	"time"
)

// sameEverywhere frames p read all at once, one byte per Read and with
// timeouts in between: the results must agree, and no frame may exceed max.
func sameEverywhere(t *testing.T, cfg Config, p []byte) []res {
	t.Helper()
	budget := 8*len(p) + 100
	newF := func(r io.Reader) Framer {
		fr, err := New(cfg, r)
		if err != nil {
			t.Fatal(err)
		}
		return fr
	}
	all := collect(t, newF(bytes.NewReader(p)), budget)
	one := collect(t, newF(iotest.OneByteReader(bytes.NewReader(p))), budget)
	if !reflect.DeepEqual(all, one) {
		t.Fatalf("all at once %v\none byte at a time %v", all, one)
	}
	seed := uint64(len(p))
	for _, fd := range feeds[3:] {
		got := collect(t, newF(fd.r(p, seed)), budget)
		if !reflect.DeepEqual(all, got) {
			t.Fatalf("all at once %v\n%s %v", all, fd.name, got)
		}
	}
	maxBytes := cfg.maxBytes()
	for _, r := range all {
		if len(r.Data) > maxBytes+16 { // delimiter kept
			t.Fatalf("frame of %d bytes over max %d", len(r.Data), maxBytes)
		}
		if r.Off < 0 || r.Off > int64(len(p)) {
			t.Fatalf("offset %d outside the stream", r.Off)
		}
	}
	return all
}

func seedFrom(f *testing.F, inputs ...string) {
	for _, in := range inputs {
		for sel := range byte(4) {
			f.Add(sel, []byte(in))
		}
	}
}

func FuzzLine(f *testing.F) {
	seedFrom(f, "a\nbc\n", "ab\r\ncd\n", "\n\r\n\nx\n", "123456789\nok\n", "a\rb\nc\r\nd\n\re", "a\r\r\nb")
	terms := []string{"lf", "crlf", "cr", "any"}
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		sameEverywhere(t, Config{Terminator: terms[sel%4], MaxFrameBytes: 1 + int(sel>>2)%16}, p)
	})
}

func FuzzDelimiter(f *testing.F) {
	seedFrom(f, "ab\x03\x04cd\x03\x04", "aaabxaab", "xxxxxxxxx\r\nok\r\n")
	delims := []string{"hex:0304", "aab", `\r\n`, "\x03"}
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		sameEverywhere(t, Config{Type: "delimiter", Delimiter: delims[sel%4], KeepDelimiter: sel&4 != 0,
			MaxFrameBytes: 1 + int(sel>>3)%16}, p)
	})
}

func FuzzLength(f *testing.F) {
	seedFrom(f, "\x00\x03abc\x00\x01z", "\x00\x05abcde\x00\x02ok", "\x07\x00\x05ab\x09\x00\x04z",
		"\x01\x00\x02ab\x01\x00\x01c", "\x02abXY\x01cZZ", "\xff\xff\xff\xffabc")
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		c := Config{Type: "length", LengthBytes: []int{1, 2, 4, 2}[sel%4],
			LengthCounts: []string{"body", "self", "frame", "body"}[(sel>>2)%4],
			LengthOffset: int(sel>>4) % 3, TrailerBytes: int(sel>>6) % 2, KeepHeader: sel&0x80 != 0,
			MaxFrameBytes: 8}
		if sel&0x40 != 0 {
			c.LengthEndian = "little"
		}
		sameEverywhere(t, c, p)
	})
}

func FuzzFixed(f *testing.F) {
	seedFrom(f, "abcdefg", "\x00\x00\x00")
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		size := 1 + int(sel)%7
		got := sameEverywhere(t, Config{Type: "fixed", Size: size, MaxFrameBytes: 8}, p)
		if want := len(p) / size; len(got) < want {
			t.Fatalf("%d frames from %d bytes of size %d", len(got), len(p), size)
		}
	})
}

func FuzzSLIP(f *testing.F) {
	seedFrom(f, "\xc0abc\xc0", "\xc0a\xdb\xdcb\xdb\xddc\xc0", "\xc0a\xdbxb\xc0ok\xc0", "\xc0a\xdb\xc0ok\xc0", "ab\xdb", "a\xc0b")
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		maxBytes := 1 + int(sel)%64
		sameEverywhere(t, Config{Type: "slip", MaxFrameBytes: maxBytes}, p)
		// Round trip: p encoded (twice, back to back) decodes to p.
		enc := EncodeSLIP(p)
		got := sameEverywhere(t, Config{Type: "slip", MaxFrameBytes: 1 << 16}, append(enc, enc...))
		var want []res
		if len(p) > 0 {
			want = []res{{Off: 1, Data: string(p)}, {Off: int64(len(enc)) + 1, Data: string(p)}}
		}
		if !reflect.DeepEqual(got, want) && len(want)+len(got) > 0 {
			t.Fatalf("round trip of % x: got %v", p, got)
		}
	})
}

func FuzzCOBS(f *testing.F) {
	seedFrom(f, "\x04abc\x00", "\x01\x01\x00", "\x05ab\x00\x03xy\x00", "\x0a123456789\x00\x03ok\x00", "\x03ab")
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		maxBytes := 1 + int(sel)%64
		sameEverywhere(t, Config{Type: "cobs", MaxFrameBytes: maxBytes}, p)
		if dec, err := DecodeCOBS(p); err == nil && bytes.IndexByte(p, 0) >= 0 {
			t.Fatalf("DecodeCOBS accepted a 0x00: % x -> % x", p, dec)
		}
		enc := EncodeCOBS(p)
		if bytes.IndexByte(enc[:len(enc)-1], 0) >= 0 || enc[len(enc)-1] != 0 {
			t.Fatalf("EncodeCOBS(% x) = % x: a 0x00 inside or no delimiter", p, enc)
		}
		if over := len(enc) - len(p); over > (len(p)+253)/254+2 {
			t.Fatalf("EncodeCOBS overhead %d for %d bytes", over, len(p))
		}
		dec, err := DecodeCOBS(enc[:len(enc)-1])
		if err != nil || !bytes.Equal(dec, p) {
			t.Fatalf("DecodeCOBS(EncodeCOBS(% x)) = % x, %v", p, dec, err)
		}
		got := sameEverywhere(t, Config{Type: "cobs", MaxFrameBytes: 1 << 16}, append(enc, enc...))
		var want []res
		if len(p) > 0 {
			want = []res{{Off: 0, Data: string(p)}, {Off: int64(len(enc)), Data: string(p)}}
		}
		if !reflect.DeepEqual(got, want) && len(want)+len(got) > 0 {
			t.Fatalf("round trip of % x: got %v", p, got)
		}
	})
}

func FuzzNone(f *testing.F) {
	seedFrom(f, "", "ab\ncd\x00", "123456789")
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		sameEverywhere(t, Config{Type: "none", MaxFrameBytes: 1 + int(sel)%16}, p)
	})
}

func FuzzIdle(f *testing.F) {
	seedFrom(f, "abc|de||fgh", "123456789|ok", "|a||b")
	f.Fuzz(func(t *testing.T, sel byte, p []byte) {
		// '|' in the input is a silence.
		items := func() []string {
			var out []string
			for _, part := range bytes.SplitAfter(p, []byte("|")) {
				if s, ok := bytes.CutSuffix(part, []byte("|")); ok {
					if len(s) > 0 {
						out = append(out, string(s))
					}
					out = append(out, gapMark)
				} else if len(part) > 0 {
					out = append(out, string(part))
				}
			}
			return out
		}
		cfg := Config{Type: "idle", Gap: time.Second, MaxFrameBytes: 1 + int(sel)%16}
		run := func(chunk func() int) []res {
			fr, err := New(cfg, &scripted{items: items(), chunk: chunk})
			if err != nil {
				t.Fatal(err)
			}
			return collect(t, fr, 8*len(p)+100)
		}
		all, one := run(nil), run(func() int { return 1 })
		if !reflect.DeepEqual(all, one) {
			t.Fatalf("all %v\none %v", all, one)
		}
	})
}
