package tcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
)

// batchSink records the batches it is given; failAt makes the frame with
// that payload (and, as the pipeline does, the whole batch) not durable,
// rejectAt dead-letters one.
type batchSink struct {
	recSink
	bmu      sync.Mutex
	batches  []int
	failAt   string
	rejectAt string
}

func (s *batchSink) EmitBatch(ctx context.Context, frames []*adapters.Frame, errs []error) {
	s.bmu.Lock()
	s.batches = append(s.batches, len(frames))
	s.bmu.Unlock()
	var fail error
	for i, f := range frames {
		switch string(f.Payload) {
		case s.failAt:
			fail = fmt.Errorf("queue: %w", syscall.ENOSPC)
		case s.rejectAt:
			errs[i] = &adapters.RejectedError{Reason: "bad line"}
		}
	}
	for i, f := range frames {
		if fail != nil {
			errs[i] = fail
		}
		s.recSink.mu.Lock()
		s.recSink.frames = append(s.recSink.frames, f)
		s.recSink.mu.Unlock()
		s.got <- struct{}{}
	}
}

func (s *batchSink) sizes() []int {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	return append([]int(nil), s.batches...)
}

// Many lines in one write reach the sink in batches, in order, and each
// gets its reply (rejected ones the rejected reply).
func TestLinesAreEmittedInBatches(t *testing.T) {
	sink := &batchSink{recSink: *newSink(), rejectAt: "line 0500"}
	rej := "NAK\n"
	_, addr := start(t, sink, func(c *Config) { c.Reply = "OK\n"; c.ReplyRejected = &rej })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	const n = 2000
	for i := range n {
		fmt.Fprintf(&b, "line %04d\n", i)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	sink.wait(t, n)
	frames := sink.all()
	for i, f := range frames {
		if want := fmt.Sprintf("line %04d", i); string(f.Payload) != want {
			t.Fatalf("frame %d is %q, want %q", i, f.Payload, want)
		}
	}
	biggest := 0
	for _, s := range sink.sizes() {
		biggest = max(biggest, s)
	}
	if biggest < 10 {
		t.Fatalf("batches %v: want frames of one read emitted together", sink.sizes())
	}
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		want := "OK\n"
		if i == 500 {
			want = rej
		}
		if line != want {
			t.Fatalf("reply %d is %q, want %q", i, line, want)
		}
	}
}

// A batch that is not durable gets no reply, earlier batches keep theirs,
// and the connection is closed.
func TestBatchNotDurableClosesWithoutReply(t *testing.T) {
	sink := &batchSink{recSink: *newSink(), failAt: "line 1"}
	_, addr := start(t, sink, func(c *Config) { c.Reply = "OK\n" })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "line 0\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
		t.Fatalf("reply to line 0: %q %v", line, err)
	}
	if _, err := io.WriteString(c, "line 1\nline 2\n"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after failure: %v", err)
	}
	if len(rest) != 0 {
		t.Fatalf("got %q after a failed batch, want the connection closed without a reply", rest)
	}
}
