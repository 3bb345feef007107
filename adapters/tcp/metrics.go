package tcp

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigd/vigd/adapters"
)

// metrics are one listener's children of the shared vectors.
type metrics struct {
	frames      prometheus.Counter
	frameErrors *prometheus.CounterVec // curried: reason
	connections prometheus.Gauge
	bytes       prometheus.Counter
	refused     *prometheus.CounterVec // curried: reason
}

func newMetrics(name string) metrics {
	return metrics{
		frames:      adapters.FramesTotal.WithLabelValues(name, Kind),
		frameErrors: adapters.FrameErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": Kind}),
		connections: adapters.ConnectionsGauge.WithLabelValues(name),
		bytes:       adapters.BytesTotal.WithLabelValues(name, Kind),
		refused:     adapters.ConnectionsRefusedTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
	}
}
