package httpingest

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The first three are the adapter metrics every kind shares (same names,
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
	bytesTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_bytes_total",
		Help: "Bytes an adapter received.",
	}, "adapter", "kind")

	requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_http_ingest_requests_total",
		Help: "HTTP ingest requests by answer status code.",
	}, []string{"adapter", "code"})
	inFlight = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_http_ingest_in_flight",
		Help: "HTTP ingest requests being read or queued.",
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
		frames:      framesTotal.WithLabelValues(name, Kind),
		frameErrors: frameErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": Kind}),
		bytes:       bytesTotal.WithLabelValues(name, Kind),
		requests:    requestsTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
		inFlight:    inFlight.WithLabelValues(name),
	}
}

func (m *metrics) answered(code int) { m.requests.WithLabelValues(strconv.Itoa(code)).Inc() }
