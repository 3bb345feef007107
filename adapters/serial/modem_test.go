package serial

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/serial/sbdmodem/sbdmodemtest"
	"github.com/vigd/vigd/internal/testpeers"
)

const testIMEI = "300234010000010"

// modemRig is a socat pty pair with the modem emulator serving the B end.
type modemRig struct {
	pty *testpeers.Socat
	em  *sbdmodemtest.Emulator
}

func newModemRig(t *testing.T) *modemRig {
	t.Helper()
	pty := startPair(t)
	dev := openDevice(t, pty.B)
	em := sbdmodemtest.New(testIMEI)
	var wg sync.WaitGroup
	wg.Go(func() { _ = em.Serve(dev) })
	t.Cleanup(func() {
		dev.Close()
		wg.Wait()
	})
	return &modemRig{pty: pty, em: em}
}

// config is a quick sbd-modem config: the schedule (1h) never fires in a
// test, so every session is the start-up check, a retry, a ring or an
// immediate follow-up.
func (r *modemRig) config() *Config {
	c := testConfig(r.pty.A)
	c.Mode = ModeSBDModem
	c.Modem.CheckInterval = time.Hour
	c.Modem.SessionTimeout = 3 * time.Second
	c.Modem.CommandTimeout = time.Second
	c.Modem.RetryMin = 100 * time.Millisecond
	c.Modem.RetryMax = 300 * time.Millisecond
	c.Modem.BusyRetry = 50 * time.Millisecond
	return c
}

func sample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testpeers.Sample(t, name))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// waitCmd waits until the emulator has seen cmd n times.
func waitCmd(t *testing.T, em *sbdmodemtest.Emulator, cmd string, n int) {
	t.Helper()
	if !em.WaitFor(10*time.Second, func(c []string) bool { return count(c, cmd) >= n }) {
		t.Fatalf("emulator saw %q %d times, want %d; commands %q", cmd, em.Count(cmd), n, em.Commands())
	}
}

func count(cmds []string, cmd string) int {
	n := 0
	for _, c := range cmds {
		if c == cmd {
			n++
		}
	}
	return n
}

// after returns the commands after the first occurrence of cmd.
func after(cmds []string, cmd string) []string {
	i := slices.Index(cmds, cmd)
	if i < 0 {
		return nil
	}
	return cmds[i+1:]
}

// TestModemHello: the waiting message of at_sbdrb_hello.hex (the SBDRB
// response, byte for byte) is read, its checksum verified, emitted with
// the modem metadata, and the MT buffer cleared after the durable emit.
func TestModemHello(t *testing.T) {
	rig := newModemRig(t)
	rig.em.QueueSBDRB(sample(t, "at_sbdrb_hello.hex"))
	sink := newSink()
	a := run(t, rig.config(), sink, adapters.Env{StateDir: t.TempDir()})

	f := sink.waitStored(t, 1, 10*time.Second)[0]
	if string(f.Payload) != "Hello" {
		t.Fatalf("payload %q", f.Payload)
	}
	wantMeta := map[string]string{"port": rig.pty.A, "transport": "sbd-modem", "imei": testIMEI, "mtmsn": "237", "momsn": "22", "mt_queued": "0"}
	for k, v := range wantMeta {
		if f.Meta[k] != v {
			t.Errorf("meta %s = %q, want %q (all: %v)", k, f.Meta[k], v, f.Meta)
		}
	}
	if f.Identity != testIMEI || f.Kind != Kind || f.Source != rig.pty.A || f.Offset != -1 {
		t.Errorf("frame identity %q kind %q source %q offset %d", f.Identity, f.Kind, f.Source, f.Offset)
	}
	waitCmd(t, rig.em, "AT+SBDD1", 1)
	want := []string{"AT", "ATE0", "AT&K0", "AT+SBDMTA=1", "AT+CGSN", "AT+SBDSX", "AT+SBDIX", "AT+SBDRB", "AT+SBDD1"}
	if got := rig.em.Commands(); !slices.Equal(got, want) {
		t.Fatalf("commands %q, want %q", got, want)
	}
	if !rig.em.RingAlerts() {
		t.Fatal("ring alerts not turned on")
	}
	if b := rig.em.MTBuffer(); b != nil {
		t.Fatalf("MT buffer not cleared: %x", b)
	}
	if st := a.Status(); !st.OK || !strings.Contains(st.Detail, testIMEI) {
		t.Fatalf("status %+v", st)
	}
	if value(t, a.m.frames) != 1 || value(t, a.m.sessions.WithLabelValues("success")) != 1 {
		t.Fatalf("frames %v sessions %v", value(t, a.m.frames), value(t, a.m.sessions.WithLabelValues("success")))
	}
}

// TestModemClearOnlyAfterDurable: AT+SBDD is sent only after the sink
// returned a durable result. While Emit blocks the emulator sees no SBDD;
// after a non-durable error the buffer is kept, read again later (no new
// session overwrites it) and cleared once stored.
func TestModemClearOnlyAfterDurable(t *testing.T) {
	rig := newModemRig(t)
	rig.em.Queue([]byte("first"))
	sink := newSink()
	gate := make(chan struct{})
	sink.gate = gate
	sink.results = []error{errors.New("disk full")}
	run(t, rig.config(), sink, adapters.Env{})

	select {
	case f := <-sink.got:
		if string(f.Payload) != "first" {
			t.Fatalf("payload %q", f.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing emitted")
	}
	time.Sleep(400 * time.Millisecond) // Emit blocks; the adapter must wait
	if n := rig.em.Count("AT+SBDD1"); n != 0 {
		t.Fatalf("AT+SBDD1 sent %d times while Emit was blocked", n)
	}
	if rig.em.MTBuffer() == nil {
		t.Fatal("MT buffer cleared while Emit was blocked")
	}
	close(gate) // the first Emit now fails (disk full), the retry succeeds
	f := sink.waitStored(t, 1, 10*time.Second)[0]
	if string(f.Payload) != "first" {
		t.Fatalf("stored %q", f.Payload)
	}
	waitCmd(t, rig.em, "AT+SBDD1", 1)
	cmds := rig.em.Commands()
	// After the session: read, (failed emit), read again, clear — no
	// session in between that would have overwritten the buffer.
	if got, want := after(cmds, "AT+SBDIX"), []string{"AT+SBDRB", "AT+SBDRB", "AT+SBDD1"}; !slices.Equal(got, want) {
		t.Fatalf("commands after the session %q, want %q", got, want)
	}
	sink.mu.Lock()
	calls := sink.calls
	sink.mu.Unlock()
	if calls != 2 || len(sink.stored()) != 1 {
		t.Fatalf("%d emits, %d stored; want 2 and 1", calls, len(sink.stored()))
	}
}

// TestModemBadChecksum: damaged reads are never emitted and the buffer is
// not cleared; after read_attempts damaged reads the message is left for
// the retry, which reads it whole.
func TestModemBadChecksum(t *testing.T) {
	rig := newModemRig(t)
	rig.em.QueueSBDRB(sample(t, "at_sbdrb_hello.hex"))
	rig.em.CorruptReads(4) // read_attempts is 3: one whole check and one read of the retry
	sink := newSink()
	a := run(t, rig.config(), sink, adapters.Env{})

	f := sink.waitStored(t, 1, 10*time.Second)[0]
	if string(f.Payload) != "Hello" {
		t.Fatalf("payload %q", f.Payload)
	}
	waitCmd(t, rig.em, "AT+SBDD1", 1)
	cmds := rig.em.Commands()
	if got, want := after(cmds, "AT+SBDIX"), []string{"AT+SBDRB", "AT+SBDRB", "AT+SBDRB", "AT+SBDRB", "AT+SBDRB", "AT+SBDD1"}; !slices.Equal(got, want) {
		t.Fatalf("commands after the session %q, want %q", got, want)
	}
	sink.mu.Lock()
	calls := sink.calls
	sink.mu.Unlock()
	if calls != 1 {
		t.Fatalf("%d emits, want 1 (damaged data is never emitted)", calls)
	}
	if n := value(t, a.m.frameErrors.WithLabelValues("bad_checksum")); n != 4 {
		t.Fatalf("bad_checksum count %v, want 4", n)
	}
}

// TestModemRetries: +SBDIX 32 (no network service) is retried later with
// backoff, 35 (busy) soon, and nothing is read from the MT buffer after a
// failed session; the message arrives with the first good session.
func TestModemRetries(t *testing.T) {
	rig := newModemRig(t)
	rig.em.Fail(32, 32, 35)
	rig.em.Queue([]byte("after the outage"))
	sink := newSink()
	a := run(t, rig.config(), sink, adapters.Env{})

	f := sink.waitStored(t, 1, 10*time.Second)[0]
	if string(f.Payload) != "after the outage" {
		t.Fatalf("payload %q", f.Payload)
	}
	waitCmd(t, rig.em, "AT+SBDD1", 1)
	cmds := after(rig.em.Commands(), "AT+SBDSX")
	if want := []string{"AT+SBDIX", "AT+SBDIX", "AT+SBDIX", "AT+SBDIX", "AT+SBDRB", "AT+SBDD1"}; !slices.Equal(cmds, want) {
		t.Fatalf("commands %q, want %q", cmds, want)
	}
	for result, want := range map[string]float64{"retry": 2, "busy": 1, "success": 1} {
		if n := value(t, a.m.sessions.WithLabelValues(result)); n != want {
			t.Errorf("sessions %s = %v, want %v", result, n, want)
		}
	}
	if st := a.Status(); !st.OK || !strings.Contains(st.Detail, "last check") {
		t.Fatalf("status %+v", st)
	}
}

// TestModemRing: an unsolicited ring alert starts a session at once, with
// AT+SBDIXA, although the schedule is an hour away.
func TestModemRing(t *testing.T) {
	rig := newModemRig(t)
	sink := newSink()
	run(t, rig.config(), sink, adapters.Env{})
	waitCmd(t, rig.em, "AT+SBDIX", 1) // the start-up check: nothing waiting
	time.Sleep(100 * time.Millisecond)
	rig.em.Queue([]byte("rang"))
	if err := rig.em.Ring(); err != nil {
		t.Fatal(err)
	}
	f := sink.waitStored(t, 1, 10*time.Second)[0]
	if string(f.Payload) != "rang" {
		t.Fatalf("payload %q", f.Payload)
	}
	waitCmd(t, rig.em, "AT+SBDD1", 1)
	if got, want := after(rig.em.Commands(), "AT+SBDSX"), []string{"AT+SBDIX", "AT+SBDIXA", "AT+SBDRB", "AT+SBDD1"}; !slices.Equal(got, want) {
		t.Fatalf("commands %q, want %q", got, want)
	}
}

// TestModemQueued: while +SBDIX reports more messages queued at the
// gateway, the next session follows at once.
func TestModemQueued(t *testing.T) {
	rig := newModemRig(t)
	for _, m := range []string{"m1", "m2", "m3"} {
		rig.em.Queue([]byte(m))
	}
	sink := newSink()
	run(t, rig.config(), sink, adapters.Env{})
	got := sink.waitStored(t, 3, 10*time.Second)
	for i, f := range got {
		wantQ := []string{"2", "1", "0"}[i]
		wantMT := []string{"237", "238", "239"}[i]
		if string(f.Payload) != []string{"m1", "m2", "m3"}[i] || f.Meta["mt_queued"] != wantQ || f.Meta["mtmsn"] != wantMT {
			t.Errorf("frame %d: %q meta %v", i, f.Payload, f.Meta)
		}
	}
	waitCmd(t, rig.em, "AT+SBDD1", 3)
	time.Sleep(200 * time.Millisecond)
	want := []string{"AT+SBDIX", "AT+SBDRB", "AT+SBDD1", "AT+SBDIX", "AT+SBDRB", "AT+SBDD1", "AT+SBDIX", "AT+SBDRB", "AT+SBDD1"}
	if cmds := after(rig.em.Commands(), "AT+SBDSX"); !slices.Equal(cmds, want) {
		t.Fatalf("commands %q, want %q", cmds, want)
	}
	if rig.em.Mailbox() != 0 {
		t.Fatal("messages left at the gateway")
	}
}

// TestModemRestart: a message left in the MT buffer by a previous run is
// found with AT+SBDSX at start: emitted when it was never stored, only
// cleared when the state folder says it was.
func TestModemRestart(t *testing.T) {
	for _, stored := range []bool{false, true} {
		name := "not stored before"
		if stored {
			name = "stored before"
		}
		t.Run(name, func(t *testing.T) {
			rig := newModemRig(t)
			rig.em.Queue([]byte("left behind"))
			state := t.TempDir()

			// First run: the sink cannot store anything; stop it.
			failing := adapters.SinkFunc(func(ctx context.Context, f *adapters.Frame) error {
				return errors.New("disk full")
			})
			a1, err := New("first", rig.config(), adapters.Env{StateDir: state, Log: logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a1.Run(ctx, failing) }()
			waitCmd(t, rig.em, "AT+SBDRB", 1)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if rig.em.MTBuffer() == nil || rig.em.Count("AT+SBDD1") != 0 {
				t.Fatal("the first run cleared a message it did not store")
			}
			if stored {
				// As if the first run had stored it and died before the
				// clear.
				if err := os.WriteFile(filepath.Join(state, stateFile), []byte("237\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			n1 := len(rig.em.Commands())

			sink := newSink()
			run(t, rig.config(), sink, adapters.Env{StateDir: state})
			waitCmd(t, rig.em, "AT+SBDIX", 2) // the second run's start-up check
			if !stored {
				f := sink.waitStored(t, 1, 10*time.Second)[0]
				if string(f.Payload) != "left behind" || f.Meta["mtmsn"] != "237" {
					t.Fatalf("frame %q meta %v", f.Payload, f.Meta)
				}
				b, err := os.ReadFile(filepath.Join(state, stateFile))
				if err != nil || strings.TrimSpace(string(b)) != "237" {
					t.Fatalf("state file %q %v", b, err)
				}
			}
			time.Sleep(100 * time.Millisecond)
			if stored && len(sink.stored()) != 0 {
				t.Fatalf("a message stored before was emitted again: %q", payloads(sink.stored()))
			}
			// The left message is handled before any new session, which
			// would overwrite the buffer.
			want := []string{"AT", "ATE0", "AT&K0", "AT+SBDMTA=1", "AT+CGSN", "AT+SBDSX", "AT+SBDRB", "AT+SBDD1", "AT+SBDIX"}
			if stored {
				want = slices.Delete(want, 6, 7)
			}
			if got := rig.em.Commands()[n1:]; !slices.Equal(got, want) {
				t.Fatalf("second run's commands %q, want %q", got, want)
			}
		})
	}
}

// TestModemUnplug: the modem's port vanishes (socat killed) and comes
// back; the adapter reopens it, initialises the modem again and reads the
// message that waited meanwhile, once.
func TestModemUnplug(t *testing.T) {
	rig := newModemRig(t)
	sink := newSink()
	a := run(t, rig.config(), sink, adapters.Env{})
	waitCmd(t, rig.em, "AT+SBDIX", 1)
	waitStatus(t, a, true, 5*time.Second)

	rig.pty.Kill()
	waitStatus(t, a, false, 5*time.Second)
	rig.em.Queue([]byte("while unplugged"))
	rig.pty.Start()
	dev := openDevice(t, rig.pty.B)
	var wg sync.WaitGroup
	wg.Go(func() { _ = rig.em.Serve(dev) })
	t.Cleanup(func() {
		dev.Close()
		wg.Wait()
	})
	reconnect := waitStatus(t, a, true, 5*time.Second)
	f := sink.waitStored(t, 1, 10*time.Second)[0]
	if string(f.Payload) != "while unplugged" {
		t.Fatalf("payload %q", f.Payload)
	}
	waitCmd(t, rig.em, "AT+SBDD1", 1)
	if n := rig.em.Count("AT+CGSN"); n != 2 {
		t.Fatalf("modem initialised %d times, want 2", n)
	}
	if n := len(sink.stored()); n != 1 {
		t.Fatalf("%d frames stored, want 1", n)
	}
	if value(t, a.m.reopens) < 1 {
		t.Fatal("reopen not counted")
	}
	t.Logf("FIGURES: modem ready again %s after socat restart", reconnect.Round(time.Millisecond))
}

// TestModemHung: a modem that stops answering is given up after three
// timeouts in a row: the port is closed, opened again and the modem
// initialised again once it answers.
func TestModemHung(t *testing.T) {
	rig := newModemRig(t)
	cfg := rig.config()
	cfg.Modem.SessionTimeout = 150 * time.Millisecond
	cfg.Modem.CommandTimeout = 150 * time.Millisecond
	sink := newSink()
	a := run(t, cfg, sink, adapters.Env{})
	waitCmd(t, rig.em, "AT+SBDIX", 1)
	waitStatus(t, a, true, 5*time.Second)
	rig.em.Mute(true)
	if err := rig.em.Ring(); err != nil { // a session now, which times out
		t.Fatal(err)
	}
	waitStatus(t, a, false, 10*time.Second)
	if st := a.Status(); !strings.Contains(st.Detail, "stopped answering") && !strings.Contains(st.Detail, "initialising") {
		t.Fatalf("status %+v", st)
	}
	rig.em.Queue([]byte("after the hang"))
	rig.em.Mute(false)
	waitStatus(t, a, true, 10*time.Second)
	f := sink.waitStored(t, 1, 10*time.Second)[0]
	if string(f.Payload) != "after the hang" {
		t.Fatalf("payload %q", f.Payload)
	}
	if value(t, a.m.portErrors.WithLabelValues("modem")) < 1 {
		t.Fatal("modem failure not counted")
	}
}
