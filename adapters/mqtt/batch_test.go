package mqtt

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/internal/testpeers"
)

// batchRec is a recSink that also takes batches, like the pipeline: every
// call, one frame or many, costs one commit delay.
type batchRec struct {
	*recSink
	commit time.Duration

	bmu             sync.Mutex
	calls, maxBatch int
}

func (b *batchRec) Emit(ctx context.Context, f *adapters.Frame) error {
	b.note(1)
	time.Sleep(b.commit)
	return b.recSink.Emit(ctx, f)
}

func (b *batchRec) EmitBatch(ctx context.Context, frames []*adapters.Frame, errs []error) {
	b.note(len(frames))
	time.Sleep(b.commit)
	for i, f := range frames {
		errs[i] = b.recSink.Emit(ctx, f)
	}
}

func (b *batchRec) note(n int) {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	b.calls++
	b.maxBatch = max(b.maxBatch, n)
}

func (b *batchRec) figures() (calls, maxBatch int) {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	return b.calls, b.maxBatch
}

// plainSink hides EmitBatch: the same commit cost, one frame per call.
type plainSink struct{ b *batchRec }

func (p plainSink) Emit(ctx context.Context, f *adapters.Frame) error { return p.b.Emit(ctx, f) }

// A backlog on three topics drained into a sink that costs one commit per
// call: with a BatchSink the messages of a topic waiting behind the head go
// in one EmitBatch, in order. Asserted: every message once, per-topic
// order, batches formed (fewer calls than messages). The drain times of
// both modes are logged, not asserted.
func TestBatchedDrainKeepsTopicOrder(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	const topics, per = 3, 150
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batched), func(t *testing.T) {
			cfg := baseConfig(t, mq.URL())
			name := adapterName(t, "")
			first := start(t, name, cfg, newRecSink())
			first.waitReady(t)
			first.stop(t)

			p := newPublisher(t, mq.URL())
			var want []string
			var wg sync.WaitGroup
			for d := range topics {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						p.mustPub(t, fmt.Sprintf("devices/b%d/up", d), 1, false, fmt.Sprintf("%d:%03d", d, i))
					}
				}()
				for i := range per {
					want = append(want, fmt.Sprintf("%d:%03d", d, i))
				}
			}
			wg.Wait()

			br := &batchRec{recSink: newRecSink(), commit: 5 * time.Millisecond}
			var sink adapters.Sink = br
			if !batched {
				sink = plainSink{br}
			}
			began := time.Now()
			r := start(t, name, cfg, sink)
			waitPayloads(t, br.recSink, 30*time.Second, want)
			took := time.Since(began)
			calls, maxBatch := br.figures()
			distinct, dups := dupCount(br.recSink)
			t.Logf("batch=%v: %d messages on %d topics drained in %s (%.0f msgs/s incl. connect), %d sink calls, largest batch %d, %d duplicates",
				batched, topics*per, topics, took.Round(time.Millisecond), float64(topics*per)/took.Seconds(), calls, maxBatch, dups)
			last := map[string]string{}
			for _, f := range br.snapshot() {
				if prev, ok := last[f.Source]; ok && string(f.Payload) < prev {
					t.Errorf("%s: %s emitted after %s", f.Source, f.Payload, prev)
				}
				last[f.Source] = string(f.Payload)
			}
			if distinct != topics*per || dups != 0 {
				t.Errorf("%d distinct, %d duplicates; want %d and 0", distinct, dups, topics*per)
			}
			if batched && (maxBatch < 2 || calls >= topics*per) {
				t.Errorf("batched: %d calls, largest batch %d; want batches", calls, maxBatch)
			}
			if !batched && maxBatch != 1 {
				t.Errorf("plain sink got a batch of %d", maxBatch)
			}
			waitFor(t, 5*time.Second, "acked to count every message", func() bool { return ackedCount(name) == topics*per })
			r.stop(t)
		})
	}
}
