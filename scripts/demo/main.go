// Command demo is `make demo`: it starts eventstore-sim and vigd (built by
// make into bin/) with configs/demo.yaml, sends the real sample inputs from
// ../shared/samples over TCP — a TOA5 daily table, the same table as TOB1,
// and NMEA sentences, each to its own port and decoder — waits until the
// simulator has everything, and prints what arrived, read back from the
// simulator's own store, and what went to the dead letters.
//
// Without ../shared it sends generated inputs of the same formats instead
// and says so.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"strings"
	"syscall"
	"time"

	"github.com/vigd/vigd/internal/sim"
)

const (
	simAddr    = "127.0.0.1:18080"
	vigdHTTP   = "http://127.0.0.1:19273"
	serviceID  = "vigd-demo"
	toa5Port   = "127.0.0.1:17001"
	tob1Port   = "127.0.0.1:17002"
	nmeaPort   = "127.0.0.1:17003"
	configFile = "configs/demo.yaml"
)

func main() {
	bin := flag.String("bin", "bin", "folder with vigd and eventstore-sim")
	data := flag.String("data", "demo-data", "folder for the demo's state (emptied first)")
	flag.Parse()
	if err := run(*bin, *data); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type proc struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	exitEr error
}

func start(name, logPath string, path string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.exitEr = cmd.Wait(); lf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func waitHTTP(url string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.name, p.exitEr)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s after %s", p.name, url, timeout)
}

// send writes a file to a TCP port and closes the write side: for the
// loggers (framing none) the connection is the frame.
func send(addr string, b []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		return err
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(io.Discard, c) // until vigd closes: the frame is queued
	return nil
}

func run(bin, data string) error {
	for _, b := range []string{"vigd", "eventstore-sim"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("%s/%s missing: run `make build` first (make demo does)", bin, b)
		}
	}
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	secretRaw := make([]byte, 24)
	_, _ = rand.Read(secretRaw)
	secret := hex.EncodeToString(secretRaw)
	secretFile := filepath.Join(data, "apisecret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		return err
	}

	// Inputs: the real samples, or generated ones of the same formats.
	toa5, tob1, nmea := "", "", ""
	samples := filepath.Join("..", "shared", "samples")
	if st, err := os.Stat(samples); err == nil && st.IsDir() {
		toa5 = filepath.Join(samples, "toa5_station_daily.dat")
		tob1 = filepath.Join(samples, "tob1_station_daily.dat")
		nmea = filepath.Join(samples, "nmea_sentences.txt")
		fmt.Printf("inputs: the real samples in %s\n", samples)
	} else {
		var err error
		if toa5, tob1, nmea, err = generateInputs(filepath.Join(data, "generated")); err != nil {
			return err
		}
		fmt.Printf("inputs: ../shared/samples not found beside the repository; sending GENERATED inputs of the same formats (%s)\n", filepath.Join(data, "generated"))
	}

	simProc, err := start("eventstore-sim", filepath.Join(data, "sim.log"), filepath.Join(bin, "eventstore-sim"),
		"-listen", simAddr, "-data", filepath.Join(data, "sim"), "-service", serviceID+"=@"+secretFile)
	if err != nil {
		return err
	}
	defer simProc.stop()
	if err := waitHTTP("http://"+simAddr+"/_sim/counts", simProc, 10*time.Second); err != nil {
		return err
	}
	vigd, err := start("vigd", filepath.Join(data, "vigd.log"), filepath.Join(bin, "vigd"), "run", "-c", configFile)
	if err != nil {
		return err
	}
	defer vigd.stop()
	if err := waitHTTP(vigdHTTP+"/healthz", vigd, 15*time.Second); err != nil {
		return fmt.Errorf("%w (see %s)", err, filepath.Join(data, "vigd.log"))
	}
	fmt.Printf("running: eventstore-sim on %s, vigd (config %s, logs in %s)\n\n", simAddr, configFile, filepath.Join(data, "vigd.log"))

	for _, in := range []struct{ file, addr, what string }{
		{toa5, toa5Port, "TOA5 table → decoder toa5-station"},
		{tob1, tob1Port, "TOB1 table → decoder tob1-station"},
	} {
		b, err := os.ReadFile(in.file)
		if err != nil {
			return err
		}
		if err := send(in.addr, b); err != nil {
			return fmt.Errorf("send %s: %w", in.file, err)
		}
		fmt.Printf("sent %-34s %6d bytes to %s\n", in.what, len(b), in.addr)
	}
	lines, err := readLines(nmea)
	if err != nil {
		return err
	}
	c, err := net.Dial("tcp", nmeaPort)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := c.Write([]byte(l + "\r\n")); err != nil {
			return err
		}
	}
	c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(io.Discard, c)
	c.Close()
	fmt.Printf("sent %-34s %6d lines to %s\n\n", "NMEA sentences → decoder nmea-gps", len(lines), nmeaPort)

	cl := &sim.Client{BaseURL: "http://" + simAddr}
	if err := waitSettled(cl, vigd); err != nil {
		return err
	}
	return summary(cl, lines)
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimRight(sc.Text(), "\r"); l != "" {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// waitSettled waits until vigd's queues are empty and the simulator's
// counts have not moved for two seconds.
func waitSettled(cl *sim.Client, vigd *proc) error {
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	last, stable := "", 0
	for time.Now().Before(deadline) {
		select {
		case <-vigd.done:
			return fmt.Errorf("vigd exited: %v", vigd.exitEr)
		default:
		}
		counts, err := cl.Counts(ctx)
		if err == nil {
			b, _ := json.Marshal(counts.Accepted)
			cur := string(b) + backlog()
			if cur == last && strings.HasSuffix(cur, "backlog 0 records") {
				stable++
				if stable >= 4 {
					return nil
				}
			} else {
				stable = 0
			}
			last = cur
		}
		time.Sleep(500 * time.Millisecond)
	}
	return errors.New("the simulator's counts did not settle within 60 s (see demo-data/vigd.log)")
}

// backlog reads the queue depth from vigd's /readyz report.
func backlog() string {
	resp, err := http.Get(vigdHTTP + "/readyz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var total int
	for _, l := range strings.Split(string(b), "\n") {
		var n int
		if i := strings.Index(l, "backlog "); i >= 0 {
			fmt.Sscanf(l[i+len("backlog "):], "%d", &n)
			total += n
		}
	}
	return fmt.Sprintf(" backlog %d records", total)
}
