package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/devices"
	"github.com/vigd/vigd/forwarder"
	"github.com/vigd/vigd/forwarder/deadletter"
	"github.com/vigd/vigd/forwarder/queue"
	"github.com/vigd/vigd/internal/testpeers"
)

// BenchmarkEmitBatchCSV is the pipeline's part of `make bench`: batches of
// 64 CSV lines (100 devices) decoded and queued (in memory: the disk's cost
// is the queue's benchmark). Per op: one line.
func BenchmarkEmitBatchCSV(b *testing.B) {
	set, err := decoders.LoadDir(filepath.Join(testpeers.RepoRoot(), "internal", "bench", "decoders"))
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	st, err := forwarder.OpenState(filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	dl, err := deadletter.Open(filepath.Join(dir, "dl"), deadletter.Options{})
	if err != nil {
		b.Fatal(err)
	}
	data := queue.NewMemory(queue.Options{})
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	p, err := New(Options{Data: data, Alarms: queue.NewMemory(queue.Options{}), State: st, DeadLetters: dl,
		RawFrames: "undecoded", UnknownDevices: "accept", Log: logrus.NewEntry(l)}, set, devices.Empty())
	if err != nil {
		b.Fatal(err)
	}
	sink := p.For("bench", "tcp", "bench-csv", "bench").(adapters.BatchSink)
	const batch = 64
	lines := make([][]byte, 100)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, "BENCH%04d,2026-12-03T17:30:00.123456789Z,21.5,1013.25,3.75", i)
	}
	frames := make([]*adapters.Frame, batch)
	errs := make([]error, batch)
	ctx := context.Background()
	emit := func(k int) {
		for i := range frames {
			frames[i] = &adapters.Frame{Source: "127.0.0.1:40000", Offset: int64(k), Received: time.Now(),
				Payload: lines[(k+i)%len(lines)], Meta: map[string]string{"remote_addr": "127.0.0.1:40000", "local_port": "5000"}}
		}
		sink.EmitBatch(ctx, frames, errs)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	for k := 0; k < 200; k++ { // entities stored, caches warm
		emit(k * batch)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for k := 0; k < b.N; k += batch {
		emit(k)
		if data.Stats().Records > 1<<16 {
			b.StopTimer()
			es, _ := data.Read(data.Cursor(), 1<<20, 1<<30)
			_ = data.Commit(es[len(es)-1].Next)
			b.StartTimer()
		}
	}
}
