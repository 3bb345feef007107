package forwarder

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/deadletter"
	"github.com/vigd/vigd/forwarder/queue"
	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/sim"
)

// The pipeline calls UpsertThing for every frame: unchanged must be cheap.
func BenchmarkUpsertUnchanged(b *testing.B) {
	s, err := OpenState(filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := []byte(`{"name":"FST1","description":"pump","customerId":"047","sensusID":"FST1@047"}`)
	if _, err := s.UpsertThing("FST1@047", body); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ch, err := s.UpsertThing("FST1@047", body); ch || err != nil {
			b.Fatal(ch, err)
		}
	}
}

// BenchmarkUpsertChanged is the durable path (one bbolt commit, fsync).
func BenchmarkUpsertChanged(b *testing.B) {
	s, err := OpenState(filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < b.N; i++ {
		body := []byte(fmt.Sprintf(`{"name":"FST1","description":"v%d","customerId":"047","sensusID":"FST1@047"}`, i))
		if _, err := s.UpsertThing("FST1@047", body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDrainSim drains a backlog of observations of 20 devices from a
// disk queue through the simulator over loopback HTTP, signed and gzipped.
func BenchmarkDrainSim(b *testing.B) {
	const n = 20000
	for _, gz := range []bool{false, true} {
		b.Run(fmt.Sprintf("gzip=%v", gz), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				dir := b.TempDir()
				s := sim.StartTest(b, sim.Config{Services: map[string]signer.Secret{"svc": signer.NewSecret("x")}})
				q, err := queue.Open(filepath.Join(dir, "q"), queue.Options{Name: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				aq := queue.NewMemory(queue.Options{})
				st, err := OpenState(filepath.Join(dir, "s.db"))
				if err != nil {
					b.Fatal(err)
				}
				var recs []queue.Record
				for d := 0; d < 20; d++ {
					dev := fmt.Sprintf("FST%03d", d)
					thing := fmt.Sprintf(`{"name":%q,"description":"p","customerId":"047","sensusID":"%s@047"}`, dev, dev)
					st.UpsertThing(dev+"@047", []byte(thing))
					ds := fmt.Sprintf(`{"name":"T","description":"t","observationType":"OM_Measurement","unitOfMeasurement":{"name":"C","symbol":"C","definition":"x"},"thing":{"sensusID":"%s@047"},"sensor":{"name":"s"},"observedProperty":{"name":"T"},"sensusID":%q}`, dev, dsID(dev))
					st.UpsertDatastream(dsID(dev), dev+"@047", []byte(ds))
				}
				for k := 0; k < n; k++ {
					recs = append(recs, obsRec(fmt.Sprintf("FST%03d", k%20), k+1))
					if len(recs) == 1000 {
						if err := q.Append(context.Background(), recs...); err != nil {
							b.Fatal(err)
						}
						recs = recs[:0]
					}
				}
				dl, _ := deadletter.Open(filepath.Join(dir, "dl"), deadletter.Options{})
				cfg := DefaultConfig()
				cfg.URL, cfg.ServiceID = s.URL(), "svc"
				cfg.Gzip = gz
				cfg.RequestsPerSecond = 1e6
				cfg.Batch.Linger = 0
				f, err := New(cfg, Deps{Data: q, Alarms: aq, State: st, DeadLetters: dl,
					HTTPClient: &http.Client{Transport: &signer.Transport{ServiceID: "svc", Secret: signer.NewSecret("x")}}})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error)
				t0 := time.Now()
				b.StartTimer()
				go func() { done <- f.Run(ctx) }()
				for q.Stats().Records > 0 {
					time.Sleep(time.Millisecond)
				}
				el := time.Since(t0)
				b.StopTimer()
				cancel()
				<-done
				b.ReportMetric(float64(n)/el.Seconds(), "records/s")
				c, _ := s.Client().Counts(context.Background())
				if c.Accepted["observations"] != n {
					b.Fatalf("accepted %d", c.Accepted["observations"])
				}
				q.Close()
				st.Close()
			}
		})
	}
}
