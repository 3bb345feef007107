package forwarder

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_forwarder_requests_total",
		Help: "Requests to the eventstore by endpoint and HTTP status (\"error\" for no answer).",
	}, []string{"endpoint", "status"})
	recordsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_forwarder_records_total",
		Help: "Records resolved by kind and result (accepted, duplicate, rejected, skipped).",
	}, []string{"kind", "result"})
	retriesTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "vigd_forwarder_retries_total",
		Help: "Requests retried after a transient failure or an authentication refusal.",
	})
	batchRecords = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "vigd_forwarder_batch_records",
		Help:    "Records per request.",
		Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000},
	})
	lastSuccess = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "vigd_forwarder_last_success_timestamp_seconds",
		Help: "Unix time of the last request the eventstore accepted.",
	})
)
