package orbcomm

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/vigd/vigd/adapters"
)

// The vigd_adapter_* metrics are shared by every kind (adapters.FramesTotal
// and friends); the ones below are this package's own.
var (
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
		frames:      adapters.FramesTotal.WithLabelValues(name, Kind),
		frameErrors: adapters.FrameErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": Kind}),
		calls:       callsTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
		messages:    messagesTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
		highWater:   highWaterID.WithLabelValues(name),
		lastSuccess: lastSuccess.WithLabelValues(name),
	}
}
