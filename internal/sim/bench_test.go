package sim

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/signer"
)

// BenchmarkIngestBatch1000 posts signed gzip batches of 1000 observations
// over HTTP; run with -benchtime=1000x to hold a million records, and see
// heap-MB for what the simulator keeps in memory.
func BenchmarkIngestBatch1000(b *testing.B) {
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	s := StartTest(b, Config{Now: func() time.Time { return now },
		Services: map[string]signer.Secret{"svc": signer.NewSecret("k")}})
	c := s.Client()
	c.ServiceID, c.Secret, c.Now = "svc", signer.NewSecret("k"), s.cfg.Now
	ctx := context.Background()
	for _, p := range []struct{ kind, body string }{{Things, things(thingJSON)}, {Datastreams, datastreams(dsJSON)}} {
		if r, err := c.Post(ctx, p.kind, []byte(p.body), nil); err != nil || r.Status != 200 {
			b.Fatal(err, r)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := c.Post(ctx, Observations, []byte(nObs(fmt.Sprint("bench-", i), 1000)), &PostOptions{Gzip: true})
		if err != nil || r.Status != 200 {
			b.Fatalf("%v %d %s", err, r.Status, r.Body)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "records/s")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
	start := time.Now()
	recs, err := c.Records(ctx, Query{Kind: Observations, BatchID: "bench-0"})
	if err != nil || len(recs) != 1000 {
		b.Fatalf("query: %v %d", err, len(recs))
	}
	b.ReportMetric(time.Since(start).Seconds(), "query-s")
}
