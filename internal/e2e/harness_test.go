//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
)

// serviceID is the eventstore service id every test signs with.
const serviceID = "vigd-e2e"

// soak reports whether `make soak` runs the tests (long versions).
func soak() bool { return os.Getenv("VIGD_SOAK") != "" }

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// httpc is the tests' HTTP client: no keep-alive, so that no connection
// goroutine outlives a test (goleak).
var httpc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// ---- processes ----

// proc is one run of a binary. Its output goes to a log file that
// successive runs append to, so a test can grep the whole history.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid once done is closed
}

func startProc(t testing.TB, logPath string, stdout io.Writer, bin string, args ...string) *proc {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	// A test binary that dies (a panic, a timeout) takes its processes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = lf
	cmd.Stdout = lf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig and waits up to timeout for the exit; it kills the
// process when it is still there then.
func (p *proc) signal(sig syscall.Signal, timeout time.Duration) error {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("did not exit within %s after %v", timeout, sig)
	}
}

// tail is the end of a log file, for failure messages.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---- the simulator ----

type simProc struct {
	p       *proc
	url     string
	dir     string
	logPath string
	client  *sim.Client
}

// startSim runs eventstore-sim on a free port with its own data folder and
// the secret in secretFile. extra are more flags (-rate 0, -fault …).
func startSim(t testing.TB, dir, secretFile string, extra ...string) *simProc {
	t.Helper()
	bin := os.Getenv("VIGD_E2E_SIM") // a prebuilt eventstore-sim instead of ./cmd/eventstore-sim
	if bin == "" {
		bin = testpeers.Binary(t, "eventstore-sim")
	}
	s := &simProc{dir: filepath.Join(dir, "sim"), logPath: filepath.Join(dir, "sim.log")}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-listen", "127.0.0.1:0", "-data", s.dir, "-service", serviceID + "=@" + secretFile,
		"-log-level", "warn"}, extra...)
	s.p = startProc(t, s.logPath, pw, bin, args...)
	pw.Close()
	urlc := make(chan string, 1)
	go func() {
		defer pr.Close()
		br := bufio.NewReader(pr)
		line, _ := br.ReadString('\n')
		urlc <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, br)
	}()
	select {
	case s.url = <-urlc:
	case <-time.After(20 * time.Second):
	}
	if !strings.HasPrefix(s.url, "http://") {
		_ = s.p.signal(syscall.SIGKILL, 5*time.Second)
		t.Fatalf("eventstore-sim did not start: %q\n%s", s.url, tail(s.logPath, 20))
	}
	s.client = &sim.Client{BaseURL: s.url, HTTP: httpc}
	t.Cleanup(func() {
		if err := s.p.signal(syscall.SIGTERM, 15*time.Second); err != nil && !s.p.exited() {
			t.Errorf("eventstore-sim stop: %v", err)
		}
	})
	return s
}

func (s *simProc) counts(t testing.TB) sim.Counts {
	t.Helper()
	c, err := s.client.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *simProc) fault(t testing.TB, f sim.Fault) int {
	t.Helper()
	id, err := s.client.InjectFault(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (s *simProc) clearFaults(t testing.TB) {
	t.Helper()
	if err := s.client.ClearFaults(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (s *simProc) requests(t testing.TB, since int64) []sim.RequestLog {
	t.Helper()
	rs, err := s.client.Requests(context.Background(), since)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// simRec is what the tests need of one stored record. The simulator's
// records endpoint streams one stored line per line; the fields are read
// with byte searches (see readRecords) so that a million records are read
// in seconds even under the race detector.
type simRec struct {
	SimSeq     int64  // the simulator's arrival order, per kind
	DeviceID   string // the batch's deviceId
	Datastream string // observations: the datastream's sensusID
	BatchID    string
	AlarmID    string
	ReceivedAt string
	Seq        int64 // the observation's parameters.seq (the line's number), -1 if none
	Result     string
	Status     string // alarms: ACTIVE or CLEARED
}

// records streams every stored record of kind to fn, oldest first.
func (s *simProc) records(t testing.TB, kind string, fn func(*simRec)) {
	t.Helper()
	resp, err := httpc.Get(s.url + "/_sim/records?kind=" + kind)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("records %s: %s %s", kind, resp.Status, b)
	}
	br := bufio.NewReaderSize(resp.Body, 1<<20)
	var r simRec
	for {
		line, err := br.ReadBytes('\n')
		line = bytes.TrimSpace(line)
		line = bytes.TrimPrefix(line, []byte("["))
		line = bytes.TrimSuffix(line, []byte("]"))
		line = bytes.TrimSuffix(line, []byte(","))
		if len(line) > 0 {
			if perr := parseRec(line, &r); perr != nil {
				t.Fatalf("records %s: %v in %s", kind, perr, line)
			}
			fn(&r)
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("records %s: %v", kind, err)
		}
	}
}

var recordKey = []byte(`,"record":`)

// parseRec reads a stored line: the simulator writes the envelope fields
// first and `"record":` last (internal/sim/store.go), so a field found
// before `,"record":` is the envelope's.
func parseRec(line []byte, r *simRec) error {
	i := bytes.Index(line, recordKey)
	if i < 0 {
		return errors.New("no record field")
	}
	head, rec := line[:i+1], line[i+len(recordKey):]
	*r = simRec{Seq: -1}
	var ok bool
	if r.SimSeq, ok = numField(head, `"seq":`); !ok {
		return errors.New("no seq")
	}
	r.DeviceID = strField(head, `"deviceId":"`)
	r.BatchID = strField(head, `"batchId":"`)
	r.Datastream = strField(head, `"datastream":"`)
	r.AlarmID = strField(head, `"alarmId":"`)
	r.ReceivedAt = strField(head, `"receivedAt":"`)
	if n, ok := numField(rec, `"parameters":{"seq":`); ok {
		r.Seq = n
	}
	r.Status = strField(rec, `"status":"`)
	if j := bytes.Index(rec, []byte(`"result":`)); j >= 0 {
		v := rec[j+len(`"result":`):]
		if k := bytes.IndexAny(v, ",}"); k >= 0 {
			r.Result = string(v[:k])
		}
	}
	return nil
}

func strField(b []byte, key string) string {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return ""
	}
	v := b[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return ""
	}
	return string(v[:j])
}

func numField(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	var n int64
	j := i + len(key)
	start := j
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + int64(b[j]-'0')
	}
	return n, j > start
}

// ---- vigd ----

// vigdConf is what a test varies in the generated vigd.yaml.
type vigdConf struct {
	DataDir    string
	HTTP       string // 127.0.0.1:PORT
	TCP        string // 127.0.0.1:PORT of the tcp adapter
	SimURL     string
	SecretFile string
	Decoders   string // folder
	Decoder    string // the adapter's decoder name

	MaxRecords   int    // forwarder.batch.max_records
	Linger       string // forwarder.batch.linger
	RPS          int    // forwarder.requests_per_second
	RetryMax     string
	SegmentBytes int64  // queue.segment_bytes (0: default)
	LogLevel     string // default info
	RawFrames    string // pipeline.raw_frames (default none)
}

func (c vigdConf) yaml() string {
	def := func(s, d string) string {
		if s == "" {
			return d
		}
		return s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s\n", c.DataDir)
	fmt.Fprintf(&b, "log:\n  level: %s\n", def(c.LogLevel, "info"))
	fmt.Fprintf(&b, "http:\n  listen: %s\n", c.HTTP)
	fmt.Fprintf(&b, "decoders: [%s]\n", c.Decoders)
	b.WriteString("devices:\n  unknown: accept\n")
	fmt.Fprintf(&b, "pipeline:\n  raw_frames: %s\n", def(c.RawFrames, "none"))
	if c.SegmentBytes > 0 {
		fmt.Fprintf(&b, "queue:\n  segment_bytes: %d\n", c.SegmentBytes)
	}
	fmt.Fprintf(&b, "forwarder:\n  url: %s\n  service_id: %s\n  secret_file: %s\n  gzip: true\n", c.SimURL, serviceID, c.SecretFile)
	fmt.Fprintf(&b, "  timeout: 10s\n  requests_per_second: %d\n", max(c.RPS, 1))
	fmt.Fprintf(&b, "  batch:\n    max_records: %d\n    linger: %s\n", max(c.MaxRecords, 1), def(c.Linger, "50ms"))
	fmt.Fprintf(&b, "  retry:\n    min: 100ms\n    max: %s\n", def(c.RetryMax, "1s"))
	fmt.Fprintf(&b, `adapters:
  - name: devices
    kind: tcp
    decoder: %s
    customer_id: "c1"
    listen: %s
    framing: {type: line}
    identity: payload
    reply: "ACK\n"
    reply_rejected: "NAK\n"
    max_connections: 512
    max_connections_per_ip: 0
`, def(c.Decoder, "counter"), c.TCP)
	return b.String()
}

// counterDecoder reads "deviceId,seq,value" lines: one observation of
// "value" per line with the line number in parameters.seq and the time
// seq seconds after the epoch (so that a line always gives the same
// records), and a "high" alarm raised at value >= 90 and cleared below 50:
// with value = seq % 100 that is an ACTIVE alarm at every seq ending in
// 90 and a CLEARED one at every seq ending in 00.
const counterDecoder = `name: counter
description: e2e test device, CSV deviceId,seq,value
format: text
text:
  separator: ","
  columns: [device, seq, value]
  text_columns: [device]
identity: device
time:
  value: seq
parameters:
  seq: seq
datastreams:
  - name: value
    sensor: counter
    input: value
    observedProperty: Count value
    unit: {name: One, symbol: "1"}
alarms:
  - name: high
    alarmType: HIGH_VALUE
    severity: HIGH
    description: "value {value}"
    raise: value >= 90
    clear: value < 50
    thresholdValue: 90
    currentValue: value
`

// line is the CSV line a test device sends.
func line(dev string, seq int) string {
	return dev + "," + strconv.Itoa(seq) + "," + strconv.Itoa(seq%100) + "\n"
}

// alarmID is the alarmId the counter decoder gives seq's alarm, "" when
// the line raises or clears none (given the lines before it arrived).
func alarmID(dev string, seq int) string {
	at := time.Unix(int64(seq), 0).UTC().Format(time.RFC3339)
	switch seq % 100 {
	case 90:
		return "high@" + dev + "@" + at
	case 0:
		if seq > 0 {
			return "high@" + dev + "@" + at + "/cleared"
		}
	}
	return ""
}

type vigdProc struct {
	t       testing.TB
	bin     string
	conf    vigdConf
	cfgPath string
	logPath string

	mu     sync.Mutex
	p      *proc
	starts int
}

// env is one test's world: a temp folder, a secret, the simulator and a
// vigd config (not started).
type env struct {
	t      testing.TB
	dir    string
	secret string
	sim    *simProc
	vigd   *vigdProc
}

// newEnv starts the simulator and writes vigd's config and the counter
// decoder; vigd is started by the test (e.vigd.start()).
func newEnv(t testing.TB, simFlags []string, tweak func(*vigdConf)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, secret: filepath.Join(dir, "apisecret")}
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	if err := os.WriteFile(e.secret, []byte(hex.EncodeToString(raw[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.sim = startSim(t, dir, e.secret, simFlags...)
	decDir := filepath.Join(dir, "decoders")
	if err := os.MkdirAll(decDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.writeFile("decoders/counter.yaml", counterDecoder)
	conf := vigdConf{
		DataDir: filepath.Join(dir, "vigd"), HTTP: testpeers.FreeAddr(t), TCP: testpeers.FreeAddr(t),
		SimURL: e.sim.url, SecretFile: e.secret, Decoders: decDir,
		MaxRecords: 100, RPS: 100,
	}
	if tweak != nil {
		tweak(&conf)
	}
	bin := os.Getenv("VIGD_E2E_VIGD") // a prebuilt vigd (say, one with pprof) instead of ./cmd/vigd
	if bin == "" {
		bin = testpeers.Binary(t, "vigd")
	}
	e.vigd = &vigdProc{t: t, bin: bin, conf: conf,
		cfgPath: filepath.Join(dir, "vigd.yaml"), logPath: filepath.Join(dir, "vigd.log")}
	e.vigd.writeConfig()
	t.Cleanup(func() {
		e.vigd.shutdown()
		if t.Failed() {
			t.Logf("vigd log (end):\n%s\neventstore-sim log (end):\n%s", tail(e.vigd.logPath, 60), tail(e.sim.logPath, 20))
		}
	})
	return e
}

func (e *env) writeFile(rel, content string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, rel), []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (v *vigdProc) writeConfig() {
	if err := os.WriteFile(v.cfgPath, []byte(v.conf.yaml()), 0o644); err != nil {
		v.t.Fatal(err)
	}
}

// start runs vigd (after a kill: with the same config and data folder).
func (v *vigdProc) start() {
	v.t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.starts++
	if f, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		fmt.Fprintf(f, "=== e2e: start %d ===\n", v.starts)
		f.Close()
	}
	v.p = startProc(v.t, v.logPath, nil, v.bin, "run", "-c", v.cfgPath)
}

func (v *vigdProc) proc() *proc {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.p
}

// pid is the running process's id, 0 when none runs.
func (v *vigdProc) pid() int {
	p := v.proc()
	if p == nil || p.exited() {
		return 0
	}
	return p.cmd.Process.Pid
}

// kill is SIGKILL, and waits for the process to be gone.
func (v *vigdProc) kill() {
	v.t.Helper()
	p := v.proc()
	if p.exited() {
		v.t.Fatalf("vigd had exited before the kill: %v\n%s", p.err, tail(v.logPath, 30))
	}
	_ = p.signal(syscall.SIGKILL, 10*time.Second)
}

// stop is SIGTERM (a graceful stop); it fails the test when vigd does not
// exit cleanly.
func (v *vigdProc) stop() {
	v.t.Helper()
	p := v.proc()
	if err := p.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		v.t.Fatalf("vigd stop: %v\n%s", err, tail(v.logPath, 30))
	}
}

func (v *vigdProc) hup() {
	v.t.Helper()
	if err := v.proc().cmd.Process.Signal(syscall.SIGHUP); err != nil {
		v.t.Fatal(err)
	}
}

func (v *vigdProc) shutdown() {
	if p := v.proc(); p != nil && !p.exited() {
		_ = p.signal(syscall.SIGTERM, 30*time.Second)
	}
}

// alive fails the test when vigd is not running.
func (v *vigdProc) alive() {
	v.t.Helper()
	p := v.proc()
	if p == nil {
		v.t.Fatal("vigd was never started")
	}
	if p.exited() {
		v.t.Fatalf("vigd is not running (exit: %v)\n%s", p.err, tail(v.logPath, 40))
	}
}

func (v *vigdProc) get(path string) (int, string, error) {
	resp, err := httpc.Get("http://" + v.conf.HTTP + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitUp waits until /healthz answers.
func (v *vigdProc) waitUp(timeout time.Duration) {
	v.t.Helper()
	waitFor(v.t, timeout, "vigd /healthz", func() bool {
		v.alive()
		code, _, err := v.get("/healthz")
		return err == nil && code == 200
	})
}

// metric sums the samples of a metric whose labels contain every one of
// labels ("queue=\"data\""); found is false when /metrics has no such
// sample (yet).
func (v *vigdProc) metric(name string, labels ...string) (sum float64, found bool, err error) {
	code, body, err := v.get("/metrics")
	if err != nil {
		return 0, false, err
	}
	if code != 200 {
		return 0, false, fmt.Errorf("/metrics: %d", code)
	}
	sum, found = metricValue(body, name, labels...)
	return sum, found, nil
}

func metricValue(body, name string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, name) || len(l) == len(name) || (l[len(name)] != ' ' && l[len(name)] != '{') {
			continue
		}
		ok := true
		for _, lb := range labels {
			if !strings.Contains(l, lb) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

// drained reports whether both queues are empty, as /metrics says.
func (v *vigdProc) drained() bool {
	n, found, err := v.metric("vigd_queue_records")
	return err == nil && found && n == 0
}

// cli runs a vigd tool command (deadletters …) with this config.
func (v *vigdProc) cli(args ...string) (string, error) {
	cmd := exec.Command(v.bin, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ---- waiting and memory ----

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rssSampler reads VmRSS of the running vigd every 100 ms and keeps the
// peak.
type rssSampler struct {
	peak    atomic.Int64 // kB
	samples atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func sampleRSS(pid func() int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if p := pid(); p > 0 {
				if kb := vmRSS(p); kb > 0 {
					s.samples.Add(1)
					if kb > s.peak.Load() {
						s.peak.Store(kb)
					}
				}
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the peak in MiB.
func (s *rssSampler) finish() float64 {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return float64(s.peak.Load()) / 1024
}

// cpuSeconds is the user+system CPU time a process has used so far.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in ")".
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// jsonOf is for messages.
func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
