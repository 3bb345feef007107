package tcp

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// The adapter metrics are shared by every adapter kind (same names, same
// labels): whichever package registers first wins and the others reuse
// its collector, so the help texts must match across packages.
var (
	framesTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_frames_total",
		Help: "Frames an adapter handed to the pipeline and saw durably stored.",
	}, "adapter", "kind")
	frameErrorsTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_frame_errors_total",
		Help: "Frames an adapter could not deliver, by reason.",
	}, "adapter", "kind", "reason")
	connectionsGauge = gaugeVec(prometheus.GaugeOpts{
		Name: "vigd_adapter_connections",
		Help: "Open connections of a listening adapter.",
	}, "adapter")
	bytesTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_bytes_total",
		Help: "Bytes an adapter received.",
	}, "adapter", "kind")
	refusedTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_connections_refused_total",
		Help: "Connections closed at once, by reason (max_connections, max_connections_per_ip, not_allowed, tls).",
	}, "adapter", "reason")
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

func gaugeVec(opts prometheus.GaugeOpts, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(opts, labels)
	if err := prometheus.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector.(*prometheus.GaugeVec)
		}
		panic(err)
	}
	return g
}

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
		frames:      framesTotal.WithLabelValues(name, Kind),
		frameErrors: frameErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": Kind}),
		connections: connectionsGauge.WithLabelValues(name),
		bytes:       bytesTotal.WithLabelValues(name, Kind),
		refused:     refusedTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
	}
}
