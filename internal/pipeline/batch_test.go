package pipeline

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/forwarder/queue"
)

// countingQueue counts Append calls.
type countingQueue struct {
	queue.Queue
	appends atomic.Int32
}

func (c *countingQueue) Append(ctx context.Context, recs ...queue.Record) error {
	c.appends.Add(1)
	return c.Queue.Append(ctx, recs...)
}

// A batch is decoded frame by frame, in order, and queued with one append:
// alarm decisions see the frames before them in the batch, a bad frame is
// dead-lettered alone.
func TestEmitBatchOneAppendInOrder(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	data := &countingQueue{Queue: f.data}
	alarms := &countingQueue{Queue: f.alarms}
	f.p.o.Data, f.p.o.Alarms = data, alarms
	sink, ok := f.p.For("in", "tcp", "level", "047").(adapters.BatchSink)
	if !ok {
		t.Fatal("the pipeline's adapter sink is not a BatchSink")
	}
	lines := []string{
		"2026-01-01T00:00:00Z,3",
		"2026-01-01T00:10:00Z,6", // raises
		"garbage",                // dead-lettered
		"2026-01-01T00:20:00Z,7", // still high: nothing
		"2026-01-01T00:30:00Z,3", // clears
	}
	frames := make([]*adapters.Frame, len(lines))
	for i, l := range lines {
		frames[i] = frame("s1", l)
		frames[i].Adapter, frames[i].Decoder = "", "" // the adapter sink fills them
	}
	errs := make([]error, len(frames))
	sink.EmitBatch(context.Background(), frames, errs)
	for i, err := range errs {
		var rej *adapters.RejectedError
		switch {
		case i == 2 && !errors.As(err, &rej):
			t.Fatalf("frame 2: want a RejectedError, got %v", err)
		case i != 2 && err != nil:
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	// One append of the observations (the rejected frame's raw copy is a
	// second one, made when it was dead-lettered), one of the alarms.
	if n := data.appends.Load(); n != 2 {
		t.Fatalf("data appends: %d, want 2 (raw copy of the bad frame, then the batch)", n)
	}
	if n := alarms.appends.Load(); n != 1 {
		t.Fatalf("alarm appends: %d, want 1", n)
	}
	recs := readAll(t, f.data)
	var results []string
	for _, r := range recs {
		if r.Kind != queue.Observation {
			continue
		}
		i := strings.Index(string(r.Body), `"result":`)
		results = append(results, strings.SplitN(string(r.Body[i+9:]), ",", 2)[0])
	}
	if strings.Join(results, " ") != "3 6 7 3" {
		t.Fatalf("observations out of order: %v", results)
	}
	al := readAll(t, f.alarms)
	if len(al) != 2 || !strings.Contains(string(al[0].Body), `"status":"ACTIVE"`) || !strings.Contains(string(al[1].Body), `"status":"CLEARED"`) ||
		!strings.Contains(string(al[1].Body), `"triggeredAt":"2026-01-01T00:30:00Z"`) {
		t.Fatalf("want ACTIVE then CLEARED at 00:30, got %v", al)
	}
	if f.p.alarmSnapshot()["high@LVL-1"] {
		t.Fatal("alarm state after the batch should be cleared")
	}
}

// A failed append fails every decoded frame of the batch (none is
// acknowledged), and no alarm state moves.
func TestEmitBatchDiskErrorFailsAll(t *testing.T) {
	f := newFixture(t, t.TempDir(), "accept")
	f.data.SetAppendError(syscall.ENOSPC)
	sink := f.p.For("in", "tcp", "level", "047").(adapters.BatchSink)
	frames := []*adapters.Frame{frame("s1", "2026-01-01T00:00:00Z,1"), frame("s1", "2026-01-01T00:10:00Z,9")}
	errs := make([]error, 2)
	sink.EmitBatch(context.Background(), frames, errs)
	for i, err := range errs {
		if err == nil || adapters.Durable(err) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("frame %d: want a non-durable ENOSPC error, got %v", i, err)
		}
	}
	if f.p.alarmSnapshot()["high@LVL-1"] {
		t.Fatal("alarm state moved although nothing was queued")
	}
}
