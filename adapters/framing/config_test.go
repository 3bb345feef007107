package framing

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/internal/testpeers"
)

func fieldsOf(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *adapters.FieldError
		if errors.As(err, &fe) {
			out = append(out, fe.Field)
		} else if err != nil {
			out = append(out, "not a FieldError: "+err.Error())
		}
	}
	walk(err)
	sort.Strings(out)
	return out
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"zero value is line", Config{}, nil},
		{"bad type", Config{Type: "morse"}, []string{"framing.type"}},
		{"bad terminator", Config{Terminator: "lfcr"}, []string{"framing.terminator"}},
		{"delimiter missing", Config{Type: "delimiter"}, []string{"framing.delimiter"}},
		{"delimiter bad hex", Config{Type: "delimiter", Delimiter: "hex:0g"}, []string{"framing.delimiter"}},
		{"length all wrong", Config{Type: "length", LengthBytes: 3, LengthEndian: "middle", LengthCounts: "all", LengthOffset: -1, TrailerBytes: -2},
			[]string{"framing.length_bytes", "framing.length_counts", "framing.length_endian", "framing.length_offset", "framing.trailer_bytes"}},
		{"length good", Config{Type: "length", LengthBytes: 4, LengthEndian: "little", LengthCounts: "frame", LengthOffset: 4}, nil},
		{"fixed without size", Config{Type: "fixed"}, []string{"framing.size"}},
		{"fixed over max", Config{Type: "fixed", Size: 100, MaxFrameBytes: 10}, []string{"framing.size"}},
		{"idle without gap", Config{Type: "idle"}, []string{"framing.gap"}},
		{"negative max", Config{Type: "slip", MaxFrameBytes: -1}, []string{"max_frame_bytes"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := fieldsOf(tc.cfg.ValidateAt("framing"))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("fields %v, want %v", got, tc.want)
			}
			if _, err := New(tc.cfg, bytes.NewReader(nil)); (err != nil) != (len(tc.want) > 0) && tc.cfg.Type != "idle" {
				t.Fatalf("New: %v", err)
			}
		})
	}
	if got := fieldsOf((&Config{Type: "cobs2"}).Validate()); !reflect.DeepEqual(got, []string{"type"}) {
		t.Fatalf("Validate without prefix: %v", got)
	}
}

func TestConfigYAML(t *testing.T) {
	src := `
type: length
length_bytes: 4
length_endian: little
length_offset: 1
length_counts: self
trailer_bytes: 2
keep_header: true
gap: 150ms
delimiter: "hex:0d0a"
keep_delimiter: true
terminator: any
size: 9
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	want := Config{Type: "length", LengthBytes: 4, LengthEndian: "little", LengthOffset: 1, LengthCounts: "self",
		TrailerBytes: 2, KeepHeader: true, Gap: 150 * time.Millisecond, Delimiter: "hex:0d0a", KeepDelimiter: true,
		Terminator: "any", Size: 9}
	if c != want {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	// max_frame_bytes belongs to the adapter, not to the framing block.
	dec = yaml.NewDecoder(strings.NewReader("max_frame_bytes: 10\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&Config{}); err == nil {
		t.Fatal("max_frame_bytes accepted inside the framing block")
	}
}

// TestDirectIPSample frames real DirectIP MO messages (u8 revision, u16 BE
// length of the rest) sent back to back.
func TestDirectIPSample(t *testing.T) {
	var msgs [][]byte
	for _, name := range []string{"directip_mo_basic.hex", "directip_mo_location_south.hex", "directip_mo_guide_failed_session.hex"} {
		raw, err := os.ReadFile(testpeers.Sample(t, name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	stream := bytes.Join(msgs, nil)
	cfg := Config{Type: "length", LengthOffset: 1, LengthBytes: 2, KeepHeader: true, MaxFrameBytes: 2048}
	for _, fd := range feeds {
		fr, err := New(cfg, fd.r(stream, 7))
		if err != nil {
			t.Fatal(err)
		}
		var off int64
		for i, m := range msgs {
			fm, err := nextFrame(fr)
			if err != nil {
				t.Fatalf("%s: message %d: %v", fd.name, i, err)
			}
			if fm.Offset != off || !bytes.Equal(fm.Data, m) {
				t.Fatalf("%s: message %d at %d: got %d bytes at %d", fd.name, i, off, len(fm.Data), fm.Offset)
			}
			off += int64(len(m))
		}
		if _, err := nextFrame(fr); err != io.EOF {
			t.Fatalf("%s: after the last message: %v", fd.name, err)
		}
	}
}

// nextFrame is Next with timeouts retried.
func nextFrame(fr Framer) (Frame, error) {
	for {
		fm, err := fr.Next()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		return fm, err
	}
}

// TestNMEASample frames the NMEA sample (CRLF lines) with every line
// terminator that accepts CRLF.
func TestNMEASample(t *testing.T) {
	raw, err := os.ReadFile(testpeers.Sample(t, "nmea_sentences.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSuffix(l, "\r"); l != "" {
			want = append(want, l)
		}
	}
	for _, term := range []string{"lf", "crlf", "any"} {
		fr, _ := New(Config{Terminator: term, MaxFrameBytes: 128}, bytes.NewReader(raw))
		var got []string
		for {
			fm, err := fr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", term, err)
			}
			got = append(got, string(fm.Data))
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: got %d lines, want %d: %q", term, len(got), len(want), got)
		}
	}
}
