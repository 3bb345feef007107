package testpeers

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MosquittoOptions says how StartMosquitto configures the broker.
type MosquittoOptions struct {
	// Persistence keeps sessions, subscriptions and queued messages in the
	// broker's folder. Mosquitto writes the file on SIGTERM (Stop), not on
	// SIGKILL (Kill), so Kill then Start loses what was not saved before.
	Persistence bool
	// TLS adds a second listener (TLSPort) that speaks TLS with these files.
	TLS *MosquittoTLS
	// Config holds extra global lines for mosquitto.conf
	// ("max_inflight_messages 10", "password_file /path").
	Config []string
	// NoAnonymous refuses clients without a username (pair it with a
	// "password_file" line in Config).
	NoAnonymous bool
}

// MosquittoTLS names the PEM files of the TLS listener.
type MosquittoTLS struct {
	CAFile, CertFile, KeyFile string
	// RequireCertificate makes the broker ask for and verify a client
	// certificate signed by CAFile.
	RequireCertificate bool
}

// Mosquitto is a broker started for one test, on free loopback ports, in a
// temporary folder. It is stopped when the test ends. Stop, Kill, Start and
// Restart act on the same ports and folder, so clients reconnect to "the
// same broker" as after a real restart.
type Mosquitto struct {
	// Port is the plain MQTT listener; TLSPort the TLS one (0 without TLS).
	Port, TLSPort int
	// Dir is the broker's folder: config, log, persistence file.
	Dir string

	t    testing.TB
	bin  string
	opts MosquittoOptions

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// StartMosquitto starts a broker (skipping the test when mosquitto is not
// installed, outside CI) and waits until it accepts connections.
func StartMosquitto(t testing.TB, opts MosquittoOptions) *Mosquitto {
	t.Helper()
	bin := Require(t, "mosquitto", "mosquitto")
	m := &Mosquitto{Dir: t.TempDir(), t: t, bin: bin, opts: opts}
	// A free port can be taken between FreePort and the broker's bind; try a
	// few times on the first start only (a restart must keep its port).
	var err error
	for range 3 {
		m.Port = FreePort(t)
		if opts.TLS != nil {
			m.TLSPort = FreePort(t)
		}
		if err = m.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("mosquitto: %v\n%s", err, m.Log())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mosquitto log (%s):\n%s", m.Dir, mosqTail(m.Log(), 60))
		}
		m.Kill()
	})
	return m
}

// Addr is "127.0.0.1:Port".
func (m *Mosquitto) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.Port) }

// URL is the plain listener as a client URL ("tcp://127.0.0.1:PORT").
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr() }

// TLSURL is the TLS listener as a client URL ("ssl://127.0.0.1:PORT").
func (m *Mosquitto) TLSURL() string { return "ssl://127.0.0.1:" + strconv.Itoa(m.TLSPort) }

// Start starts the broker again after Stop or Kill, on the same ports.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if err := m.start(); err != nil {
		m.t.Fatalf("mosquitto restart: %v\n%s", err, mosqTail(m.Log(), 30))
	}
}

// Stop sends SIGTERM (the broker saves its persistence file) and waits for
// the process to end.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

// Kill sends SIGKILL (nothing is saved) and waits for the process to end.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

// Restart is Stop then Start.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.Start()
}

// Running reports whether the broker process is alive.
func (m *Mosquitto) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// Log returns what the broker wrote so far (all runs).
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(filepath.Join(m.Dir, "mosquitto.log"))
	return string(b)
}

func (m *Mosquitto) writeConfig() (string, error) {
	var b strings.Builder
	for _, l := range m.opts.Config {
		b.WriteString(l + "\n")
	}
	if os.Geteuid() == 0 {
		// As root Mosquitto drops to the "mosquitto" user, which cannot
		// write the test's private folder.
		b.WriteString("user root\n")
	}
	fmt.Fprintf(&b, "allow_anonymous %v\n", !m.opts.NoAnonymous)
	if m.opts.Persistence {
		fmt.Fprintf(&b, "persistence true\npersistence_location %s/\n", m.Dir)
	} else {
		b.WriteString("persistence false\n")
	}
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", m.Port)
	if tl := m.opts.TLS; tl != nil {
		// Listener options apply to the listener line before them.
		fmt.Fprintf(&b, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate %v\n",
			m.TLSPort, tl.CAFile, tl.CertFile, tl.KeyFile, tl.RequireCertificate)
	}
	p := filepath.Join(m.Dir, "mosquitto.conf")
	return p, os.WriteFile(p, []byte(b.String()), 0o600)
}

func (m *Mosquitto) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		select {
		case <-m.exited:
		default:
			return fmt.Errorf("already running")
		}
	}
	conf, err := m.writeConfig()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(m.Dir, "mosquitto.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "---- start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(m.bin, "-c", conf)
	cmd.Dir = m.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	m.cmd, m.exited = cmd, exited

	ports := []int{m.Port}
	if m.TLSPort != 0 {
		ports = append(ports, m.TLSPort)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, port := range ports {
		addr := "127.0.0.1:" + strconv.Itoa(port)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				return fmt.Errorf("mosquitto exited at start (port %d)", port)
			default:
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				<-exited
				return fmt.Errorf("mosquitto does not listen on %s: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (m *Mosquitto) signal(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	select {
	case <-m.exited:
		return
	default:
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

func mosqTail(s string, n int) string {
	lines := bytes.Split([]byte(strings.TrimRight(s, "\n")), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
