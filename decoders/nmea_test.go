package decoders_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/decoders/sta"
)

func loadShipped(t testing.TB, name string) *decoders.Decoder {
	t.Helper()
	set, err := decoders.LoadDir(shippedDir())
	if err != nil {
		t.Fatal(err)
	}
	d, ok := set.Get(name)
	if !ok {
		t.Fatalf("no shipped decoder %q", name)
	}
	return d
}

func results(obs []sta.Observation) map[string]string {
	m := map[string]string{}
	for _, o := range obs {
		m[o.Datastream.Name] = string(o.Result)
	}
	return m
}

// TestNMEASampleLines runs the nine sample lines through the shipped GPS
// decoder: each ends as observations or as a DecodeError with its reason.
func TestNMEASampleLines(t *testing.T) {
	d := loadShipped(t, "nmea-gps")
	data, err := os.ReadFile(sampleFile(t, "nmea_sentences.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\r\n"), []byte("\r\n"))
	if len(lines) != 9 {
		t.Fatalf("%d lines in the sample, want 9", len(lines))
	}
	gga := map[string]string{"latitude": "43.765187", "longitude": "-96.730048", "altitude": "452.6",
		"fix_quality": "1", "satellites": "5", "hdop": "2.7", "fix_valid": "true"}
	cases := []struct {
		name    string
		wantErr string
		want    map[string]string
		time    string
		flagged bool
	}{
		{name: "1 void RMC *00", want: map[string]string{"fix_valid": "false"}, time: "2018-03-17T17:31:38Z"},
		{name: "2 AIVDM *1F", wantErr: "no sentence definition for AIVDM (type VDM)"},
		{name: "3 AIVDM *1f", wantErr: "no sentence definition for AIVDM (type VDM)"},
		{name: "4 VPW *4c", wantErr: "no sentence definition for WIVPW"},
		{name: "5 MWV *2b", wantErr: "no sentence definition for WIMWV"},
		{name: "6 GGA *60", want: gga, time: "2018-03-17T17:41:34Z"},
		{name: "7 GGA *5F bad checksum", wantErr: "bad checksum *5F: the sentence's XOR is 60"},
		{name: "8 GGA unchecked", want: gga, time: "2018-03-17T17:41:34Z", flagged: true},
		{name: "9 RMC malformed", wantErr: "malformed GPRMC: 4 fields, want 11..13"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &adapters.Frame{Adapter: "gps", Source: "/dev/ttyS0", Payload: append(lines[i], '\r', '\n'),
				Identity: "gps-1", CustomerID: "047", Received: time.Date(2018, 3, 17, 17, 41, 40, 0, time.UTC)}
			res, err := d.Decode(f, decoders.Env{})
			if c.wantErr != "" {
				var de *decoders.DecodeError
				if !errors.As(err, &de) || !strings.Contains(de.Msg, c.wantErr) || de.Decoder != "nmea-gps" {
					t.Fatalf("err = %v, want a DecodeError containing %q", err, c.wantErr)
				}
				if de.Offset < 0 || de.Offset > len(f.Payload) {
					t.Fatalf("offset %d outside the frame", de.Offset)
				}
				if res != nil {
					t.Fatal("a failed decode returned records")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := results(res.Observations)
			if len(got) != len(c.want) || len(res.Observations) != len(c.want) {
				t.Fatalf("observations %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %s, want %s", k, got[k], v)
				}
			}
			for _, o := range res.Observations {
				if o.PhenomenonTime != c.time {
					t.Errorf("%s at %s, want %s", o.Datastream.Name, o.PhenomenonTime, c.time)
				}
				flag := o.Parameters["nmeaChecksum"]
				if c.flagged != (flag == "unchecked") {
					t.Errorf("%s parameters %v, flagged want %v", o.Datastream.Name, o.Parameters, c.flagged)
				}
			}
		})
	}
}

const nmeaTestDecoder = `
name: nmea-t
format: nmea
nmea:
  allow_unchecked: false
  max_length: 40
  sentences:
    XDR:
      fields: [kind, "v:number", "unit:char", "n:int", "h:hex"]
      min_fields: 2
    PGRMZ:
      fields: ["alt:number", "u:char"]
datastreams:
  - {name: v}
  - {name: n, observationType: OM_CountObservation}
  - {name: h, observationType: OM_CountObservation}
  - {name: alt}
`

func nmeaSum(s string) string {
	var x byte
	for i := 0; i < len(s); i++ {
		x ^= s[i]
	}
	const hexd = "0123456789ABCDEF"
	return "$" + s + "*" + string(hexd[x>>4]) + string(hexd[x&15])
}

// TestNMEAEngineCases covers the framing rules byte by byte.
func TestNMEAEngineCases(t *testing.T) {
	d, err := decoders.LoadBytes("nmea-t.yaml", []byte(nmeaTestDecoder))
	if err != nil {
		t.Fatal(err)
	}
	lower := nmeaSum("IIXDR,C,1.5,C,7,ff")
	lower = lower[:len(lower)-2] + strings.ToLower(lower[len(lower)-2:])
	cases := []struct {
		name, in string
		want     map[string]string
		wantErr  string
		off      int
	}{
		{name: "full", in: nmeaSum("IIXDR,C,1.5,C,7,ff") + "\r\n", want: map[string]string{"v": "1.5", "n": "7", "h": "255"}},
		{name: "lowercase checksum", in: lower, want: map[string]string{"v": "1.5", "n": "7", "h": "255"}},
		{name: "junk before $", in: "\x00\xffjunk" + nmeaSum("IIXDR,C,-0.25"), want: map[string]string{"v": "-0.25"}, off: 0},
		{name: "min fields", in: nmeaSum("IIXDR,C,2"), want: map[string]string{"v": "2"}},
		{name: "empty value", in: nmeaSum("IIXDR,C,,C,3"), want: map[string]string{"n": "3"}},
		{name: "proprietary address", in: nmeaSum("PGRMZ,1234,f"), want: map[string]string{"alt": "1234"}},
		{name: "no checksum refused", in: "$IIXDR,C,1.5", wantErr: "no checksum (*hh) and allow_unchecked is off"},
		{name: "checksum one digit", in: "$IIXDR,C,1.5*5", wantErr: "is not two hex digits", off: 12},
		{name: "checksum wrong", in: "$IIXDR,C,1.5*00", wantErr: "bad checksum *00", off: 12},
		{name: "too long", in: nmeaSum("IIXDR,C,1.5,C,7,ff" + strings.Repeat("0", 30)), wantErr: "longer than max_length 40"},
		{name: "not a number", in: nmeaSum("IIXDR,C,1.5x"), wantErr: `field 2 (v) "1.5x" is not a number`, off: 9},
		{name: "not an int", in: nmeaSum("IIXDR,C,1,C,7.5"), wantErr: "is not an integer"},
		{name: "too many fields", in: nmeaSum("IIXDR,C,1,C,7,ff,9"), wantErr: "6 fields, want 2..5"},
		{name: "too few fields", in: nmeaSum("IIXDR,C"), wantErr: "1 fields, want 2..5"},
		{name: "unknown type", in: nmeaSum("GPGSV,1,1"), wantErr: "no sentence definition for GPGSV (type GSV); the decoder knows PGRMZ, XDR"},
		{name: "no start", in: "GPGGA,1", wantErr: "no sentence start"},
		{name: "control byte", in: nmeaSum("IIXDR,C,\x01"), wantErr: "is not printable ASCII"},
		{name: "empty frame", in: "\r\n\r\n", wantErr: "no NMEA sentence"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := d.Decode(&adapters.Frame{Payload: []byte(c.in), Identity: "x", CustomerID: "c",
				Received: time.Unix(1e9, 0)}, decoders.Env{})
			if c.wantErr != "" {
				var de *decoders.DecodeError
				if !errors.As(err, &de) || !strings.Contains(de.Msg, c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				if c.off != 0 && de.Offset != c.off {
					t.Fatalf("offset %d, want %d", de.Offset, c.off)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := results(res.Observations)
			if len(got) != len(c.want) {
				t.Fatalf("got %v want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %s want %s", k, got[k], v)
				}
			}
		})
	}
}

func TestNMEAMultiLineFrame(t *testing.T) {
	d, err := decoders.LoadBytes("nmea-t.yaml", []byte(nmeaTestDecoder))
	if err != nil {
		t.Fatal(err)
	}
	in := nmeaSum("IIXDR,C,1") + "\n" + nmeaSum("IIXDR,C,2") + "\r" + nmeaSum("IIXDR,C,3") + "\r\n"
	res, err := d.Decode(&adapters.Frame{Payload: []byte(in), Identity: "x", CustomerID: "c", Received: time.Unix(1e9, 0)}, decoders.Env{})
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, o := range res.Observations {
		vals = append(vals, string(o.Result))
	}
	if strings.Join(vals, ",") != "1,2,3" {
		t.Fatalf("values %v", vals)
	}
	// One bad line fails the whole frame (bad_records: fail), with its offset.
	in = nmeaSum("IIXDR,C,1") + "\n" + "$IIXDR,C,2*00\n"
	_, err = d.Decode(&adapters.Frame{Payload: []byte(in), Identity: "x", CustomerID: "c", Received: time.Unix(1e9, 0)}, decoders.Env{})
	var de *decoders.DecodeError
	if !errors.As(err, &de) || de.Offset != len(nmeaSum("IIXDR,C,1"))+1+10 || !strings.Contains(de.Msg, "line 2") {
		t.Fatalf("err %v", err)
	}
}
