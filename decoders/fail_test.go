package decoders_test

import (
	"strings"
	"testing"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
)

// fail("…") in computed refuses the frame with exactly that message, or
// only the record with bad_records: skip.
func TestFailHelper(t *testing.T) {
	const y = `
name: f
format: text
text: {separator: ",", columns: [ts, v], text_columns: [ts]}
computed:
  - {name: _check, value: 'v > 100 ? fail("value " + string(v) + " is out of range") : nil'}
identity: frame.identity
time: {value: ts, layout: "2006-01-02T15:04:05Z07:00"}
datastreams:
  - {name: v, sensor: s, input: v, observedProperty: V, unit: {name: m, symbol: m, definition: x}}
`
	d, err := decoders.LoadBytes("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	fr := &adapters.Frame{Identity: "d1", CustomerID: "c", Payload: []byte("2026-01-01T00:00:00Z,150\n2026-01-01T00:01:00Z,5")}
	_, err = d.Decode(fr, decoders.Env{})
	if err == nil || !strings.Contains(err.Error(), "value 150 is out of range") || strings.Contains(err.Error(), "(1:") {
		t.Fatalf("want the fail() message alone, got %v", err)
	}
	d, err = decoders.LoadBytes("f.yaml", []byte(y+"bad_records: skip\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Decode(fr, decoders.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Observations) != 1 || string(res.Observations[0].Result) != "5" || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "value 150 is out of range") {
		t.Fatalf("skip: %+v", res)
	}
}
