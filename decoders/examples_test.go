package decoders_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigd/vigd/decoders"
)

const exampleDecoder = `name: ex
format: text
text: {columns: [v]}
datastreams:
  - {name: v, unit: {name: Volt, symbol: V}}
alarms:
  - {name: low, alarmType: POWER_LOW, severity: LOW, raise: v < 1}
examples:
  - name: passes
    text: "1.50\n"
    frame: {identity: d, customerId: c, received: "2024-01-01T00:00:00Z"}
    expect:
      counts: {observations: 1, alarms: 0}
      observations: [{datastream: {name: v}, result: 1.5, phenomenonTime: "2024-01-01T00:00:00Z"}]
  - name: wrong value
    text: "1.50\n"
    frame: {identity: d, customerId: c, received: "2024-01-01T00:00:00Z"}
    expect:
      counts: {observations: 2}
      observations: [{datastream: {name: v}, result: 1.51}]
      alarms: [{alarmType: POWER_LOW, status: ACTIVE}]
  - name: from a sample
    file: ${SAMPLES}/values.txt
    frame: {identity: d, customerId: c, received: "2024-01-01T00:00:00Z"}
    expect:
      alarms: [{alarmType: POWER_LOW, status: ACTIVE}]
      alarm_changes: {low@d: true}
  - name: relative file, unknown device
    file: testdata/values.txt
    device: {unknown: true}
    frame: {identity: d, customerId: c}
    expect:
      error: unknown device
  - name: error expected but none
    hex: "31 0a"
    frame: {identity: d, customerId: c, received: "2024-01-01T00:00:00Z"}
    expect:
      error: boom
`

func TestRunExamples(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "ex.yaml", exampleDecoder)
	if err := os.Mkdir(filepath.Join(dir, "testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "testdata/values.txt", "0.5\n")
	samples := t.TempDir()
	writeFile(t, samples, "values.txt", "0.5\n")
	set, err := decoders.LoadFiles(p)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := set.Get("ex")

	rs := d.RunExamples(decoders.ExampleOptions{SamplesDir: samples})
	if len(rs) != 5 {
		t.Fatalf("%d results", len(rs))
	}
	if !rs[0].Passed || rs[0].Skipped || rs[0].Line != 9 {
		t.Errorf("example 0: %s", rs[0])
	}
	r := rs[1]
	if r.Passed || r.Reason != "3 mismatch(es)" {
		t.Fatalf("example 1: %s", r)
	}
	for _, w := range []string{
		"--- want\n+++ got\n",
		"@@ observations: want[0] not produced @@\n-{\"datastream\":{\"name\":\"v\"},\"result\":1.51}\n+{\"datastream\":{\"name\":\"v\"},\"result\":1.50}\n",
		"@@ alarms: want[0] not produced @@\n-{\"alarmType\":\"POWER_LOW\",\"status\":\"ACTIVE\"}\n+(no alarms)\n",
		"@@ counts.observations @@\n-2\n+1\n",
	} {
		if !strings.Contains(r.Diff, w) {
			t.Errorf("diff lacks %q:\n%s", w, r.Diff)
		}
	}
	if !rs[2].Passed || !rs[3].Passed {
		t.Errorf("examples 2, 3: %s\n%s", rs[2], rs[3])
	}
	if rs[4].Passed || !strings.Contains(rs[4].Diff, `-"error containing boom"`) {
		t.Errorf("example 4: %s", rs[4])
	}
	if !strings.HasPrefix(rs[1].String(), p+":15: ex example \"wrong value\": FAIL") {
		t.Errorf("String() = %q", rs[1].String())
	}

	// Without a samples folder the sample example is skipped, not failed.
	rs = d.RunExamples(decoders.ExampleOptions{})
	if !rs[2].Skipped || rs[2].Passed || !strings.Contains(rs[2].Reason, "no samples folder") {
		t.Errorf("no samples: %s", rs[2])
	}
	rs = d.RunExamples(decoders.ExampleOptions{SamplesDir: t.TempDir()})
	if !rs[2].Skipped || !strings.Contains(rs[2].Reason, "is absent") {
		t.Errorf("missing sample: %s", rs[2])
	}
}

func TestExampleConfigErrors(t *testing.T) {
	src := `name: e
format: text
text: {columns: [v]}
datastreams: [{name: v}]
examples:
  - {name: two inputs, text: "1", hex: "31"}
  - {name: bad hex, hex: "3g"}
  - name: bad time
    text: "1"
    frame: {received: yesterday}
    expect: {counts: {obs: 1}, observatons: []}
`
	_, err := decoders.LoadBytes("e.yaml", []byte(src))
	if err == nil {
		t.Fatal("want errors")
	}
	for _, w := range []string{
		"e.yaml:6:5: examples[0]: an example needs exactly one of hex, text or file",
		"e.yaml:7:26: examples[1].hex: not hex",
		"e.yaml:10:23: examples[2].frame.received: not an RFC 3339 time",
		"e.yaml:11:28: examples[2].expect.counts.obs: counts can be given for",
		"e.yaml:11:32: examples[2].expect.observatons: unknown key",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in\n%v", w, err)
		}
	}
}
