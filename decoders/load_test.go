package decoders_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigd/vigd/decoders"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const badDecoder = `name: bad
format: text
text:
  columns: [a, b]
  colums: [x]
identity: frame.identity
datastreams:
  - name: a
    unit: {name: Volt, symbol: V, sybmol: V}
  - name: b
    value: b +* 2
  - name: c
    observationType: OM_Bogus
    value: nosuchfield * 2
alarms:
  - name: low
    alarmType: POWER_LOW
    severity: SEVERE
    raise: a <
`

// TestLoadFilesReportsEveryError checks that all problems of a file come
// back at once, each with file:line:col and its path.
func TestLoadFilesReportsEveryError(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "bad.yaml", badDecoder)
	set, err := decoders.LoadFiles(p)
	if set != nil || err == nil {
		t.Fatalf("want errors, got set %v err %v", set, err)
	}
	want := []struct {
		line      int
		path, msg string
	}{
		{5, "text.colums", `unknown key "colums"`},
		{9, "datastreams[0].unit.sybmol", `unknown key "sybmol"`},
		{11, "datastreams[1].value", "expression:"},
		{13, "datastreams[2].observationType", `unknown observationType "OM_Bogus"`},
		{14, "datastreams[2].value", "unknown name(s) nosuchfield"},
		{18, "alarms[0].severity", "severity must be"},
		{19, "alarms[0].raise", "expression:"},
	}
	var got []*decoders.ConfigError
	for _, e := range unjoin(err) {
		var ce *decoders.ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("not a *ConfigError: %T %v", e, e)
		}
		got = append(got, ce)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		g := got[i]
		if g.File != p || g.Line != w.line || g.Path != w.path || !strings.Contains(g.Msg, w.msg) || g.Col < 1 {
			t.Errorf("error %d = %q, want line %d path %s msg ~%q", i, g.Error(), w.line, w.path, w.msg)
		}
		if !strings.HasPrefix(g.Error(), p+":") {
			t.Errorf("Error() %q does not start with file:line:col", g.Error())
		}
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestLoadErrorsAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", "name: dup\nformat: text\ntext: {columns: [v]}\n")
	writeFile(t, dir, "b.yaml", "name: dup\nformat: text\ntext: {columns: [v]}\n")
	writeFile(t, dir, "c.yml", "name: c\nformat: text\ntext: {columns: [v]\n")
	writeFile(t, dir, "d.yaml", "name: d\nformat: morse\n")
	writeFile(t, dir, "notes.txt", "ignored")
	_, err := decoders.LoadDir(dir)
	if err == nil {
		t.Fatal("want errors")
	}
	msg := err.Error()
	for _, w := range []string{
		"b.yaml:1:7: name: decoder \"dup\" is already defined in",
		"c.yml:",
		"d.yaml:2:9: format: unknown format \"morse\"",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in\n%s", w, msg)
		}
	}
}

func TestLoadDirOK(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "z.yaml", "name: zeta\nformat: text\ntext: {columns: [v]}\n")
	writeFile(t, dir, "a.yaml", "name: alpha\nformat: text\ntext: {columns: [v]}\n")
	set, err := decoders.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.Names(), ","); got != "alpha,zeta" {
		t.Fatalf("names %q", got)
	}
	d, ok := set.Get("zeta")
	if !ok || d.Name() != "zeta" || d.File() != filepath.Join(dir, "z.yaml") {
		t.Fatalf("Get(zeta) = %v %v", d, ok)
	}
	if _, ok := set.Get("nope"); ok {
		t.Fatal("Get(nope) found something")
	}
}
