package orbcomm

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The first two are the adapter metrics every kind shares (same names,
// labels and help texts as adapters/tcp): whichever package registers
// first wins and the others reuse its collector.
var (
	framesTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_frames_total",
		Help: "Frames an adapter handed to the pipeline and saw durably stored.",
	}, "adapter", "kind")
	frameErrorsTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_frame_errors_total",
		Help: "Frames an adapter could not deliver, by reason.",
	}, "adapter", "kind", "reason")

	callsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_orbcomm_calls_total",
		Help: "get_return_messages calls by result (ok, http_error, gateway_error, bad_page).",
	}, []string{"adapter", "result"})
	messagesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_orbcomm_messages_total",
		Help: "ORBCOMM messages by outcome (queued, rejected = kept in dead letters, duplicate = already queued, dropped).",
	}, []string{"adapter", "result"})
	highWaterID = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_orbcomm_high_water_id",
		Help: "The saved from_id the next poll starts at (0 while polling by start_utc).",
	}, []string{"adapter"})
	lastSuccess = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_orbcomm_last_success_timestamp_seconds",
		Help: "Unix time of the last successful get_return_messages call.",
	}, []string{"adapter"})
)

// counterVec registers on the default registry, or reuses the collector
// another adapter package registered under the same name.
func counterVec(opts prometheus.CounterOpts, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(opts, labels)
	if err := prometheus.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector.(*prometheus.CounterVec)
		}
		panic(err)
	}
	return c
}

// metrics are one poller's children of the vectors.
type metrics struct {
	frames      prometheus.Counter
	frameErrors *prometheus.CounterVec // curried: reason
	calls       *prometheus.CounterVec // curried: result
	messages    *prometheus.CounterVec // curried: result
	highWater   prometheus.Gauge
	lastSuccess prometheus.Gauge
}

func newMetrics(name string) metrics {
	return metrics{
		frames:      framesTotal.WithLabelValues(name, Kind),
		frameErrors: frameErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": Kind}),
		calls:       callsTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
		messages:    messagesTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
		highWater:   highWaterID.WithLabelValues(name),
		lastSuccess: lastSuccess.WithLabelValues(name),
	}
}
