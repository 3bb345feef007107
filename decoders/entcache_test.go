package decoders

import (
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
)

const cachedDecoder = `name: csv
format: text
text: {columns: [id, serial, v], text_columns: [id, serial]}
identity: id
thing: {name: "Unit {deviceId}", properties: {model: M1}}
datastreams:
  - {name: v, sensor: S, input: "{name}"}
`

// The thing reads a payload field: it must be rendered per frame.
const uncachedDecoder = `name: csv
format: text
text: {columns: [id, serial, v], text_columns: [id, serial]}
identity: id
thing: {properties: {serialNumber: "{serial}"}}
datastreams:
  - {name: v, sensor: S, input: "{name}"}
`

func decodeLine(t *testing.T, d *Decoder, line string, env Env) *Result {
	t.Helper()
	res, err := d.Decode(&adapters.Frame{Payload: []byte(line), CustomerID: "047", Received: time.Unix(1, 0)}, env)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestEntitiesCachedPerDeviceWhenOnlyTheDeviceShapesThem(t *testing.T) {
	d, err := LoadBytes("c.yaml", []byte(cachedDecoder))
	if err != nil {
		t.Fatal(err)
	}
	a1 := decodeLine(t, d, "A,s1,1", Env{})
	a2 := decodeLine(t, d, "A,s2,2", Env{})
	b := decodeLine(t, d, "B,s1,3", Env{})
	if !d.ents.cacheable {
		t.Fatal("a decoder whose templates read only the device is not cached")
	}
	if &a1.Datastreams[0] != &a2.Datastreams[0] || &a1.Things[0] != &a2.Things[0] {
		t.Fatal("two frames of one device rendered their entities twice")
	}
	if &b.Datastreams[0] == &a1.Datastreams[0] || b.Things[0].Name != "Unit B" || b.Datastreams[0].SensusID != "S@v@B@047" {
		t.Fatalf("device B got %+v %+v", b.Things[0], b.Datastreams[0])
	}
	if a2.Observations[0].Datastream.SensusID != "S@v@A@047" || string(a2.Observations[0].Result) != "2" {
		t.Fatalf("observation %+v", a2.Observations[0])
	}
	// What the registry says is part of the key: a renamed device is
	// rendered again.
	lookup := func(name string) Env {
		return Env{Lookup: func(id string) (Device, bool) { return Device{ID: id, CustomerID: "047", Name: name}, true }}
	}
	r1 := decodeLine(t, d, "A,s1,1", lookup("first"))
	r2 := decodeLine(t, d, "A,s1,1", lookup("second"))
	if r1.Things[0].Name != "Unit A" || &r1.Things[0] == &r2.Things[0] {
		t.Fatalf("registry change not seen: %+v %+v", r1.Things[0], r2.Things[0])
	}
	// Appending to a result never writes into the cache.
	_ = append(a1.Datastreams, a1.Datastreams[0])
	if got := decodeLine(t, d, "A,s9,9", Env{}); len(got.Datastreams) != 1 {
		t.Fatalf("cached datastreams grew to %d", len(got.Datastreams))
	}
}

func TestEntitiesReadingTheFrameAreNotCached(t *testing.T) {
	d, err := LoadBytes("u.yaml", []byte(uncachedDecoder))
	if err != nil {
		t.Fatal(err)
	}
	a1 := decodeLine(t, d, "A,s1,1", Env{})
	a2 := decodeLine(t, d, "A,s2,2", Env{})
	if d.ents.cacheable {
		t.Fatal("a thing template reading a payload field must not be cached")
	}
	if a1.Things[0].Properties["serialNumber"] != "s1" || a2.Things[0].Properties["serialNumber"] != "s2" {
		t.Fatalf("properties %v %v", a1.Things[0].Properties, a2.Things[0].Properties)
	}
}

// Variables no expression reads are not built; the ones read still are,
// and $env reads them all.
func TestUnreadVariablesOnlyAreLeftOut(t *testing.T) {
	const src = `name: vars
format: text
text: {columns: [id, v], text_columns: [id]}
identity: id
parameters:
  dev: device.name
  at: recordTime
  via: frame.source
  all: $env["deviceId"]
datastreams:
  - {name: v}
`
	d, err := LoadBytes("v.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	env := Env{Lookup: func(id string) (Device, bool) { return Device{ID: id, CustomerID: "047", Name: "Pump"}, true }}
	res, err := d.Decode(&adapters.Frame{Payload: []byte("A,1"), Source: "10.0.0.1:9", Received: time.Unix(7, 0)}, env)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Observations[0].Parameters
	if p["dev"] != "Pump" || p["at"] != "1970-01-01T00:00:07Z" || p["via"] != "10.0.0.1:9" || p["all"] != "A" {
		t.Fatalf("parameters %v", p)
	}
	plain, err := LoadBytes("c.yaml", []byte(cachedDecoder))
	if err != nil {
		t.Fatal(err)
	}
	if plain.uses("frame") || plain.uses("device") || plain.uses("recordTime") || !plain.uses("id") {
		t.Fatalf("reads %v", plain.reads)
	}
}
