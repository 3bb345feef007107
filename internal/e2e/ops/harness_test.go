package ops

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serviceID is the eventstore service id every test signs with.
const serviceID = "vigd-ops"

// httpc has no keep-alive, so that no connection goroutine outlives a test.
var httpc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- the world: simulator, decoders, config ----

// world is one test's folder, API secret, simulator and decoders.
type world struct {
	t      *testing.T
	dir    string
	secret string // the API secret itself
	sim    *sim.Server
	decDir string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	w := &world{t: t, dir: t.TempDir(), secret: hex.EncodeToString(raw[:])}
	w.sim = sim.StartTest(t, sim.Config{Services: map[string]signer.Secret{serviceID: signer.NewSecret(w.secret)}})
	w.decDir = filepath.Join(w.dir, "decoders")
	if err := os.MkdirAll(w.decDir, 0o755); err != nil {
		t.Fatal(err)
	}
	w.writeDecoder("1")
	// The secret both as a file and as a systemd credential.
	w.write("apisecret", w.secret+"\n")
	w.write("creds/apisecret", w.secret+"\n")
	return w
}

func (w *world) write(rel, content string) string {
	w.t.Helper()
	p := filepath.Join(w.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// counterDecoder reads "device,seq,value" lines: one observation of value
// with parameters.seq and parameters.rev (the decoder's revision, an
// expression: a reload that changes it shows in the records). The time is
// seq seconds after the epoch, so a line always gives the same record.
// The rev expression is on line revLine.
const counterDecoder = `name: counter
description: ops test device, CSV device,seq,value
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
  rev: %s
datastreams:
  - name: value
    sensor: counter
    input: value
    observedProperty: Count value
    unit: {name: One, symbol: "1"}
`

const revLine = 13

func (w *world) writeDecoder(rev string) {
	w.t.Helper()
	w.write("decoders/counter.yaml", fmt.Sprintf(counterDecoder, rev))
}

// conf is what a test varies in vigd.yaml.
type conf struct {
	HTTP       string // 127.0.0.1:PORT
	URL        string // forwarder.url; default the simulator
	Timeout    string // forwarder.timeout; default 5s
	Credential bool   // the secret as $CREDENTIALS_DIRECTORY/apisecret
	Log        string // the log: block's lines (indented); default level info
	Adapters   string // the adapters: list items
}

func (w *world) writeConfig(c conf) string {
	w.t.Helper()
	def := func(s, d string) string {
		if s == "" {
			return d
		}
		return s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s\n", filepath.Join(w.dir, "data"))
	fmt.Fprintf(&b, "log:\n%s\n", def(c.Log, "  level: info"))
	fmt.Fprintf(&b, "http:\n  listen: %s\n", c.HTTP)
	fmt.Fprintf(&b, "decoders: [%s]\n", w.decDir)
	b.WriteString("devices:\n  unknown: accept\npipeline:\n  raw_frames: none\n")
	fmt.Fprintf(&b, "forwarder:\n  url: %s\n  service_id: %s\n", def(c.URL, w.sim.URL()), serviceID)
	if c.Credential {
		b.WriteString("  secret_credential: apisecret\n")
	} else {
		fmt.Fprintf(&b, "  secret_file: %s\n", filepath.Join(w.dir, "apisecret"))
	}
	fmt.Fprintf(&b, "  gzip: true\n  timeout: %s\n  requests_per_second: 200\n", def(c.Timeout, "5s"))
	b.WriteString("  batch:\n    max_records: 100\n    linger: 50ms\n  retry:\n    min: 100ms\n    max: 500ms\n")
	b.WriteString("adapters:\n" + c.Adapters)
	return w.write("vigd.yaml", b.String())
}

// tcpAdapter is a line-framed TCP adapter that replies ACK after each
// durably queued frame and NAK after a dead-lettered one.
func tcpAdapter(name, addr string) string {
	return fmt.Sprintf(`  - name: %s
    kind: tcp
    decoder: counter
    customer_id: "c1"
    listen: %s
    framing: {type: line}
    identity: payload
    reply: "ACK\n"
    reply_rejected: "NAK\n"
`, name, addr)
}

// ---- records at the simulator ----

// obs is one observation the simulator stored.
type obs struct {
	dev      string
	seq, rev int
}

func (w *world) observations(t testing.TB) []obs {
	t.Helper()
	recs, err := w.sim.Client().Records(context.Background(), sim.Query{Kind: sim.Observations})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]obs, 0, len(recs))
	for _, r := range recs {
		var body struct {
			Parameters struct {
				Seq int `json:"seq"`
				Rev int `json:"rev"`
			} `json:"parameters"`
		}
		if err := json.Unmarshal(r.Record, &body); err != nil {
			t.Fatalf("observation %s: %v", r.Record, err)
		}
		out = append(out, obs{dev: r.DeviceID, seq: body.Parameters.Seq, rev: body.Parameters.Rev})
	}
	return out
}

// seqsOf is the set of seqs stored for dev.
func seqsOf(all []obs, dev string) map[int]int {
	m := map[int]int{}
	for _, o := range all {
		if o.dev == dev {
			m[o.seq]++
		}
	}
	return m
}

// missing lists the seqs 1..n absent from got.
func missing(got map[int]int, n int) []int {
	var out []int
	for i := 1; i <= n; i++ {
		if got[i] == 0 {
			out = append(out, i)
		}
	}
	return out
}

// ---- sd_notify ----

// notifyMsg is one datagram vigd sent to $NOTIFY_SOCKET.
type notifyMsg struct {
	at    time.Time
	lines []string
}

func (m notifyMsg) has(prefix string) bool {
	for _, l := range m.lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func (m notifyMsg) get(prefix string) string {
	for _, l := range m.lines {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimPrefix(l, prefix)
		}
	}
	return ""
}

// notifySock plays systemd's side of sd_notify: a unixgram socket that
// records every datagram.
type notifySock struct {
	path string
	conn *net.UnixConn
	done chan struct{}

	mu   sync.Mutex
	msgs []notifyMsg
}

func listenNotify(t testing.TB, dir string) *notifySock {
	t.Helper()
	p := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySock{path: p, conn: c, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		buf := make([]byte, 64<<10)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			m := notifyMsg{at: time.Now(), lines: strings.Split(strings.TrimRight(string(buf[:k]), "\n"), "\n")}
			n.mu.Lock()
			n.msgs = append(n.msgs, m)
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-n.done })
	return n
}

func (n *notifySock) all() []notifyMsg {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]notifyMsg(nil), n.msgs...)
}

// wait returns the index of the first datagram at or after from that has
// a line starting with prefix (and, when cond is set, for which cond holds).
func (n *notifySock) wait(t testing.TB, from int, timeout time.Duration, prefix string, cond func(notifyMsg) bool) int {
	t.Helper()
	idx := -1
	waitFor(t, timeout, "notify "+prefix, func() bool {
		ms := n.all()
		for i := from; i < len(ms); i++ {
			if ms[i].has(prefix) && (cond == nil || cond(ms[i])) {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

func (n *notifySock) dump() string {
	var b strings.Builder
	for _, m := range n.all() {
		fmt.Fprintf(&b, "  %s %q\n", m.at.Format("15:04:05.000"), m.lines)
	}
	return b.String()
}

// ---- the vigd process ----

// vigd is one run of the binary, with systemd's environment: a notify
// socket, and optionally WATCHDOG_USEC and CREDENTIALS_DIRECTORY.
type vigd struct {
	t       testing.TB
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	logPath string
	http    string
	notify  *notifySock
	started time.Time
}

type runOpts struct {
	watchdog time.Duration // WATCHDOG_USEC; 0: none
	creds    string        // CREDENTIALS_DIRECTORY; "": none
}

// startVigd runs `vigd run -c cfg`; its output is appended to
// dir/vigd.log. It is killed on cleanup if still running.
func (w *world) startVigd(cfg, httpAddr string, o runOpts) *vigd {
	w.t.Helper()
	bin := testpeers.Binary(w.t, "vigd")
	v := &vigd{t: w.t, done: make(chan struct{}), logPath: filepath.Join(w.dir, "vigd.log"), http: httpAddr}
	ndir, err := os.MkdirTemp(w.dir, "n")
	if err != nil {
		w.t.Fatal(err)
	}
	v.notify = listenNotify(w.t, ndir)
	lf, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.t.Fatal(err)
	}
	env := []string{}
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY", "LISTEN_FDS", "LISTEN_PID":
			continue
		}
		env = append(env, e)
	}
	env = append(env, "NOTIFY_SOCKET="+v.notify.path)
	if o.watchdog > 0 {
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(o.watchdog.Microseconds(), 10))
	}
	if o.creds != "" {
		env = append(env, "CREDENTIALS_DIRECTORY="+o.creds)
	}
	v.cmd = exec.Command(bin, "run", "-c", cfg)
	v.cmd.Env = env
	v.cmd.Stdout, v.cmd.Stderr = lf, lf
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		lf.Close()
		w.t.Fatal(err)
	}
	go func() {
		v.err = v.cmd.Wait()
		lf.Close()
		close(v.done)
	}()
	w.t.Cleanup(func() {
		if !v.exited() {
			_ = v.cmd.Process.Kill()
			<-v.done
		}
		if w.t.Failed() {
			w.t.Logf("vigd log (end):\n%s\nnotify:\n%s", tail(v.log(), 40), v.notify.dump())
		}
	})
	return v
}

func (v *vigd) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// alive fails the test when vigd has exited.
func (v *vigd) alive() {
	v.t.Helper()
	if v.exited() {
		v.t.Fatalf("vigd exited: %v\n%s", v.err, tail(v.log(), 40))
	}
}

// waitReady waits for READY=1 and returns how long the start took.
func (v *vigd) waitReady() time.Duration {
	v.t.Helper()
	var at time.Time
	waitFor(v.t, 30*time.Second, "READY=1", func() bool {
		v.alive()
		for _, m := range v.notify.all() {
			if m.has("READY=1") {
				at = m.at
				return true
			}
		}
		return false
	})
	return at.Sub(v.started)
}

// signal sends sig and waits up to timeout for the exit.
func (v *vigd) signal(sig syscall.Signal, timeout time.Duration) error {
	_ = v.cmd.Process.Signal(sig)
	select {
	case <-v.done:
		return v.err
	case <-time.After(timeout):
		_ = v.cmd.Process.Kill()
		<-v.done
		return fmt.Errorf("vigd did not exit within %s after %v", timeout, sig)
	}
}

// stop is SIGTERM; it fails the test unless vigd exits 0 within 30s
// (the unit's TimeoutStopSec).
func (v *vigd) stop() time.Duration {
	v.t.Helper()
	t0 := time.Now()
	if err := v.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		v.t.Fatalf("vigd stop: %v\n%s", err, tail(v.log(), 30))
	}
	return time.Since(t0)
}

func (v *vigd) log() string {
	b, _ := os.ReadFile(v.logPath)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rssKiB is the process's resident set (VmRSS) in KiB.
func (v *vigd) rssKiB() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", v.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// ---- /metrics ----

type metrics map[string]*dto.MetricFamily

// scrape parses /metrics with the Prometheus text parser.
func (v *vigd) scrape(t testing.TB) metrics {
	t.Helper()
	resp, err := httpc.Get("http://" + v.http + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// get sums the samples of name whose labels include every pair of
// labels ("k", "v", ...); found is false when there is none.
func (m metrics) get(name string, labels ...string) (sum float64, found bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
	for _, s := range f.GetMetric() {
		if !hasLabels(s, labels) {
			continue
		}
		found = true
		switch {
		case s.Counter != nil:
			sum += s.Counter.GetValue()
		case s.Gauge != nil:
			sum += s.Gauge.GetValue()
		case s.Untyped != nil:
			sum += s.Untyped.GetValue()
		}
	}
	return sum, found
}

func hasLabels(s *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		ok := false
		for _, l := range s.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// series lists "label=value,..." → value for every sample of name.
func (m metrics) series(name string, label string) map[string]float64 {
	out := map[string]float64{}
	f := m[name]
	if f == nil {
		return out
	}
	for _, s := range f.GetMetric() {
		var key string
		for _, l := range s.GetLabel() {
			if l.GetName() == label {
				key = l.GetValue()
			}
		}
		switch {
		case s.Counter != nil:
			out[key] += s.Counter.GetValue()
		case s.Gauge != nil:
			out[key] += s.Gauge.GetValue()
		}
	}
	return out
}

// ---- a TCP device ----

// device is one TCP connection that sends lines and waits for each reply.
type device struct {
	c net.Conn
	r *bufio.Reader
}

// dial connects to a TCP adapter, waiting up to 10s for it to listen.
func dial(t testing.TB, addr string) *device {
	t.Helper()
	var c net.Conn
	waitFor(t, 10*time.Second, "tcp adapter "+addr, func() bool {
		var err error
		c, err = net.DialTimeout("tcp", addr, time.Second)
		return err == nil
	})
	t.Cleanup(func() { c.Close() })
	return &device{c: c, r: bufio.NewReader(c)}
}

// send writes one line and returns the adapter's reply ("ACK", "NAK").
func (d *device) send(line string) (string, error) {
	_ = d.c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(d.c, line+"\n"); err != nil {
		return "", err
	}
	reply, err := d.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no reply to %q: %w", line, err)
	}
	return strings.TrimSpace(reply), nil
}

// mustSend sends a line and fails the test unless the reply is want.
func (d *device) mustSend(t testing.TB, line, want string) {
	t.Helper()
	got, err := d.send(line)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("reply to %q: %q, want %q", line, got, want)
	}
}

func csv(dev string, seq int) string {
	return dev + "," + strconv.Itoa(seq) + "," + strconv.Itoa(seq%100)
}

// errRefused reports whether err is a refused connection.
func errRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
