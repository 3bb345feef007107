package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/forwarder/queue"
)

// failFrom fails every Append from the nth on.
type failFrom struct {
	queue.Queue
	n, calls int
}

func (q *failFrom) Append(ctx context.Context, recs ...queue.Record) error {
	q.calls++
	if q.calls >= q.n {
		return fmt.Errorf("append: %w", syscall.ENOSPC)
	}
	return q.Queue.Append(ctx, recs...)
}

func lineFrames(n int) []*adapters.Frame {
	frames := make([]*adapters.Frame, n)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range frames {
		frames[i] = frame("s1", t0.Add(time.Duration(i)*time.Minute).Format(time.RFC3339)+",3")
	}
	return frames
}

// A large batch (a fast connection's read) is decoded and stored

// decoded frames per connection; the records stay in order.
func TestEmitBatchStoresInChunks(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	data := &countingQueue{Queue: f.data}
	f.p.o.Data = data
	frames := lineFrames(3*maxDecoded + 5)
	errs := make([]error, len(frames))
	f.p.For("in", "tcp", "level", "047").(adapters.BatchSink).EmitBatch(context.Background(), frames, errs)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if n := data.appends.Load(); n != 4 {
		t.Fatalf("data appends: %d, want 4 (chunks of %d)", n, maxDecoded)
	}
	recs := readAll(t, f.data)
	if len(recs) != len(frames) {
		t.Fatalf("%d records, want %d", len(recs), len(frames))
	}
	for i, r := range recs {
		want := fmt.Sprintf(`"phenomenonTime":"%s"`, frames[i].Payload[:20])
		if !strings.Contains(string(r.Body), want) {
			t.Fatalf("record %d out of order: %s", i, r.Body)
		}
	}
}

// When a chunk cannot be stored, its frames and every later one fail (none
// may be acknowledged behind one that is not queued); the chunks before it
// are queued and acknowledged.
func TestEmitBatchChunkFailureFailsTheRest(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	f.p.o.Data = &failFrom{Queue: f.data, n: 2}
	frames := lineFrames(3 * maxDecoded)
	errs := make([]error, len(frames))
	f.p.For("in", "tcp", "level", "047").(adapters.BatchSink).EmitBatch(context.Background(), frames, errs)
	for i, err := range errs {
		switch {
		case i < maxDecoded && err != nil:
			t.Fatalf("frame %d (first chunk, queued): %v", i, err)
		case i >= maxDecoded && (adapters.Durable(err) || !errors.Is(err, syscall.ENOSPC)):
			t.Fatalf("frame %d (after the failed chunk): want a non-durable ENOSPC error, got %v", i, err)
		}
	}
	if n := len(readAll(t, f.data)); n != maxDecoded {
		t.Fatalf("%d records queued, want the first chunk's %d", n, maxDecoded)
	}
}
