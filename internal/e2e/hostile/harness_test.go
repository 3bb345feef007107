package hostile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
)

// serviceID is the eventstore service id the daemon signs with.
const serviceID = "vigd-hostile"

// httpc: no keep-alive, so no connection goroutine outlives a test.
var httpc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// counterDecoder reads "deviceId,seq,value" lines into one observation
// of "value" each (parameters.seq is the line's number).
const counterDecoder = `name: counter
description: hostile-input test device, CSV deviceId,seq,value
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
`

// env is one test's simulator, folders and secret.
type env struct {
	t      *testing.T
	dir    string
	secret string
	// secretFile holds the API secret (mode 0600).
	secretFile string
	decoders   string
	sim        *sim.Server
	simURL     string
	simClient  *sim.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), secret: "api-" + randHex(t, 16)}
	e.secretFile = e.write("apisecret", e.secret+"\n", 0o600)
	e.decoders = filepath.Join(e.dir, "decoders")
	if err := os.MkdirAll(e.decoders, 0o755); err != nil {
		t.Fatal(err)
	}
	e.write("decoders/counter.yaml", counterDecoder, 0o644)
	return e
}

// startSim runs the eventstore simulator in the test process, over plain
// HTTP (or wrap it with serveTLS).
func (e *env) startSim() {
	e.t.Helper()
	e.sim = sim.StartTest(e.t, e.simConfig())
	e.simURL = e.sim.URL()
	e.simClient = &sim.Client{BaseURL: e.simURL, HTTP: httpc}
}

func (e *env) simConfig() sim.Config {
	return sim.Config{DataDir: filepath.Join(e.dir, "sim"), Services: map[string]signer.Secret{serviceID: signer.NewSecret(e.secret)}}
}

func (e *env) write(name, content string, mode os.FileMode) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	f, err := os.Open("/dev/urandom")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// baseConfig is vigd.yaml without adapters: the simulator upstream, fast
// batches, the counter decoder.
func (e *env) baseConfig(httpAddr, level string) string {
	return fmt.Sprintf(`data_dir: %s
log:
  level: %s
  format: json
http:
  listen: %s
decoders: [%s]
devices:
  unknown: accept
pipeline:
  raw_frames: none
forwarder:
  url: %s
  service_id: %s
  secret_file: %s
  timeout: 10s
  requests_per_second: 50
  batch:
    max_records: 100
    linger: 50ms
  retry:
    min: 100ms
    max: 1s
`, filepath.Join(e.dir, "data"), level, httpAddr, e.decoders, e.simURL, serviceID, e.secretFile)
}

// accepted is how many observations the simulator holds.
func (e *env) accepted() int64 {
	e.t.Helper()
	c, err := e.simClient.Counts(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return c.Accepted[sim.Observations]
}

// ---- the daemon ----

type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	logPath string
	http    string // 127.0.0.1:PORT of /metrics
	done    chan struct{}
	err     error
}

// startVigd writes cfg and runs `vigd run`, and waits for /readyz (every
// adapter listening, stores open) up to 30s unless notReady.
func (e *env) startVigd(cfg, httpAddr string) *daemon {
	e.t.Helper()
	bin := testpeers.Binary(e.t, "vigd")
	path := e.write("vigd.yaml", cfg, 0o600)
	d := &daemon{t: e.t, logPath: filepath.Join(e.dir, "vigd.log"), http: httpAddr, done: make(chan struct{})}
	lf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	d.cmd = exec.Command(bin, "run", "-c", path)
	d.cmd.Stdout, d.cmd.Stderr = lf, lf
	if err := d.cmd.Start(); err != nil {
		lf.Close()
		e.t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		lf.Close()
		close(d.done)
	}()
	e.t.Cleanup(func() {
		d.stop()
		if e.t.Failed() {
			e.t.Logf("vigd log tail:\n%s", d.tail(40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := d.get("/readyz"); code == 200 {
			return d
		}
		select {
		case <-d.done:
			e.t.Fatalf("vigd exited: %v\n%s", d.err, d.tail(30))
		default:
		}
		if time.Now().After(deadline) {
			_, body := d.get("/readyz")
			e.t.Fatalf("vigd not ready within 30s:\n%s\n%s", body, d.tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		d.t.Errorf("vigd did not stop within 20s of SIGTERM")
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) get(path string) (int, string) {
	resp, err := httpc.Get("http://" + d.http + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

func (d *daemon) tail(n int) string {
	lines := strings.Split(strings.TrimRight(d.log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// metric is the value of one sample of /metrics: name{labels} (labels in
// any order, a subset is enough); 0 when absent.
func (d *daemon) metric(name string, labels map[string]string) float64 {
	d.t.Helper()
	_, body := d.get("/metrics")
	return metricIn(body, name, labels)
}

var sampleRe = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$`)

func metricIn(body, name string, labels map[string]string) float64 {
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		m := sampleRe.FindStringSubmatch(line)
		if m == nil || m[1] != name {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(m[3], k+`="`+v+`"`) {
				ok = false
			}
		}
		if ok {
			f, _ := strconv.ParseFloat(m[4], 64)
			sum += f
		}
	}
	return sum
}

// ---- memory ----

// rssKB is VmRSS of a process in kB.
func rssKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}

// rssWatch samples a process's RSS every 10ms until stopped and keeps the
// peak.
type rssWatch struct {
	peak atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

func watchRSS(pid int) *rssWatch {
	w := &rssWatch{stop: make(chan struct{})}
	w.peak.Store(int64(rssKB(pid)))
	w.wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			if v := int64(rssKB(pid)); v > w.peak.Load() {
				w.peak.Store(v)
			}
		}
	})
	return w
}

// done stops sampling and returns the peak in kB.
func (w *rssWatch) done() int {
	close(w.stop)
	w.wg.Wait()
	return int(w.peak.Load())
}

// ---- devices ----

// dialFrom connects from a given loopback address (Linux routes all of
// 127/8 to lo), so one test can play many remote hosts.
func dialFrom(local, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return d.Dial("tcp", addr)
}

// sendLines writes each line and waits for "ACK\n" after it.
func sendLines(c net.Conn, lines ...string) error {
	br := bufio.NewReader(c)
	for _, l := range lines {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, l+"\n"); err != nil {
			return err
		}
		ack, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("no ACK for %q: %w", l, err)
		}
		if ack != "ACK\n" {
			return fmt.Errorf("answer %q to %q", ack, l)
		}
	}
	return nil
}

// closedByPeer reports whether the server closed c (EOF or reset) within
// wait.
func closedByPeer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(began)
}
