package httpingest

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/vigd/vigd/adapters"
)

// The vigd_adapter_* metrics are shared by every kind (adapters.FramesTotal
// and friends); the ones below are this package's own.
var (
	requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_http_ingest_requests_total",
		Help: "HTTP ingest requests by answer status code.",
	}, []string{"adapter", "code"})
	inFlight = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_http_ingest_in_flight",
		Help: "HTTP ingest requests being read or queued.",
	}, []string{"adapter"})
)

// metrics are one server's children of the vectors.
type metrics struct {
	frames      prometheus.Counter
	frameErrors *prometheus.CounterVec // curried: reason
	bytes       prometheus.Counter
	requests    *prometheus.CounterVec // curried: code
	inFlight    prometheus.Gauge
}

func newMetrics(name string) metrics {
	return metrics{
		frames:      adapters.FramesTotal.WithLabelValues(name, Kind),
		frameErrors: adapters.FrameErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": Kind}),
		bytes:       adapters.BytesTotal.WithLabelValues(name, Kind),
		requests:    requestsTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
		inFlight:    inFlight.WithLabelValues(name),
	}
}

func (m *metrics) answered(code int) { m.requests.WithLabelValues(strconv.Itoa(code)).Inc() }
