package serial

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bugst "go.bug.st/serial"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/framing"
)

// writeChunks writes b in odd-sized pieces with a pause between them, as
// a slow device on a 9600 baud line does.
func writeChunks(t *testing.T, w io.Writer, b []byte, pause time.Duration) {
	t.Helper()
	sizes := []int{1, 3, 7, 2, 13, 5, 11}
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		if _, err := w.Write(b[:n]); err != nil {
			t.Fatalf("device write: %v", err)
		}
		b = b[n:]
		time.Sleep(pause)
	}
}

// openDevice9600 opens the device end with go.bug.st/serial at 9600 8N1.
func openDevice9600(t *testing.T, path string) bugst.Port {
	t.Helper()
	p, err := bugst.Open(path, &bugst.Mode{BaudRate: 9600, DataBits: 8, Parity: bugst.NoParity, StopBits: bugst.OneStopBit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type want struct {
	off  int64
	data string
}

// TestFramesChunked: frames written at 9600 baud in odd-sized chunks with
// small sleeps decode exactly, with their byte offsets, for line,
// length-prefixed binary and idle-gap framings.
func TestFramesChunked(t *testing.T) {
	long := strings.Repeat("0123456789", 30)

	var lenStream []byte
	var lenWant []want
	for _, body := range []string{"\x00\x01\x02", "line\nbreak\r\n", "\xc0\xdb\xff" + long, "x"} {
		lenWant = append(lenWant, want{int64(len(lenStream)), body})
		lenStream = binary.BigEndian.AppendUint16(lenStream, uint16(len(body)))
		lenStream = append(lenStream, body...)
	}

	cases := []struct {
		name    string
		framing framing.Config
		// bursts are written one after another; with the idle framing a
		// silence of 4 gaps separates them.
		bursts [][]byte
		want   []want
	}{
		{
			name:    "line",
			framing: framing.Config{Type: framing.TypeLine},
			bursts:  [][]byte{[]byte("alpha\nbeta,1,2,3\r\n" + long + "\n\ngamma\n")},
			want:    []want{{0, "alpha"}, {6, "beta,1,2,3"}, {18, long}, {320, "gamma"}},
		},
		{
			name:    "length-prefixed binary",
			framing: framing.Config{Type: framing.TypeLength, LengthBytes: 2},
			bursts:  [][]byte{lenStream},
			want:    lenWant,
		},
		{
			name:    "idle gap",
			framing: framing.Config{Type: framing.TypeIdle, Gap: 150 * time.Millisecond},
			bursts:  [][]byte{[]byte("burst one\n\x00"), []byte("\x01\x02\x03 binary"), []byte(long)},
			want:    []want{{0, "burst one\n\x00"}, {11, "\x01\x02\x03 binary"}, {21, long}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pty := startPair(t)
			cfg := testConfig(pty.A)
			cfg.Baud = 9600
			cfg.Framing = tc.framing
			cfg.Identity = "fixed:logger-9"
			sink := newSink()
			a := run(t, cfg, sink, adapters.Env{})
			waitStatus(t, a, true, 5*time.Second)
			dev := openDevice9600(t, pty.B)
			for i, b := range tc.bursts {
				if i > 0 {
					time.Sleep(4 * tc.framing.Gap)
				}
				// Well inside the idle gap: a burst stays one frame.
				writeChunks(t, dev, b, time.Millisecond)
			}
			got := sink.waitStored(t, len(tc.want), 10*time.Second)
			for i, f := range got {
				w := tc.want[i]
				if string(f.Payload) != w.data || f.Offset != w.off {
					t.Errorf("frame %d: %q @%d, want %q @%d", i, f.Payload, f.Offset, w.data, w.off)
				}
				if f.Kind != Kind || f.Source != pty.A || f.Identity != "logger-9" || f.Meta[MetaPort] != pty.A {
					t.Errorf("frame %d: kind %q source %q identity %q meta %v", i, f.Kind, f.Source, f.Identity, f.Meta)
				}
			}
			// Nothing more arrives (no frame split or duplicated).
			time.Sleep(3 * max(tc.framing.Gap, 50*time.Millisecond))
			if n := len(sink.stored()); n != len(tc.want) {
				t.Fatalf("%d frames stored, want %d: %q", n, len(tc.want), payloads(sink.stored()))
			}
		})
	}
}

// TestLineSettings: the port opens with each parity, data bits and stop
// bits setting (the pty ignores them on the wire but termios must take
// them) and frames pass.
func TestLineSettings(t *testing.T) {
	pty := startPair(t)
	settings := []struct {
		baud, bits int
		parity     string
		stop       float64
	}{
		{115200, 7, ParityEven, 2},
		{1200, 8, ParityOdd, 1},
		{4800, 8, ParityMark, 1},
		{9600, 8, ParitySpace, 2},
		{300, 5, ParityNone, 1.5},
	}
	dev := openDevice(t, pty.B)
	for i, s := range settings {
		cfg := testConfig(pty.A)
		cfg.Baud, cfg.DataBits, cfg.Parity, cfg.StopBits = s.baud, s.bits, s.parity, s.stop
		mode := cfg.portMode()
		p, err := bugst.Open(pty.A, mode)
		if err != nil {
			t.Fatalf("%+v: open: %v", s, err)
		}
		msg := fmt.Sprintf("setting-%d", i)
		if _, err := dev.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		_ = p.SetReadTimeout(2 * time.Second)
		var got []byte
		for len(got) < len(msg) {
			n, err := p.Read(buf)
			if err != nil || n == 0 {
				t.Fatalf("%+v: read %q, %v", s, got, err)
			}
			got = append(got, buf[:n]...)
		}
		p.Close()
		if string(got) != msg {
			t.Fatalf("%+v: got %q", s, got)
		}
	}
}

// TestReplyAfterDurable: the reply bytes go out only after Emit returned a
// durable result; a dead-lettered frame gets reply_rejected; a frame the
// sink could not store is emitted again and answered once.
func TestReplyAfterDurable(t *testing.T) {
	pty := startPair(t)
	cfg := testConfig(pty.A)
	cfg.Reply = `ACK\r\n`
	rej := "hex:15"
	cfg.ReplyRejected = &rej
	sink := newSink()
	gate := make(chan struct{})
	sink.gate = gate
	a := run(t, cfg, sink, adapters.Env{})
	waitStatus(t, a, true, 5*time.Second)
	dev := openDevice(t, pty.B)

	readReply := func(within time.Duration) []byte {
		t.Helper()
		if err := dev.SetReadDeadline(time.Now().Add(within)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := dev.Read(buf)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
		return buf[:n]
	}

	if _, err := dev.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-sink.got:
		if string(f.Payload) != "one" {
			t.Fatalf("got %q", f.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("frame not emitted")
	}
	// Emit is blocked: no reply may have been written.
	if b := readReply(300 * time.Millisecond); len(b) != 0 {
		t.Fatalf("reply %q before the emit returned", b)
	}
	close(gate)
	if b := readReply(5 * time.Second); string(b) != "ACK\r\n" {
		t.Fatalf("reply %q, want ACK CR LF", b)
	}

	// Dead-lettered: reply_rejected.
	sink.mu.Lock()
	sink.results = []error{&adapters.RejectedError{Reason: "no decoder"}}
	sink.mu.Unlock()
	if _, err := dev.Write([]byte("two\n")); err != nil {
		t.Fatal(err)
	}
	if b := readReply(5 * time.Second); !bytes.Equal(b, []byte{0x15}) {
		t.Fatalf("reply %q, want NAK", b)
	}

	// Not stored twice (disk full): no reply until the retry stored it.
	sink.mu.Lock()
	sink.results = []error{errors.New("disk full"), errors.New("disk full")}
	calls := sink.calls
	sink.mu.Unlock()
	if _, err := dev.Write([]byte("three\n")); err != nil {
		t.Fatal(err)
	}
	if b := readReply(5 * time.Second); string(b) != "ACK\r\n" {
		t.Fatalf("reply %q, want ACK after the retries", b)
	}
	if b := readReply(200 * time.Millisecond); len(b) != 0 {
		t.Fatalf("extra reply %q", b)
	}
	sink.mu.Lock()
	calls = sink.calls - calls
	sink.mu.Unlock()
	if calls != 3 {
		t.Fatalf("frame three emitted %d times, want 3 (two failures, one durable)", calls)
	}
	if got := payloads(sink.stored()); !slices.Equal(got, []string{"one", "two", "three"}) {
		t.Fatalf("stored %q", got)
	}
	if n := value(t, a.m.frameErrors.WithLabelValues("not_queued")); n != 2 {
		t.Fatalf("not_queued errors %v, want 2", n)
	}
}

// TestPortAppearsLater: a port missing at start is not fatal; the adapter
// opens it once it appears.
func TestPortAppearsLater(t *testing.T) {
	pty := startPair(t)
	pty.Kill()
	sink := newSink()
	a := run(t, testConfig(pty.A), sink, adapters.Env{})
	time.Sleep(150 * time.Millisecond)
	st := a.Status()
	if st.OK || !strings.Contains(st.Detail, "unavailable") {
		t.Fatalf("status %+v, want unavailable", st)
	}
	if value(t, a.m.open) != 0 {
		t.Fatal("port_open gauge is 1 while the port is missing")
	}
	pty.Start()
	waitStatus(t, a, true, 5*time.Second)
	if value(t, a.m.open) != 1 {
		t.Fatal("port_open gauge is 0 while the port is open")
	}
	dev := openDevice(t, pty.B)
	if _, err := dev.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if f := sink.waitStored(t, 1, 5*time.Second)[0]; string(f.Payload) != "hello" || f.Offset != 0 {
		t.Fatalf("got %q @%d", f.Payload, f.Offset)
	}
}

// TestUnplug kills socat mid-stream (both ptys vanish like an unplugged
// USB adapter) and starts it again: the adapter reports the outage,
// reopens the new pty behind the same name, and the frames sent after the
// reconnection arrive. Nothing is emitted twice; frames written into the
// old pty while it was being unplugged may be lost (counted, reported).
func TestUnplug(t *testing.T) {
	pty := startPair(t)
	sink := newSink()
	a := run(t, testConfig(pty.A), sink, adapters.Env{})
	waitStatus(t, a, true, 5*time.Second)
	reopens0 := value(t, a.m.reopens)

	dev := openDevice(t, pty.B)
	var sent []string
	send := func(f *os.File, i int) error {
		line := fmt.Sprintf("frame-%04d", i)
		_, err := f.Write([]byte(line + "\n"))
		if err == nil {
			sent = append(sent, line)
		}
		return err
	}
	// Phase 1: before the unplug.
	for i := range 20 {
		if err := send(dev, i); err != nil {
			t.Fatal(err)
		}
	}
	sink.waitStored(t, 20, 10*time.Second)

	// Phase 2: a device writing every 2ms while the adapter is unplugged.
	var wg sync.WaitGroup
	writerDone := make(chan int)
	wg.Go(func() {
		i := 20
		for ; i < 10000; i++ {
			if send(dev, i) != nil {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		writerDone <- i
	})
	time.Sleep(60 * time.Millisecond)
	pty.Kill()
	last := <-writerDone
	wg.Wait()
	downAfter := waitStatus(t, a, false, 5*time.Second)
	if st := a.Status(); !strings.Contains(st.Detail, "unavailable") {
		t.Fatalf("status during the outage: %+v", st)
	}
	time.Sleep(100 * time.Millisecond) // a few failed reopen attempts

	pty.Start()
	reconnect := waitStatus(t, a, true, 5*time.Second)
	t.Logf("outage seen %s after the kill; reopened %s after socat was back", downAfter, reconnect)

	// Phase 3: after the reconnection, on the new pty.
	dev2 := openDevice(t, pty.B)
	for i := last + 1; i < last+21; i++ {
		if err := send(dev2, i); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := sink.stored()
		if len(got) > 0 && string(got[len(got)-1].Payload) == fmt.Sprintf("frame-%04d", last+20) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("phase 3 frames did not all arrive: last stored %q", payloads(got[len(got)-3:]))
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := sink.stored()
	seen := map[string]int{}
	for _, f := range got {
		seen[string(f.Payload)]++
	}
	var lost, dup int
	for _, s := range sent {
		switch seen[s] {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
	}
	if dup != 0 {
		t.Fatalf("%d frames emitted twice", dup)
	}
	for s := range seen {
		if !slices.Contains(sent, s) {
			t.Fatalf("stored %q, which was never sent whole", s)
		}
	}
	// Every frame of phases 1 and 3 arrived, in order.
	var p3 []string
	for _, f := range got {
		var n int
		fmt.Sscanf(string(f.Payload), "frame-%d", &n)
		if n > last {
			p3 = append(p3, string(f.Payload))
		}
	}
	if len(p3) != 20 || p3[0] != fmt.Sprintf("frame-%04d", last+1) {
		t.Fatalf("phase 3 frames %q", p3)
	}
	for i := range 20 {
		if seen[fmt.Sprintf("frame-%04d", i)] != 1 {
			t.Fatalf("phase 1 frame %d missing", i)
		}
	}
	// Offsets start again at 0 on the reopened port.
	for _, f := range got {
		if string(f.Payload) == p3[0] && f.Offset != 0 {
			t.Fatalf("first frame after the reopen at offset %d, want 0", f.Offset)
		}
	}
	if n := value(t, a.m.reopens) - reopens0; n < 1 {
		t.Fatalf("reopens counter grew by %v", n)
	}
	if value(t, a.m.open) != 1 {
		t.Fatal("port_open gauge not back to 1")
	}
	t.Logf("FIGURES: reconnect %s after socat restart; phase 2 wrote %d frames, lost %d, duplicated %d",
		reconnect.Round(time.Millisecond), last-20, lost, dup)
}
