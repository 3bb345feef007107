package testpeers

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Socat is a pair of linked pseudo-terminals made by socat for one test:
// bytes written to one side are read on the other, as over a null-modem
// cable. A is DIR/ttyA (give it to the adapter under test), B is DIR/ttyB
// (the test plays the device there). Both are symbolic links to /dev/pts/N,
// like the /dev/serial/by-id names of USB adapters.
//
// Kill makes both vanish at once, as unplugging a USB serial adapter does:
// open file descriptors on them fail (EIO) and the links are gone. Start
// brings a new pair back under the same link names (other /dev/pts numbers).
type Socat struct {
	// A and B are the link paths of the two ends.
	A, B string
	// Dir holds the links and socat's log.
	Dir string

	t   testing.TB
	bin string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// StartSocat starts socat (skipping the test when it is not installed,
// outside CI) and waits until both links exist. It is killed when the test
// ends.
func StartSocat(t testing.TB) *Socat {
	t.Helper()
	bin := Require(t, "socat", "socat")
	dir := t.TempDir()
	s := &Socat{A: filepath.Join(dir, "ttyA"), B: filepath.Join(dir, "ttyB"), Dir: dir, t: t, bin: bin}
	if err := s.start(); err != nil {
		t.Fatalf("socat: %v\n%s", err, s.Log())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("socat log (%s):\n%s", s.Dir, s.Log())
		}
		s.Kill()
	})
	return s
}

// Start starts socat again after Kill, with the same link names, and waits
// until both links exist.
func (s *Socat) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("socat restart: %v\n%s", err, s.Log())
	}
}

// Kill ends socat with SIGKILL and waits for it. socat cannot remove its
// links after SIGKILL, so Kill removes them: both ends vanish, as a USB
// adapter's device nodes do when it is unplugged.
func (s *Socat) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Signal(syscall.SIGKILL)
			<-s.exited
		}
	}
	_ = os.Remove(s.A)
	_ = os.Remove(s.B)
}

// Restart is Kill then Start.
func (s *Socat) Restart() {
	s.t.Helper()
	s.Kill()
	s.Start()
}

// Running reports whether socat is alive.
func (s *Socat) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Log returns what socat wrote so far (all runs; -d -d names the ptys).
func (s *Socat) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "socat.log"))
	return string(b)
}

func (s *Socat) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		select {
		case <-s.exited:
		default:
			return errors.New("already running")
		}
	}
	// Stale links (a previous run killed from outside) would satisfy the
	// wait below before socat made its own.
	_ = os.Remove(s.A)
	_ = os.Remove(s.B)
	logf, err := os.OpenFile(filepath.Join(s.Dir, "socat.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "---- start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.bin, "-d", "-d",
		"pty,raw,echo=0,link="+s.A,
		"pty,raw,echo=0,link="+s.B)
	cmd.Dir = s.Dir
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
	s.cmd, s.exited = cmd, exited

	deadline := time.Now().Add(10 * time.Second)
	for {
		// Stat follows the link: the pty behind it must exist too.
		_, errA := os.Stat(s.A)
		_, errB := os.Stat(s.B)
		if errA == nil && errB == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("socat exited at start")
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("socat made no links within 10s (%v, %v)", errA, errB)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
