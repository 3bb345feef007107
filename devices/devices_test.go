package devices

import (
	"strings"
	"testing"
)

func TestParseAndLookup(t *testing.T) {
	r, err := Parse("d.yaml", []byte(`
defaults:
  customer_id: "047"
devices:
  - identity: "300234010000020"
    device_id: FST300234010000020
    name: Pump 7
    properties: {model: FST-2000}
  - identities: [Station, "12345"]
    device_id: CR1000-12345
    customer_id: "900"
`))
	if err != nil {
		t.Fatal(err)
	}
	d, ok := r.Lookup("300234010000020")
	if !ok || d.DeviceID != "FST300234010000020" || d.CustomerID != "047" || d.Name != "Pump 7" || d.Properties["model"] != "FST-2000" {
		t.Fatalf("lookup imei: %+v %v", d, ok)
	}
	d, ok = r.Lookup("12345")
	if !ok || d.DeviceID != "CR1000-12345" || d.CustomerID != "900" {
		t.Fatalf("lookup serial: %+v %v", d, ok)
	}
	if _, ok := r.Lookup("nope"); ok {
		t.Fatal("unknown identity found")
	}
	if r.Len() != 3 {
		t.Fatalf("len %d", r.Len())
	}
}

func TestParseErrors(t *testing.T) {
	_, err := Parse("d.yaml", []byte(`
devices:
  - identity: a
    device_id: A
  - identity: a
    device_id: B
  - device_id: C
`))
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{`d.yaml:5: devices[1]: identity "a" is already used by A`, `d.yaml:7: devices[2]: identity is required`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	_, err = Parse("d.yaml", []byte("devices:\n  - identity: a\n    device_id: A\n    colour: red\n"))
	if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("unknown key error: %v", err)
	}
}
