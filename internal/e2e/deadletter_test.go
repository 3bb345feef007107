//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
)

// dlEntry is what `vigd deadletters list --json` prints per entry.
type dlEntry struct {
	ID     string `json:"id"`
	Class  string `json:"class"`
	Reason string `json:"reason"`
	Where  string `json:"where"`
	Replay bool   `json:"replay"`
}

func (v *vigdProc) deadLetters(args ...string) []dlEntry {
	v.t.Helper()
	out, err := v.cli(append([]string{"deadletters", "list", "-c", v.cfgPath, "--json"}, args...)...)
	if err != nil {
		v.t.Fatalf("vigd deadletters list: %v\n%s", err, out)
	}
	var es []dlEntry
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		v.t.Fatalf("vigd deadletters list --json: %v\n%s", err, out)
	}
	return es
}

// counterDecoderV2 is the counter decoder fixed for the new firmware,
// which appends the battery voltage to every line.
var counterDecoderV2 = strings.Replace(strings.Replace(counterDecoder,
	"columns: [device, seq, value]", "columns: [device, seq, value, battery]", 1),
	"alarms:", `  - name: battery
    sensor: counter
    input: battery
    observedProperty: Battery voltage
    unit: {name: Volt, symbol: V}
alarms:`, 1)

// TestDeadLettersEndToEnd: a frame no decoder reads (a device with new
// firmware sends a fourth column) is NAKed, kept, and listed by `vigd
// deadletters list` with the decoder's reason; a record the server refuses
// is listed with the server's reason. After the decoder file is fixed and
// vigd reloaded (SIGHUP), `vigd deadletters replay --all` — once the
// server accepts again — delivers both, each exactly once.
func TestDeadLettersEndToEnd(t *testing.T) {
	if counterDecoderV2 == counterDecoder || !strings.Contains(counterDecoderV2, "battery]") {
		t.Fatal("counterDecoderV2 did not apply")
	}
	e := newEnv(t, []string{"-rate", "0"}, nil)
	e.vigd.start()
	e.vigd.waitUp(30 * time.Second)
	c, err := dial(context.Background(), e.vigd.conf.TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(l, want string) {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, l); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
			t.Fatalf("reply to %q: %q %v, want %q", l, buf, err, want)
		}
	}
	send("dev1,1,10\n", "ACK\n")

	// The server refuses one record.
	const refusal = "result 66 is above the sensor's range"
	e.sim.fault(t, sim.Fault{Kind: sim.FaultReject, Endpoint: sim.Observations, Field: "result",
		Equals: json.RawMessage("66"), Message: refusal})
	send("dev1,2,66\n", "ACK\n")
	var rec []dlEntry
	waitFor(t, 30*time.Second, "the refused record in the dead letters", func() bool {
		rec = e.vigd.deadLetters("--class", "record")
		return len(rec) == 1
	})
	if !strings.Contains(rec[0].Reason, refusal) || !strings.HasPrefix(rec[0].Where, "observations/") {
		t.Errorf("record dead letter %+v: want the server's reason %q", rec[0], refusal)
	}

	// The new firmware's line: no decoder reads it.
	send("dev1,3,42,3.7\n", "NAK\n")
	frames := e.vigd.deadLetters("--class", "frame")
	if len(frames) != 1 || !strings.Contains(frames[0].Reason, "4 fields, want 3") {
		t.Fatalf("frame dead letters %+v: want one with the decoder's reason", frames)
	}
	out, err := e.vigd.cli("deadletters", "list", "-c", e.vigd.cfgPath)
	if err != nil || !strings.Contains(out, "2 dead letter(s)") || !strings.Contains(out, refusal) || !strings.Contains(out, "4 fields, want 3") {
		t.Errorf("vigd deadletters list: %v\n%s", err, out)
	}
	t.Logf("vigd deadletters list:\n%s", strings.TrimSpace(out))

	// Fix the decoder, reload, let the server accept, replay.
	e.writeFile("decoders/counter.yaml", counterDecoderV2)
	e.vigd.hup()
	waitFor(t, 20*time.Second, "the reload", func() bool {
		b, _ := os.ReadFile(e.vigd.logPath)
		return strings.Contains(string(b), "reloaded")
	})
	e.sim.clearFaults(t)
	out, err = e.vigd.cli("deadletters", "replay", "-c", e.vigd.cfgPath, "--all")
	if err != nil || !strings.Contains(out, "2 dead letter(s) queued for replay") {
		t.Fatalf("vigd deadletters replay --all: %v\n%s", err, out)
	}
	t.Logf("vigd deadletters replay --all: %s", strings.TrimSpace(out))
	replayed := time.Now()
	waitFor(t, 30*time.Second, "the replayed frame and record at the simulator", func() bool {
		n := 0
		e.sim.records(t, sim.Observations, func(r *simRec) {
			if r.Seq == 2 || r.Seq == 3 {
				n++
			}
		})
		return n >= 3 // line 2's value, line 3's value and battery
	})
	t.Logf("replayed records arrived %s after `replay`", time.Since(replayed).Round(time.Millisecond))
	send("dev1,4,43,3.6\n", "ACK\n")
	waitFor(t, 30*time.Second, "the dead letters to empty and line 4 to arrive", func() bool {
		n := 0
		e.sim.records(t, sim.Observations, func(r *simRec) {
			if r.Seq == 4 {
				n++
			}
		})
		return n == 2 && len(e.vigd.deadLetters()) == 0
	})
	e.vigd.stop()

	type key struct {
		seq int64
		ds  string
	}
	got := map[key]int{}
	results := map[key]string{}
	e.sim.records(t, sim.Observations, func(r *simRec) {
		ds := "value"
		if strings.Contains(r.Datastream, "@battery@") {
			ds = "battery"
		}
		k := key{r.Seq, ds}
		got[k]++
		results[k] = r.Result
	})
	want := map[key]string{{1, "value"}: "10", {2, "value"}: "66", {3, "value"}: "42", {3, "battery"}: "3.7", {4, "value"}: "43", {4, "battery"}: "3.6"}
	for k, res := range want {
		if got[k] != 1 || results[k] != res {
			t.Errorf("line %d %s: stored %d times, result %s; want once, %s", k.seq, k.ds, got[k], results[k], res)
		}
	}
	if len(got) != len(want) {
		t.Errorf("stored %v, want %v", got, want)
	}
}
