package queue

import (
	"fmt"
	"testing"
)

// BenchmarkReadInterleaved reads windows of records the way `make bench`
// queues them: 100 devices, three datastreams each, interleaved.
func BenchmarkReadInterleaved(b *testing.B) {
	d := openDisk(b, b.TempDir(), Options{})
	recs := make([]Record, 3000)
	for i := range recs {
		dev := fmt.Sprintf("BENCH%04d", i/3%100)
		recs[i] = Record{Kind: Observation, DeviceID: dev, CustomerID: "bench",
			Ref: fmt.Sprintf("bench@%d@%s@bench", i%3, dev), Body: bigBody(nil, i)}
	}
	for range 20 {
		mustAppend(b, d, recs...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var pos Position
	n := 0
	for b.Loop() {
		es, err := d.Read(pos, 10000, 0)
		if err != nil {
			b.Fatal(err)
		}
		if len(es) == 0 {
			pos = Position{}
			continue
		}
		n += len(es)
		pos = es[len(es)-1].Next
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
