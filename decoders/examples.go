package decoders

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
)

// ExampleOptions configures RunExamples.
type ExampleOptions struct {
	// SamplesDir replaces ${SAMPLES} in example file paths. Empty, or a
	// folder without the file, skips the example (and says so).
	SamplesDir string
}

// ExampleResult is the outcome of one example of a decoder file.
type ExampleResult struct {
	Decoder string
	Name    string
	Index   int
	// File and Line locate the example in the decoder file.
	File string
	Line int
	// Skipped: the sample file is absent (SamplesDir unset or missing).
	Skipped bool
	Passed  bool
	// Reason says why the example was skipped or failed, in one line.
	Reason string
	// Diff is a unified-style want/got listing of every mismatch.
	Diff string
}

func (r ExampleResult) String() string {
	state := "ok"
	switch {
	case r.Skipped:
		state = "skipped"
	case !r.Passed:
		state = "FAIL"
	}
	s := fmt.Sprintf("%s:%d: %s example %q: %s", r.File, r.Line, r.Decoder, r.Name, state)
	if r.Reason != "" {
		s += ": " + r.Reason
	}
	if r.Diff != "" {
		s += "\n" + r.Diff
	}
	return s
}

// RunExamples decodes each example of the file and compares the result
// with what the example expects.
func (d *Decoder) RunExamples(opts ExampleOptions) []ExampleResult {
	out := make([]ExampleResult, 0, len(d.examples))
	for i := range d.examples {
		out = append(out, d.runExample(i, opts))
	}
	return out
}

// exampleInput reads an example's payload; skip is set when a sample file
// is not available here.
func (d *Decoder) exampleInput(ex *exampleConfig, opts ExampleOptions) (payload []byte, skip string, err error) {
	switch {
	case ex.Hex != "":
		payload, err = hex.DecodeString(strings.Join(strings.Fields(ex.Hex), ""))
	case ex.Text != nil:
		payload = []byte(*ex.Text)
	default:
		p := ex.File
		if strings.Contains(p, "${SAMPLES}") {
			if opts.SamplesDir == "" {
				return nil, "no samples folder given for " + p, nil
			}
			p = strings.ReplaceAll(p, "${SAMPLES}", opts.SamplesDir)
			if _, serr := os.Stat(p); serr != nil {
				return nil, "sample file " + p + " is absent", nil
			}
		} else if !filepath.IsAbs(p) {
			p = filepath.Join(d.dir, p)
		}
		payload, err = os.ReadFile(p)
	}
	if err != nil {
		return nil, "", err
	}
	if ex.Line > 0 {
		lines := bytes.SplitAfter(payload, []byte("\n"))
		if ex.Line > len(lines) {
			return nil, "", fmt.Errorf("line %d: the input has %d lines", ex.Line, len(lines))
		}
		payload = bytes.TrimRight(lines[ex.Line-1], "\r\n")
	}
	return payload, "", nil
}

func (d *Decoder) runExample(i int, opts ExampleOptions) ExampleResult {
	ex := &d.examples[i]
	res := ExampleResult{Decoder: d.name, Name: ex.Name, Index: i, File: d.file, Line: d.exampleAt[i].Line}
	if res.Name == "" {
		res.Name = "#" + strconv.Itoa(i+1)
	}
	payload, skip, err := d.exampleInput(ex, opts)
	if skip != "" {
		res.Skipped, res.Reason = true, skip
		return res
	}
	if err != nil {
		res.Reason = "input: " + err.Error()
		return res
	}
	f := &adapters.Frame{
		Adapter: ex.Frame.Adapter, Kind: ex.Frame.Kind, Source: ex.Frame.Source, Offset: 0,
		Payload: payload, Identity: ex.Frame.Identity, CustomerID: ex.Frame.CustomerID, Decoder: d.name,
		Meta: ex.Frame.Meta,
	}
	if f.Adapter == "" {
		f.Adapter = "example"
	}
	if ex.Frame.Received != "" {
		f.Received, _ = time.Parse(time.RFC3339Nano, ex.Frame.Received)
	}
	env := Env{DefaultCustomer: ex.Default, Alarms: ex.AlarmState}
	if dv := ex.Device; dv != nil {
		env.Lookup = func(string) (Device, bool) {
			if dv.Unknown {
				return Device{}, false
			}
			return Device{ID: dv.ID, CustomerID: dv.CustomerID, Name: dv.Name, Description: dv.Description, Properties: dv.Properties}, true
		}
	}
	got, derr := d.Decode(f, env)
	w := &diffWriter{}
	want := &ex.Expect
	switch {
	case derr != nil && want.Error == "":
		res.Reason = "decode failed: " + derr.Error()
		return res
	case derr != nil:
		if !strings.Contains(derr.Error(), want.Error) {
			w.hunk("error", jsonLine("error containing "+want.Error), jsonLine(derr.Error()))
		}
	case want.Error != "":
		w.hunk("error", jsonLine("error containing "+want.Error), jsonLine(fmt.Sprintf("no error: %d observations, %d alarms", len(got.Observations), len(got.Alarms))))
	default:
		compareList(w, "things", want.Things, got.Things)
		compareList(w, "datastreams", want.Datastreams, got.Datastreams)
		compareList(w, "observations", want.Observations, got.Observations)
		compareList(w, "alarms", want.Alarms, got.Alarms)
		counts := map[string]int{"things": len(got.Things), "datastreams": len(got.Datastreams),
			"observations": len(got.Observations), "alarms": len(got.Alarms), "skipped": len(got.Skipped)}
		for _, k := range sortedMapKeys(want.Counts) {
			if want.Counts[k] != counts[k] {
				w.hunk("counts."+k, strconv.Itoa(want.Counts[k]), strconv.Itoa(counts[k]))
			}
		}
		for _, s := range want.Skipped {
			found := false
			for _, g := range got.Skipped {
				if strings.Contains(g, s) {
					found = true
					break
				}
			}
			if !found {
				w.hunk("skipped", jsonLine(s), jsonLine(got.Skipped))
			}
		}
		if want.AlarmChanges != nil && !equalBoolMaps(want.AlarmChanges, got.AlarmChanges) {
			w.hunk("alarm_changes", jsonLine(want.AlarmChanges), jsonLine(got.AlarmChanges))
		}
	}
	if w.n == 0 {
		res.Passed = true
		return res
	}
	res.Reason = fmt.Sprintf("%d mismatch(es)", w.n)
	res.Diff = "--- want\n+++ got\n" + w.b.String()
	return res
}

func equalBoolMaps(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if g, ok := b[k]; !ok || g != v {
			return false
		}
	}
	return true
}

type diffWriter struct {
	b strings.Builder
	n int
}

func (w *diffWriter) hunk(title, want, got string) {
	w.n++
	fmt.Fprintf(&w.b, "@@ %s @@\n-%s\n+%s\n", title, want, got)
}

func jsonLine(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// generic turns a value into plain JSON data (maps, slices, json.Number).
func generic(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if dec.Decode(&out) != nil {
		return nil
	}
	return out
}

// compareList matches each wanted (partial) record to a distinct record
// that was produced; order does not matter.
func compareList[T any](w *diffWriter, what string, want []any, got []T) {
	if len(want) == 0 {
		return
	}
	gotG := make([]any, len(got))
	for i := range got {
		gotG[i] = generic(got[i])
	}
	used := make([]bool, len(got))
	for wi, wv := range want {
		wg := generic(wv)
		found := -1
		for gi, gv := range gotG {
			if !used[gi] && partialMatch(wg, gv) {
				found = gi
				break
			}
		}
		if found >= 0 {
			used[found] = true
			continue
		}
		// Show the nearest record, cut down to the wanted keys.
		best, bestScore := -1, -1
		for gi, gv := range gotG {
			if s := score(wg, gv); s > bestScore {
				best, bestScore = gi, s
			}
		}
		gotLine := "(no " + what + ")"
		if best >= 0 {
			gotLine = jsonLine(project(wg, gotG[best]))
		}
		w.hunk(fmt.Sprintf("%s: want[%d] not produced", what, wi), jsonLine(wg), gotLine)
	}
}

// partialMatch: every key of want is in got with a matching value.
func partialMatch(want, got any) bool {
	switch wv := want.(type) {
	case map[string]any:
		gm, ok := got.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range wv {
			g, present := gm[k]
			if v == nil {
				if present && g != nil {
					return false
				}
				continue
			}
			if !present || !partialMatch(v, g) {
				return false
			}
		}
		return true
	case []any:
		gs, ok := got.([]any)
		if !ok || len(gs) != len(wv) {
			return false
		}
		for i := range wv {
			if !partialMatch(wv[i], gs[i]) {
				return false
			}
		}
		return true
	case json.Number:
		switch g := got.(type) {
		case json.Number:
			if wv == g {
				return true
			}
			a, e1 := strconv.ParseFloat(string(wv), 64)
			b, e2 := strconv.ParseFloat(string(g), 64)
			return e1 == nil && e2 == nil && a == b
		case string: // a number written where the record holds text
			return string(wv) == g
		}
		return false
	case string:
		if g, ok := got.(json.Number); ok {
			return string(g) == wv
		}
		g, ok := got.(string)
		return ok && g == wv
	default:
		return want == got
	}
}

func score(want, got any) int {
	wm, ok1 := want.(map[string]any)
	gm, ok2 := got.(map[string]any)
	if !ok1 || !ok2 {
		if partialMatch(want, got) {
			return 1
		}
		return 0
	}
	n := 0
	for k, v := range wm {
		if g, ok := gm[k]; ok {
			n++
			if partialMatch(v, g) {
				n += 2 + score(v, g)
			}
		}
	}
	return n
}

// project keeps only the keys of got that want names.
func project(want, got any) any {
	wm, ok1 := want.(map[string]any)
	gm, ok2 := got.(map[string]any)
	if !ok1 || !ok2 {
		return got
	}
	out := map[string]any{}
	keys := make([]string, 0, len(wm))
	for k := range wm {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if g, ok := gm[k]; ok {
			out[k] = project(wm[k], g)
		}
	}
	return out
}
