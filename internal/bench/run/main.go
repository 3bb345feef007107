// Command run is `make bench`: it measures vigd end to end on this machine
// and prints every figure (and writes them to -out).
//
// Three programs take part, each its own process so that /proc tells vigd's
// own memory and CPU: vigd (bin/vigd, durable queue, HMAC signing and
// Content-MD5 as in production), the lean counting sink
// (internal/bench/sink) as the eventstore, and the load generator
// (internal/bench/load) as the devices: newline CSV telemetry over TCP,
// decoded by internal/bench/decoders/bench-csv.yaml into three
// observations per line.
//
// Scenarios:
//
//   - start: exec to READY=1 (sd_notify, through our own NOTIFY_SOCKET) with
//     an empty queue, and idle RSS a second later;
//   - throughput, once with gzip off and once on: -lines lines as fast as
//     -conns connections take them; lines/s and observations/s from the
//     first byte sent to the last observation accepted by the sink, vigd's
//     CPU seconds (/proc/PID/stat) and peak RSS (VmHWM, and the highest
//     VmRSS sampled every 50 ms);
//   - latency: -latency-lines lines at -rate lines/s, each stamped with its
//     send time in the time column; the sink takes accept time minus
//     phenomenonTime per observation: p50 and p99;
//   - drain: the sink is down while -drain-obs observations are queued, then
//     it starts: observations/s from its start to the last accepted, and
//     vigd's RSS during the drain.
//
// Every phase has a time limit (-limit) so that a slow build still ends
// and prints what it measured, marked as cut short.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	bin          string
	decoders     string
	out          string
	work         string
	keep         bool
	lines        int64
	conns        int
	devices      int
	rate         float64
	latencyLines int64
	drainObs     int64
	limit        time.Duration
	linger       time.Duration
	maxRecords   int
	rps          float64
	parallel     int
	phases       string
	profile      string
	logLevel     string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "folder with vigd, bench-sink and bench-load")
	flag.StringVar(&o.decoders, "decoders", "internal/bench/decoders", "folder with the bench decoder")
	flag.StringVar(&o.out, "out", "bin/bench-results.txt", "file the figures are written to as well")
	flag.StringVar(&o.work, "work", "", "work folder (default: a new temporary folder, removed afterwards)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder (queues, logs)")
	flag.Int64Var(&o.lines, "lines", 1_000_000, "lines per throughput run")
	flag.IntVar(&o.conns, "conns", 4, "TCP connections")
	flag.IntVar(&o.devices, "devices", 100, "devices (observations are batched per device upstream)")
	flag.Float64Var(&o.rate, "rate", 1000, "lines per second of the latency run")
	flag.Int64Var(&o.latencyLines, "latency-lines", 5000, "lines of the latency run")
	flag.Int64Var(&o.drainObs, "drain-obs", 5_000_000, "observations queued for the drain run")
	flag.DurationVar(&o.limit, "limit", 40*time.Second, "time limit of each throughput phase (the drain's fill and drain get 1.5 times it each): make bench stays under 5 minutes however slow vigd is")
	flag.DurationVar(&o.linger, "linger", 200*time.Millisecond, "forwarder batch linger")
	flag.IntVar(&o.maxRecords, "max-records", 1000, "forwarder records per request")
	flag.Float64Var(&o.rps, "rps", 10000, "forwarder requests per second limit")
	flag.IntVar(&o.parallel, "parallel", 4, "forwarder parallel_requests")
	flag.StringVar(&o.phases, "phases", "start,plain,gzip,drain", "phases to run")
	flag.StringVar(&o.logLevel, "log-level", "warn", "vigd's log level (its log is in the work folder)")
	flag.StringVar(&o.profile, "profile", "", "folder for CPU and heap profiles of vigd taken during each load (VIGD_PPROF=1)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// report collects the figures, prints them as they come and writes them all
// to the out file at the end.
type report struct {
	mu    sync.Mutex
	lines []string
}

func (r *report) add(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	fmt.Println(s)
	r.mu.Lock()
	r.lines = append(r.lines, s)
	r.mu.Unlock()
}

func run(o options) error {
	for _, p := range []string{"vigd", "bench-sink", "bench-load"} {
		if _, err := os.Stat(filepath.Join(o.bin, p)); err != nil {
			return fmt.Errorf("%s missing (make bench builds it): %w", p, err)
		}
	}
	dec, err := filepath.Abs(o.decoders)
	if err != nil {
		return err
	}
	o.decoders = dec
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "vigd-bench-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(o.work)
		}
	}
	secret := filepath.Join(o.work, "apisecret")
	if err := os.WriteFile(secret, []byte("bench-secret-not-for-production"), 0o600); err != nil {
		return err
	}
	rep := &report{}
	rep.add("vigd bench  %s  %s/%s, %d CPUs, GOMAXPROCS %d", time.Now().UTC().Format(time.RFC3339), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	rep.add("load: %d lines (3 observations each) over %d TCP connections from %d devices; durable queue, HMAC signing, Content-MD5 on", o.lines, o.conns, o.devices)
	rep.add("forwarder: max_records %d, linger %s, requests_per_second %g, parallel_requests %d", o.maxRecords, o.linger, o.rps, o.parallel)
	b := &bench{o: o, rep: rep, secret: secret}
	var errs []error
	for _, ph := range strings.Split(o.phases, ",") {
		var err error
		switch strings.TrimSpace(ph) {
		case "start":
			err = b.start()
		case "plain":
			err = b.throughput(false)
		case "gzip":
			err = b.throughput(true)
		case "drain":
			err = b.drain()
		case "":
		default:
			err = fmt.Errorf("unknown phase %q", ph)
		}
		if err != nil {
			rep.add("  %s: FAILED: %v", ph, err)
			errs = append(errs, err)
		}
	}
	if o.keep {
		rep.add("work folder kept: %s", o.work)
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(strings.Join(rep.lines, "\n")+"\n"), 0o644); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Println("figures written to", o.out)
		}
	}
	return errors.Join(errs...)
}

type bench struct {
	o      options
	rep    *report
	secret string
	n      int
}

// ---- processes ----

type sinkProc struct {
	cmd  *exec.Cmd
	addr string
}

func (b *bench) startSink(listen string) (*sinkProc, error) {
	cmd := exec.Command(filepath.Join(b.o.bin, "bench-sink"), "-listen", listen, "-secret-file", b.secret)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("sink did not start: %q %v", line, err)
	}
	go io.Copy(io.Discard, out)
	return &sinkProc{cmd: cmd, addr: addr}, nil
}

func (s *sinkProc) stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

type sinkStats struct {
	Observations int64   `json:"observations"`
	Things       int64   `json:"things"`
	Datastreams  int64   `json:"datastreams"`
	Requests     int64   `json:"requests"`
	Refused      int64   `json:"refused"`
	BodyBytes    int64   `json:"bodyBytes"`
	FirstNS      int64   `json:"firstNs"`
	LastNS       int64   `json:"lastNs"`
	LatencyN     int     `json:"latencyN"`
	LatencyP50ms float64 `json:"latencyP50ms"`
	LatencyP99ms float64 `json:"latencyP99ms"`
	LatencyMaxms float64 `json:"latencyMaxms"`
	LastRefusal  string  `json:"lastRefusal"`
}

func (s *sinkProc) stats() (sinkStats, error) {
	var st sinkStats
	resp, err := http.Get("http://" + s.addr + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (s *sinkProc) reset(latency bool) error {
	resp, err := http.Post("http://"+s.addr+"/reset?latency="+strconv.FormatBool(latency), "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// waitObs polls the sink until it has accepted n observations, or limit.
func (s *sinkProc) waitObs(n int64, limit time.Duration) (sinkStats, bool) {
	deadline := time.Now().Add(limit)
	for {
		st, err := s.stats()
		if err == nil && st.Observations >= n {
			return st, true
		}
		if time.Now().After(deadline) {
			return st, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type vigdProc struct {
	cmd     *exec.Cmd
	dir     string
	tcp     string
	http    string
	logPath string
	ready   time.Duration
	rssMax  atomic.Int64
	stopRSS chan struct{}
	rssDone chan struct{}
	exited  chan error
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startVigd writes a config and starts vigd; it returns once vigd said
// READY=1 over NOTIFY_SOCKET (the time it took is v.ready).
func (b *bench) startVigd(name, upstream string, gzip bool) (*vigdProc, error) {
	b.n++
	dir := filepath.Join(b.o.work, fmt.Sprintf("%02d-%s", b.n, name))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	tcpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`data_dir: %s
log: {level: %s, components: {adapter: warn, pipeline: warn, queue: warn}}
http: {listen: %s}
decoders: [%s]
devices: {unknown: accept}
queue:
  data: {max_bytes: 8589934592, policy: block}
forwarder:
  url: http://%s
  service_id: vigd-bench
  secret_file: %s
  gzip: %t
  batch: {max_records: %d, linger: %s}
  requests_per_second: %g
  parallel_requests: %d
  retry: {min: 100ms, max: 1s}
adapters:
  - name: bench
    kind: tcp
    decoder: bench-csv
    customer_id: bench
    listen: %s
    framing: {type: line}
    identity: payload
    max_connections: 1024
`, filepath.Join(dir, "data"), b.o.logLevel, httpAddr, b.o.decoders, upstream, b.secret, gzip, b.o.maxRecords, b.o.linger, b.o.rps, b.o.parallel, tcpAddr)
	cfgPath := filepath.Join(dir, "vigd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o640); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "notify.sock")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	readyc := make(chan time.Time, 1)
	go func() {
		defer nl.Close()
		buf := make([]byte, 4096)
		for {
			n, err := nl.Read(buf)
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l == "READY=1" {
					select {
					case readyc <- time.Now():
					default:
					}
					return
				}
			}
		}
	}()
	logPath := filepath.Join(dir, "vigd.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(b.o.bin, "vigd"), "run", "-c", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	if b.o.profile != "" {
		cmd.Env = append(cmd.Env, "VIGD_PPROF=1")
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	lf.Close()
	v := &vigdProc{cmd: cmd, dir: dir, tcp: tcpAddr, http: httpAddr, logPath: logPath,
		stopRSS: make(chan struct{}), rssDone: make(chan struct{})}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case t := <-readyc:
		v.ready = t.Sub(t0)
	case err := <-exited:
		nl.Close()
		return nil, fmt.Errorf("vigd exited before READY (%v); log: %s\n%s", err, logPath, tail(logPath))
	case <-time.After(30 * time.Second):
		nl.Close()
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("vigd not READY after 30s; log: %s", logPath)
	}
	go func() {
		defer close(v.rssDone)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if kb := procStatus(cmd.Process.Pid, "VmRSS"); kb > v.rssMax.Load() {
				v.rssMax.Store(kb)
			}
			select {
			case <-v.stopRSS:
				return
			case <-t.C:
			}
		}
	}()
	v.exited = exited
	return v, nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (v *vigdProc) pid() int { return v.cmd.Process.Pid }

func (v *vigdProc) stop() {
	close(v.stopRSS)
	<-v.rssDone
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.exited:
	case <-time.After(20 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.exited
	}
}

// profile starts a CPU profile of d (when dir is set) and returns a func
// that waits for it and takes a heap profile.
func (v *vigdProc) profile(dir, name string, d time.Duration) func() {
	if dir == "" {
		return func() {}
	}
	_ = os.MkdirAll(dir, 0o750)
	get := func(path, file string) {
		resp, err := http.Get("http://" + v.http + path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		get(fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), name+".cpu.pprof")
	}()
	go func() {
		time.Sleep(d / 2)
		get("/debug/pprof/goroutine?debug=1", name+".goroutines.txt")
	}()
	return func() {
		get("/debug/pprof/heap", name+".heap.pprof")
		<-done
	}
}

// resetPeak restarts the RSS sampling maximum (VmHWM cannot be reset).
func (v *vigdProc) resetPeak() { v.rssMax.Store(procStatus(v.pid(), "VmRSS")) }

// backlog is the data queue's record count from /metrics.
func (v *vigdProc) backlog() (int64, error) {
	resp, err := http.Get("http://" + v.http + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return metric(body, `vigd_queue_records{queue="data"}`), nil
}

// metrics returns a few of vigd's own counters for the report.
func (v *vigdProc) metrics() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + v.http + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, k := range []string{`vigd_queue_fsyncs_total{queue="data"}`, `vigd_queue_appends_total{queue="data"}`,
		`vigd_forwarder_batch_records_sum`, `vigd_forwarder_batch_records_count`} {
		out[k] = float64(metric(body, k))
	}
	return out
}

func metric(body []byte, name string) int64 {
	for _, l := range bytes.Split(body, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(l, []byte(name+" ")); ok {
			f, _ := strconv.ParseFloat(string(bytes.TrimSpace(rest)), 64)
			return int64(f)
		}
	}
	return 0
}

// procStatus reads a kB field of /proc/PID/status.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// cpuSeconds is utime+stime of /proc/PID/stat (clock ticks of 1/100 s,
// the value on every Linux this runs on).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return float64(u+st) / 100
}

type loadResult struct {
	StartNS  int64   `json:"startNs"`
	EndNS    int64   `json:"endNs"`
	ClosedNS int64   `json:"closedNs"`
	Lines    int64   `json:"lines"`
	Bytes    int64   `json:"bytes"`
	CPU      float64 `json:"-"` // the generator's own CPU seconds
}

// load runs the generator; rate 0 means full speed. It returns when the
// generator is done (every line durably queued) or limit passed.
func (b *bench) load(addr string, lines int64, rate float64, limit time.Duration) (loadResult, error) {
	var res loadResult
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(b.o.bin, "bench-load"), "-addr", addr,
		"-lines", strconv.FormatInt(lines, 10), "-conns", strconv.Itoa(b.o.conns),
		"-devices", strconv.Itoa(b.o.devices), "-rate", strconv.FormatFloat(rate, 'f', -1, 64))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return res, fmt.Errorf("load generator cut short after %s", limit)
	}
	if err != nil {
		return res, fmt.Errorf("load generator: %w", err)
	}
	err = json.Unmarshal(out, &res)
	res.CPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return res, err
}

// ---- scenarios ----

func mb(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }

func (b *bench) start() error {
	s, err := b.startSink("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer s.stop()
	var readies []string
	var idle []string
	for i := 0; i < 2; i++ {
		v, err := b.startVigd("start", s.addr, false)
		if err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		readies = append(readies, fmt.Sprintf("%.0f ms", float64(v.ready)/float64(time.Millisecond)))
		idle = append(idle, mb(procStatus(v.pid(), "VmRSS")))
		v.stop()
	}
	b.rep.add("start to READY (empty queue):   %s   (target <= 200 ms)", strings.Join(readies, ", "))
	b.rep.add("idle RSS (2 s after READY):     %s   (target <= 20 MB)", strings.Join(idle, ", "))
	return nil
}

func (b *bench) throughput(gzip bool) error {
	label := "gzip off"
	if gzip {
		label = "gzip on"
	}
	s, err := b.startSink("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer s.stop()
	v, err := b.startVigd(strings.ReplaceAll(label, " ", "-"), s.addr, gzip)
	if err != nil {
		return err
	}
	defer v.stop()
	b.rep.add("throughput, %s:", label)
	cpu0, sink0 := cpuSeconds(v.pid()), cpuSeconds(s.cmd.Process.Pid)
	want := b.o.lines * 3
	prof := v.profile(b.o.profile, strings.ReplaceAll(label, " ", "-"), 10*time.Second)
	lr, lerr := b.load(v.tcp, b.o.lines, 0, b.o.limit)
	prof()
	var st sinkStats
	ok := false
	if lerr == nil {
		left := b.o.limit - time.Since(time.Unix(0, lr.StartNS))
		st, ok = s.waitObs(want, max(left, time.Second))
	} else {
		st, _ = s.stats()
	}
	cpu := cpuSeconds(v.pid()) - cpu0
	sinkCPU := cpuSeconds(s.cmd.Process.Pid) - sink0
	m := v.metrics()
	if lerr != nil || !ok {
		b.rep.add("  CUT SHORT after %s: %d of %d observations accepted (%v); log %s", b.o.limit, st.Observations, want, lerr, v.logPath)
		if st.LastRefusal != "" {
			b.rep.add("  sink refused %d requests, last: %s", st.Refused, st.LastRefusal)
		}
		b.rep.add("  end to end:     %.0f lines/s, %.0f observations/s at most (what arrived within the limit)",
			float64(st.Observations)/3/b.o.limit.Seconds(), float64(st.Observations)/b.o.limit.Seconds())
		b.rep.add("  ingest only:    %.0f lines/s at most (%.0f observations queued)",
			m[`vigd_queue_appends_total{queue="data"}`]/3/b.o.limit.Seconds(), m[`vigd_queue_appends_total{queue="data"}`])
		b.rep.add("  vigd CPU:       %.2f s  (%.1f µs per line)", cpu, cpu/(float64(st.Observations)/3)*1e6)
	} else {
		el := time.Duration(st.LastNS - lr.StartNS)
		b.rep.add("  end to end:     %.0f lines/s, %.0f observations/s  (%d lines in %.2f s; target >= 150000 lines/s)",
			float64(b.o.lines)/el.Seconds(), float64(want)/el.Seconds(), b.o.lines, el.Seconds())
		ing := time.Duration(lr.ClosedNS - lr.StartNS)
		b.rep.add("  ingest only:    %.0f lines/s  (all lines durably queued after %.2f s)", float64(b.o.lines)/ing.Seconds(), ing.Seconds())
		b.rep.add("  vigd CPU:       %.2f s  (%.1f µs per line); on the same cores the sink took %.2f s, the load generator %.2f s", cpu, cpu/float64(b.o.lines)*1e6, sinkCPU, lr.CPU)
	}
	b.rep.add("  vigd peak RSS:  %s sampled, VmHWM %s  (target <= 64 MB)", mb(v.rssMax.Load()), mb(procStatus(v.pid(), "VmHWM")))
	reqs := m["vigd_forwarder_batch_records_count"]
	if reqs > 0 {
		b.rep.add("  upstream:       %d requests, %.0f records per request, %.1f MB sent; queue fsyncs %.0f",
			st.Requests, m["vigd_forwarder_batch_records_sum"]/reqs, float64(st.BodyBytes)/1e6, m[`vigd_queue_fsyncs_total{queue="data"}`])
	}
	if !ok || lerr != nil {
		return nil
	}

	// Latency at a fixed, modest rate.
	if err := s.reset(true); err != nil {
		return err
	}
	if _, err := b.load(v.tcp, b.o.latencyLines, b.o.rate, b.o.limit); err != nil {
		b.rep.add("  latency: %v", err)
		return nil
	}
	st, ok = s.waitObs(b.o.latencyLines*3, 30*time.Second)
	if !ok {
		b.rep.add("  latency: only %d of %d observations arrived", st.Observations, b.o.latencyLines*3)
	}
	b.rep.add("  latency at %.0f lines/s: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d observations  (target p99 <= linger %s + 50 ms)",
		b.o.rate, st.LatencyP50ms, st.LatencyP99ms, st.LatencyMaxms, st.LatencyN, b.o.linger)
	return nil
}

func (b *bench) drain() error {
	addr, err := freePort()
	if err != nil {
		return err
	}
	v, err := b.startVigd("drain", addr, false)
	if err != nil {
		return err
	}
	defer v.stop()
	lines := (b.o.drainObs + 2) / 3
	want := lines * 3
	b.rep.add("drain of %d observations (%d lines queued while the sink is down):", want, lines)
	cpu0 := cpuSeconds(v.pid())
	prof := v.profile(b.o.profile, "fill", 10*time.Second)
	lr, lerr := b.load(v.tcp, lines, 0, b.o.limit*3/2)
	prof()
	queued, _ := v.backlog()
	if lerr != nil {
		b.rep.add("  fill CUT SHORT after %s: %d observations queued", b.o.limit*3/2, queued)
	} else {
		fill := time.Duration(lr.ClosedNS - lr.StartNS)
		b.rep.add("  fill (upstream down): %.0f lines/s durably queued, %d observations in the queue; vigd CPU %.2f s; peak RSS %s",
			float64(lines)/fill.Seconds(), queued, cpuSeconds(v.pid())-cpu0, mb(v.rssMax.Load()))
	}
	v.resetPeak()
	cpu0 = cpuSeconds(v.pid())
	s, err := b.startSink(addr)
	if err != nil {
		return err
	}
	defer s.stop()
	t0 := time.Now()
	prof = v.profile(b.o.profile, "drain", 10*time.Second)
	st, ok := s.waitObs(queued, b.o.limit*3/2)
	prof()
	cpu := cpuSeconds(v.pid()) - cpu0
	if !ok {
		b.rep.add("  drain CUT SHORT after %s: %d of %d observations accepted: at least %.0f observations/s",
			b.o.limit*3/2, st.Observations, queued, float64(st.Observations)/(b.o.limit*3/2).Seconds())
	} else {
		el := time.Duration(st.LastNS - t0.UnixNano())
		b.rep.add("  drain: %.0f observations/s  (%d in %.2f s from sink start; target >= 150000/s)", float64(st.Observations)/el.Seconds(), st.Observations, el.Seconds())
	}
	b.rep.add("  during the drain: peak RSS %s sampled (VmHWM since start %s; target <= 64 MB), vigd CPU %.2f s, %d requests",
		mb(v.rssMax.Load()), mb(procStatus(v.pid(), "VmHWM")), cpu, st.Requests)
	return nil
}
