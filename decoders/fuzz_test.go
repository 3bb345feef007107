package decoders_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/internal/testpeers"
)

// Fuzz targets: a decoder must never panic, whatever the bytes, and what
// it returns must be well-formed (a *DecodeError with an offset inside the
// frame, or records whose results are valid JSON).

// seedSample adds a sample file (whole, and line by line) when this clone
// has ../shared.
func seedSample(f *testing.F, name string, lines bool) {
	d := testpeers.SharedDir()
	if d == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(d, "samples", name))
	if err != nil {
		return
	}
	f.Add(b)
	if lines {
		for _, l := range bytes.SplitAfter(b, []byte("\n")) {
			f.Add(l)
		}
	}
}

func checkDecode(t *testing.T, d *decoders.Decoder, payload []byte) {
	t.Helper()
	f := &adapters.Frame{Payload: payload, Identity: "fuzz", CustomerID: "c", Received: time.Unix(1.7e9, 0)}
	res, err := d.Decode(f, decoders.Env{Alarms: map[string]bool{"battery_low@fuzz": true}})
	if err != nil {
		de, ok := err.(*decoders.DecodeError)
		if !ok {
			t.Fatalf("error is %T, not *DecodeError: %v", err, err)
		}
		if de.Offset < -1 || de.Offset > len(payload) {
			t.Fatalf("offset %d outside a %d-byte frame: %v", de.Offset, len(payload), err)
		}
		if res != nil {
			t.Fatal("records returned with an error")
		}
		return
	}
	for _, o := range res.Observations {
		if !json.Valid(o.Result) {
			t.Fatalf("invalid JSON result %q for %s", o.Result, o.Datastream.Name)
		}
		if o.Datastream.SensusID == "" || o.PhenomenonTime == "" {
			t.Fatalf("incomplete observation %+v", o)
		}
	}
	if _, err := json.Marshal(res.Things); err != nil {
		t.Fatal(err)
	}
	if _, err := json.Marshal(res.Alarms); err != nil {
		t.Fatal(err)
	}
}

func FuzzTextEngine(f *testing.F) {
	d := loadShipped(f, "toa5-station")
	seedSample(f, "toa5_station_daily.dat", true)
	f.Add([]byte("\"a\",\"b\"\r\n1,2\r\n"))
	f.Add([]byte("\"TOA5\",\"S\"\n\"x\"\n\"y\"\n\"z\"\n\"2014-01-01 00:00:00\",1,\"NAN\"\n"))
	f.Add([]byte("\"unterminated,1,2\n"))
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, d, b) })
}

func FuzzNMEA(f *testing.F) {
	d := loadShipped(f, "nmea-gps")
	seedSample(f, "nmea_sentences.txt", true)
	f.Add([]byte("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"))
	f.Add([]byte("junk$GPGGA,,,,,,0,,,,,,,,*66"))
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, d, b) })
}

func FuzzJSON(f *testing.F) {
	d := loadShipped(f, "rockblock-webhook")
	seedSample(f, "rockblock_webhook.json", false)
	seedSample(f, "orbcomm_get_return_messages_page1.json", false)
	f.Add([]byte(`{"imei":"1","transmit_time":"23-09-05 04:33:24","iridium_latitude":1e400}`))
	f.Add([]byte(`{"imei":{"a":[1,2]},"transmit_time":7}`))
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, d, b) })
}

// fuzzBinary exercises every binary feature in one layout.
const fuzzBinary = `name: fuzz-bin
format: binary
binary:
  byte_order: little
  checksum: {type: sum8, from: 0}
  fields:
    - {name: kind, type: u8}
    - {name: n, type: u8}
  switch:
    on: kind
    cases:
      - match: ["1"]
        fields:
          - {name: t, type: i16, scale: 0.1}
          - {name: serial, type: bcd, size: 2}
          - {name: flags, type: u8, bits: [{name: on, bit: 0}, {name: mode, bit: 1, len: 3, lookup: {1: a}}]}
      - match: ["2"]
        records:
          count: n
          size: 6
          fields:
            - {name: v, type: f32}
            - {name: w, type: u16, byte_order: big, lookup: {0: zero}}
      - match: ["3"]
        records:
          size: 8
          fields:
            - {name: at, type: secnano}
    default:
      error: unknown kind
time:
  value: 'at ?? frame.received'
datastreams:
  - {name: t}
  - {name: serial, observationType: OM_CountObservation}
  - {name: on, observationType: OM_TruthObservation}
  - {name: mode, observationType: OM_CategoryObservation}
  - {name: v, range: {min: 0, max: 10, action: drop}}
  - {name: w, observationType: OM_Observation}
alarms:
  - {name: hot, alarmType: HIGH_LEVEL, severity: HIGH, raise: t > 50, clear: t < 40, currentValue: t}
`

func FuzzBinary(f *testing.F) {
	gen, err := decoders.LoadBytes("fuzz-bin.yaml", []byte(fuzzBinary))
	if err != nil {
		f.Fatal(err)
	}
	tob1 := loadShipped(f, "tob1-station")
	seedSample(f, "tob1_station_daily.dat", false)
	seedSample(f, "at_sbdrb_hello.hex", false)
	f.Add([]byte{1, 0, 0xF4, 0x01, 0x12, 0x34, 0x03, 0x3F})
	f.Add([]byte{2, 1, 0, 0, 0x80, 0x3F, 0, 0, 0xC0})
	f.Add([]byte{3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x24})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, gen, b)
		checkDecode(t, tob1, b)
	})
}

// FuzzLoad feeds arbitrary YAML to the loader: it returns a decoder or
// *ConfigErrors, never panics; a decoder it returns decodes without panic.
func FuzzLoad(f *testing.F) {
	entries, _ := os.ReadDir(shippedDir())
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(shippedDir(), e.Name())); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(fuzzBinary))
	f.Add([]byte(badDecoder))
	f.Add([]byte(nmeaTestDecoder))
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("x-a: &a {name: n}\n<<: *a\nformat: text\ntext: {columns: [v]}\ndatastreams: [{name: v}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decoders.LoadBytes("fuzz.yaml", b)
		if err != nil {
			for _, e := range unjoin(err) {
				if _, ok := e.(*decoders.ConfigError); !ok {
					t.Fatalf("error %T is not a *ConfigError: %v", e, e)
				}
			}
			return
		}
		checkDecode(t, d, []byte("1,2,3\n"))
	})
}
