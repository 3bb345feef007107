package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const thing = `{"things":[{"name":"FST1","sensusID":"FST1@047"}]}`

func post(t *testing.T, url, id, secret string) *sim.Response {
	t.Helper()
	c := &sim.Client{BaseURL: url, ServiceID: id, Secret: signer.NewSecret(secret)}
	r, err := c.Post(context.Background(), sim.Things, []byte(thing), &sim.PostOptions{Gzip: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRunInProcess(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-data", dir, "-service", "svc=k", "-service", "other=x",
			"-rate", "0", "-max-bytes", "64KiB", "-log-level", "warn",
			"-fault", `{"kind":"fail","status":503,"count":1,"retryAfter":"1"}`}, pw, &stderr)
		pw.Close()
	}()
	url, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	url = strings.TrimSpace(url)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("printed %q", url)
	}
	if r := post(t, url, "svc", "k"); r.Status != 503 || r.Header.Get("Retry-After") != "1" {
		t.Fatalf("fault from flag: %d", r.Status)
	}
	if r := post(t, url, "svc", "k"); r.Status != 200 {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	if r := post(t, url, "svc", "wrong"); r.Status != 401 {
		t.Fatalf("status %d", r.Status)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "things.jsonl"))
	if err != nil || bytes.Count(b, []byte("\n")) != 1 {
		t.Fatalf("things.jsonl %q %v", b, err)
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "creds")
	os.WriteFile(secretFile, []byte("# services\nsvc=ok\nTOPSECRETLINE\n"), 0o600)
	for name, args := range map[string][]string{
		"no services":  {"-data", dir},
		"bad service":  {"-data", dir, "-service", "nosecret"},
		"missing file": {"-data", dir, "-service", "a=@" + filepath.Join(dir, "nope")},
		"bad size":     {"-data", dir, "-service", "a=b", "-max-bytes", "lots"},
		"bad fault":    {"-data", dir, "-service", "a=b", "-fault", `{"kind":"fail","bogus":1}`},
		"bad lines":    {"-data", dir, "-service", "a=b", "-sign-lines", "method,body"},
		"bad level":    {"-data", dir, "-service", "a=b", "-log-level", "loud"},
		"secret file":  {"-data", dir, "-secret-file", secretFile},
		"extra arg":    {"-data", dir, "-service", "a=b", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%s: exit %d: %s", name, code, errb.String())
		}
		if strings.Contains(errb.String(), "TOPSECRET") {
			t.Errorf("%s: secret in message: %s", name, errb.String())
		}
	}
	// A fault that parses but is invalid fails at start with 1.
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"-data", dir, "-service", "a=b", "-fault", `{"kind":"explode"}`}, io.Discard, &errb); code != 1 {
		t.Errorf("invalid fault: exit %d", code)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4MiB": 4 << 20, "65536": 65536, "10KB": 10000, "1GiB": 1 << 30, "5 MiB": 5 << 20, "7B": 7} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "0", "4TiB", "1.5MiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}

// TestBinarySIGTERM runs the built program as a user would: it prints its
// URL, accepts a signed request, stops cleanly on SIGTERM, and has the data
// after a restart.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := testpeers.Binary(t, "eventstore-sim")
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	if err := os.WriteFile(creds, []byte("svc=s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() (*exec.Cmd, string, *bytes.Buffer) {
		cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-data", filepath.Join(dir, "data"), "-secret-file", creds)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatalf("no URL printed: %v\n%s", err, stderr.String())
		}
		return cmd, strings.TrimSpace(line), &stderr
	}
	stop := func(cmd *exec.Cmd, stderr *bytes.Buffer) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- cmd.Wait() }()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("exit: %v\n%s", err, stderr.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatal("did not stop on SIGTERM")
		}
	}
	cmd, url, stderr := start()
	if r := post(t, url, "svc", "s3cr3t"); r.Status != 200 {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	stop(cmd, stderr)
	if !strings.Contains(stderr.String(), "stopped") {
		t.Fatalf("log: %s", stderr.String())
	}

	cmd, url, stderr = start()
	c, err := (&sim.Client{BaseURL: url}).Counts(context.Background())
	if err != nil || c.Accepted[sim.Things] != 1 || c.Entities[sim.Things] != 1 {
		t.Fatalf("after restart %+v %v", c, err)
	}
	stop(cmd, stderr)
}
