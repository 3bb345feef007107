package queue

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// bigBody writes the body of record i of the big test into b (100 bytes).
func bigBody(b []byte, i int) []byte {
	b = fmt.Appendf(b[:0], `{"result":%d,"phenomenonTime":"2026-01-01T00:00:00Z","n":"%08d"}`, i%1000, i)
	for len(b) < 100 {
		b = append(b, ' ')
	}
	return b
}

// TestMillionRecords writes a million small records, reopens (timing the
// scan), then reads them all in batches of 1000 with a commit after each,
// checking every record and that the heap stays small: memory does not
// grow with the backlog. 100,000 records under -race or -short.
func TestMillionRecords(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000
	}
	const batch = 1000
	dir := t.TempDir()
	d := openDisk(t, dir, Options{})
	recs := make([]Record, batch)
	bodies := make([][]byte, batch)
	start := time.Now()
	for i := 0; i < n; i += batch {
		for j := range recs {
			bodies[j] = bigBody(bodies[j], i+j)
			recs[j] = Record{Kind: Observation, DeviceID: fmt.Sprintf("dev-%d", (i+j)%50),
				CustomerID: "c1", Ref: "ds-1", Time: int64(i + j + 1), Body: bodies[j]}
		}
		mustAppend(t, d, recs...)
	}
	appendDur := time.Since(start)
	st := d.Stats()
	if st.Records != int64(n) {
		t.Fatalf("stats after appends %+v", st)
	}
	d.Close()

	start = time.Now()
	d = openDisk(t, dir, Options{})
	openDur := time.Since(start)
	st = d.Stats()
	if st.Records != int64(n) || st.Oldest.UnixNano() != 1 {
		t.Fatalf("stats after reopen %+v", st)
	}

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peakInuse, peakLive uint64
	start = time.Now()
	pos := d.Cursor()
	var want []byte
	got := 0
	for k := 0; ; k++ {
		es, err := d.Read(pos, batch, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			want = bigBody(want, got)
			if !bytes.Equal(e.Rec.Body, want) || e.Rec.Time != int64(got+1) ||
				e.Rec.DeviceID != fmt.Sprintf("dev-%d", got%50) {
				t.Fatalf("record %d: %+v", got, e.Rec)
			}
			got++
		}
		pos = es[len(es)-1].Next
		if err := d.Commit(pos); err != nil {
			t.Fatal(err)
		}
		if k%50 == 0 {
			runtime.ReadMemStats(&ms)
			peakInuse = max(peakInuse, ms.HeapInuse)
		}
		if k%200 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peakLive = max(peakLive, ms.HeapAlloc)
		}
	}
	readDur := time.Since(start)
	if got != n {
		t.Fatalf("read %d records, want %d", got, n)
	}
	// A drained queue keeps no segment: the active one is released too.
	if st := d.Stats(); st.Records != 0 || st.Segments != 0 {
		t.Fatalf("stats after reading all %+v", st)
	}
	if left := segFiles(t, dir); len(left) != 0 {
		t.Fatalf("%d segment files left after committing all", len(left))
	}
	t.Logf("%d records (%d MB on disk): append %v (%.0f rec/s, batches of %d), open %v, read+commit %v (%.0f rec/s)",
		n, st.Bytes>>20, appendDur.Round(time.Millisecond), float64(n)/appendDur.Seconds(), batch,
		openDur.Round(time.Millisecond), readDur.Round(time.Millisecond), float64(n)/readDur.Seconds())
	t.Logf("heap while reading: live after GC at most %.1f MiB (%.1f MiB before reading), HeapInuse at most %.1f MiB",
		float64(peakLive)/(1<<20), float64(base)/(1<<20), float64(peakInuse)/(1<<20))
	if peakLive > 16<<20 || peakInuse > 64<<20 {
		t.Fatalf("heap grew with the backlog: live %d, in use %d", peakLive, peakInuse)
	}
}

// BenchmarkAppend measures durable appends: each op returns only after
// fsync. fsyncs/op shows group commit at work in the parallel case.
func BenchmarkAppend(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 100)
	rec := Record{Kind: Observation, DeviceID: "dev-1", CustomerID: "c1", Ref: "ds-1", Body: body}
	run := func(b *testing.B, par, perCall int) {
		d := openDisk(b, b.TempDir(), Options{})
		recs := make([]Record, perCall)
		for i := range recs {
			recs[i] = rec
		}
		before := d.Stats().Fsyncs
		b.ReportAllocs()
		b.SetBytes(int64(len(body) * perCall))
		b.ResetTimer()
		if par == 0 {
			for i := 0; i < b.N; i++ {
				if err := d.Append(context.Background(), recs...); err != nil {
					b.Fatal(err)
				}
			}
		} else {
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := d.Append(context.Background(), recs...); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		b.StopTimer()
		b.ReportMetric(float64(d.Stats().Fsyncs-before)/float64(b.N), "fsyncs/op")
		b.ReportMetric(float64(b.N*perCall)/b.Elapsed().Seconds(), "records/s")
	}
	b.Run("single", func(b *testing.B) { run(b, 0, 1) })
	b.Run("parallel", func(b *testing.B) { run(b, 16, 1) })
	b.Run("batch100", func(b *testing.B) { run(b, 0, 100) })
}

// BenchmarkRead reads batches of 1000 small records from files (page
// cache warm), without commits.
func BenchmarkRead(b *testing.B) {
	d := openDisk(b, b.TempDir(), Options{})
	recs := make([]Record, 1000)
	for i := range recs {
		recs[i] = Record{Kind: Observation, DeviceID: "dev-1", CustomerID: "c1", Ref: "ds-1",
			Body: bigBody(nil, i)}
	}
	for i := 0; i < 100; i++ {
		mustAppend(b, d, recs...)
	}
	b.ReportAllocs()
	b.SetBytes(1000 * 100)
	b.ResetTimer()
	var pos Position
	for i := 0; i < b.N; i++ {
		es, err := d.Read(pos, 1000, 0)
		if err != nil {
			b.Fatal(err)
		}
		if len(es) == 0 {
			pos = Position{}
			i--
			continue
		}
		pos = es[len(es)-1].Next
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "records/s")
}
