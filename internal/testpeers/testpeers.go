// Package testpeers finds the real programs integration tests talk to
// (mosquitto, socat, dovecot, systemd-analyze, qemu) and builds the project's
// own binaries for tests that run them as a user would.
//
// Outside CI a missing program skips the test and says why; in CI (CI=true,
// set by .ci/run, which installs them all) it fails the test, so a green CI
// never hides a test that did not run.
package testpeers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// InCI reports whether the tests run under .ci/run.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require returns the path of program, or skips (outside CI) / fails (in CI)
// the test when it is not installed. pkg is the Debian package that has it.
func Require(t testing.TB, program, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if c := filepath.Join(dir, program); isExec(c) {
			return c
		}
	}
	msg := program + " is not installed (apt-get install -y " + pkg + "); .ci/run installs it"
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip("skipped: " + msg)
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeAddr is FreePort as "127.0.0.1:PORT".
func FreeAddr(t testing.TB) string {
	return "127.0.0.1:" + strconv.Itoa(FreePort(t))
}

// RepoRoot is the module's root folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// SharedDir is ../shared beside the repository, or "" when this clone has
// none (sample-driven tests then skip and say so).
func SharedDir() string {
	d := filepath.Join(RepoRoot(), "..", "shared")
	if st, err := os.Stat(filepath.Join(d, "samples")); err == nil && st.IsDir() {
		return d
	}
	return ""
}

// Sample returns the path of ../shared/samples/name, or skips the test when
// this clone has no ../shared (never in CI, which always has it).
func Sample(t testing.TB, name string) string {
	t.Helper()
	d := SharedDir()
	if d == "" {
		if InCI() {
			t.Fatal("../shared/samples is missing in CI")
		}
		t.Skip("skipped: ../shared/samples not found beside the repository (sample-driven test)")
	}
	return filepath.Join(d, "samples", name)
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Binary builds ./cmd/NAME once per test process and returns its path.
// Every test process of one checkout shares one folder
// ($TMPDIR/vigd-test-bin-<hash of the checkout's path>): each builds into a
// file of its own and renames it into place, so concurrent packages never
// see a half-written binary, a running one keeps its file, and the folder
// does not grow with every run.
func Binary(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	sum := sha256.Sum256([]byte(RepoRoot()))
	dir := filepath.Join(os.TempDir(), "vigd-test-bin-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "./cmd/"+name)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		t.Fatal(err)
	}
	built[name] = out
	return out
}
