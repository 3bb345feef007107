package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigd/vigd/internal/testpeers"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

func repoPath(p string) string { return filepath.Join(testpeers.RepoRoot(), p) }

// A config with three mistakes: `vigd check` reports all three, each with
// its line, and exits 78.
func TestCheckReportsAllMistakesWithLines(t *testing.T) {
	dir := t.TempDir()
	cfg := `data_dir: ` + dir + `
decoders: [` + repoPath("configs/decoders") + `]
log:
  level: chatty
forwarder:
  url: http://127.0.0.1:1
  service_id: gw
  secret_file: ` + secretFile(t, dir) + `
adapters:
  - name: in
    kind: tcp
    decoder: toa5-station
    listen: 127.0.0.1:0
    max_connectons: 5
  - name: gps
    kind: tcp
    decoder: no-such-decoder
    listen: 127.0.0.1:0
`
	path := filepath.Join(dir, "vigd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "check", "-c", path)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitConfig, stderr)
	}
	for _, want := range []string{
		path + ":4:10: log.level: must be one of",
		path + `:14:5: adapters[0] "in" (tcp): max_connectons: unknown key`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("missing %q in:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stderr, path+`:17: adapters "gps": decoder: no decoder named "no-such-decoder"`) {
		t.Errorf("missing the unknown decoder in:\n%s", stderr)
	}
	if strings.Index(stderr, ":4:10:") > strings.Index(stderr, ":14:5:") {
		t.Errorf("errors not in line order:\n%s", stderr)
	}
	if !strings.Contains(stderr, "3 configuration error(s)") {
		t.Errorf("want exactly 3 errors:\n%s", stderr)
	}
}

func TestCheckDemoConfigOK(t *testing.T) {
	// The demo writes its secret file before it starts vigd; here the
	// config is copied beside one made for the test.
	dir := t.TempDir()
	b, err := os.ReadFile(repoPath("configs/demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"secret_file: ../demo-data/apisecret", "secret_file: "+secretFile(t, dir),
		"data_dir: ../demo-data/vigd", "data_dir: "+filepath.Join(dir, "data"),
		"  - decoders\n", "  - "+repoPath("configs/decoders")+"\n",
		"file: devices.demo.yaml", "file: "+repoPath("configs/devices.demo.yaml"),
	).Replace(string(b))
	path := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := run(t, "check", "-c", path)
	if code != 0 || !strings.Contains(out, "ok (3 adapters") {
		t.Fatalf("exit %d\nout: %s\nerr: %s", code, out, stderr)
	}
}

func TestDecodersTestShippedPassAndEditedFails(t *testing.T) {
	if testpeers.SharedDir() == "" && !testpeers.InCI() {
		t.Skip("skipped: ../shared/samples not found (the shipped examples use the samples)")
	}
	samples := filepath.Join(testpeers.SharedDir(), "samples")
	code, out, stderr := run(t, "decoders", "test", "--decoders", repoPath("configs/decoders"), "--samples", samples)
	if code != 0 || !strings.Contains(out, " 0 failed, 0 skipped") {
		t.Fatalf("shipped decoders: exit %d\n%s\n%s", code, out, stderr)
	}

	// The same decoder with one expected value edited wrong: non-zero exit
	// and a diff that names the value.
	dir := t.TempDir()
	b, err := os.ReadFile(repoPath("configs/decoders/toa5-station.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "result: 13.04", "result: 13.05", 1)
	if bad == string(b) {
		t.Fatal("the TOA5 decoder's examples no longer expect 13.04; update this test")
	}
	if err := os.WriteFile(filepath.Join(dir, "toa5-station.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, "decoders", "test", "--decoders", dir, "--samples", samples)
	if code == 0 {
		t.Fatalf("edited example passed:\n%s", out)
	}
	if !strings.Contains(out, "FAIL") || !strings.Contains(out, "13.05") || !strings.Contains(out, "13.04") {
		t.Fatalf("no readable diff naming want 13.05 and got 13.04:\n%s", out)
	}
}

func TestDecodePrintsRecords(t *testing.T) {
	code, out, stderr := run(t, "decode", "--decoders", repoPath("configs/decoders"), "-d", "nmea-gps",
		"--identity", "gps-1", "--customer", "047", "--received", "2018-03-17T17:41:40Z",
		"--text", "$GPGGA,174134.000,4345.9112,N,09643.8029,W,1,05,2.7,452.6,M,-27.1,M,,0000*60")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{`"sensusID": "gps@latitude@gps-1@047"`, `"result": 43.765187`, `"result": -96.730048`, `"phenomenonTime": "2018-03-17T17:41:34Z"`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}
	code, _, stderr = run(t, "decode", "--decoders", repoPath("configs/decoders"), "-d", "nmea-gps",
		"--text", "$GPGGA,174134.000,4345.9112,N,09643.8029,W,1,05,2.7,452.6,M,-27.1,M,,0000*5F")
	if code != exitFail || !strings.Contains(stderr, "bad checksum") {
		t.Fatalf("bad checksum: exit %d: %s", code, stderr)
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "vigd ") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, _ := run(t, "frobnicate"); code != exitUsage {
		t.Fatalf("unknown command: exit %d", code)
	}
	if code, _, _ := run(t, "decode", "-d", "x"); code != exitUsage {
		t.Fatalf("decode without input: exit %d", code)
	}
}

// A decoder named per MQTT topic is checked too.
func TestCheckPerTopicDecoder(t *testing.T) {
	dir := t.TempDir()
	cfg := `data_dir: ` + dir + `
decoders: [` + repoPath("configs/decoders") + `]
forwarder: {url: "http://127.0.0.1:1", service_id: gw, secret_file: /x}
adapters:
  - name: m
    kind: mqtt
    brokers: ["tcp://127.0.0.1:1883"]
    topics:
      - {topic: "a/+/up", decoder: nmea-gps}
      - {topic: "b/+/up", decoder: nope}
`
	path := filepath.Join(dir, "vigd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "check", "-c", path)
	if code != exitConfig || !strings.Contains(stderr, `adapters "m": decoder: no decoder named "nope"`) || strings.Contains(stderr, `"nmea-gps" (have`) {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
}

func secretFile(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "apisecret")
	if err := os.WriteFile(p, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A secret file that is missing or empty, and two listeners on one port,
// are found by check (with their lines), not at start.
func TestCheckSecretFileAndListenConflicts(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `data_dir: ` + dir + `
decoders: [` + repoPath("configs/decoders") + `]
http: {listen: "127.0.0.1:19999"}
forwarder:
  url: http://127.0.0.1:1
  service_id: gw
  secret_file: ` + empty + `
adapters:
  - name: a
    kind: tcp
    decoder: nmea-gps
    listen: ":17555"
  - name: b
    kind: tcp
    decoder: nmea-gps
    listen: "127.0.0.1:17555"
  - name: c
    kind: tcp
    decoder: nmea-gps
    listen: "127.0.0.1:19999"
`
	path := filepath.Join(dir, "vigd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "check", "-c", path)
	for _, want := range []string{
		path + ":7:16: forwarder.secret_file: " + empty + " is empty",
		path + `:16:13: adapters "b": listen: port 17555 is also taken by adapters "a"`,
		path + `:20:13: adapters "c": listen: port 19999 is also taken by http.listen`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("missing %q in\n%s", want, stderr)
		}
	}
	if code != exitConfig {
		t.Fatalf("exit %d", code)
	}
}
