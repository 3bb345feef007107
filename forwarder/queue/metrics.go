package queue

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	mRecords = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_queue_records",
		Help: "Records in the queue not yet committed.",
	}, []string{"queue"})
	mBytes = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_queue_bytes",
		Help: "Bytes on disk of the records not yet committed.",
	}, []string{"queue"})
	mOldestAge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_queue_oldest_age_seconds",
		Help: "Age of the oldest record not yet committed (0 when empty).",
	}, []string{"queue"})
	mSegments = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_queue_segments",
		Help: "Segment files in the queue folder.",
	}, []string{"queue"})
	mAppends = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_queue_appends_total",
		Help: "Records appended durably.",
	}, []string{"queue"})
	mAppendErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_queue_append_errors_total",
		Help: "Records whose append failed on a write or sync error (disk full, read-only, I/O error).",
	}, []string{"queue"})
	mFsyncs = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_queue_fsyncs_total",
		Help: "fsync calls made by the queue (segment data, folder and cursor).",
	}, []string{"queue"})
	mEvicted = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_queue_evicted_records_total",
		Help: "Records not yet committed that the size or age policy deleted.",
	}, []string{"queue"})
	mRejected = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_queue_rejected_records_total",
		Help: "Records refused with ErrFull (drop-newest policy, or larger than the limit).",
	}, []string{"queue"})
	mCorrupted = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_queue_corrupted_total",
		Help: "Torn or garbled regions found in segment files (each may hold several records).",
	}, []string{"queue"})
	mQuarantined = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_queue_quarantined_segments_total",
		Help: "Damaged or unreadable segment files put into the quarantine folder.",
	}, []string{"queue"})
)

// metricSet holds one queue's labelled children so the hot path does not
// look labels up.
type metricSet struct {
	records, bytes, oldestAge, segments                                      prometheus.Gauge
	appends, appendErrors, fsyncs, evicted, rejected, corrupted, quarantined prometheus.Counter
}

func newMetricSet(name string) *metricSet {
	return &metricSet{
		records:      mRecords.WithLabelValues(name),
		bytes:        mBytes.WithLabelValues(name),
		oldestAge:    mOldestAge.WithLabelValues(name),
		segments:     mSegments.WithLabelValues(name),
		appends:      mAppends.WithLabelValues(name),
		appendErrors: mAppendErrors.WithLabelValues(name),
		fsyncs:       mFsyncs.WithLabelValues(name),
		evicted:      mEvicted.WithLabelValues(name),
		rejected:     mRejected.WithLabelValues(name),
		corrupted:    mCorrupted.WithLabelValues(name),
		quarantined:  mQuarantined.WithLabelValues(name),
	}
}
