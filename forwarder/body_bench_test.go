package forwarder

import (
	"fmt"
	"testing"

	"github.com/vigd/vigd/forwarder/queue"
)

// BenchmarkRequestBody builds an observation request of 1000 records from
// their encoded JSON, as sent, and gzipped.
func BenchmarkRequestBody(b *testing.B) {
	ep := &endpoint{"observations", DefaultObservationsPath, "observations"}
	es := make([]queue.Entry, 1000)
	bt := &batch{ep: ep, id: "vigd-e-data-1-0-1000", dev: "BENCH0042", cust: "bench"}
	for i := range es {
		es[i].Rec = queue.Record{Kind: queue.Observation, DeviceID: "BENCH0042", CustomerID: "bench",
			Body: fmt.Appendf(nil, `{"phenomenonTime":"2026-12-03T17:30:00.%09dZ","result":%d.5,"resultTime":"2026-12-03T17:30:00.%09dZ","datastream":{"name":"temperature","sensusID":"bench@temperature@BENCH0042@bench"}}`, i, i%40, i)}
		bt.items = append(bt.items, item{body: es[i].Rec.Body, entry: &es[i]})
	}
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = bt.body()
		}
	})
	b.Run("gzip", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = gzipBody(bt.body())
		}
	})
}
