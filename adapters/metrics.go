package adapters

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The metrics every adapter kind shares (same names and labels whatever the
// kind), registered once here so that kinds do not each declare them.
// Kind-specific metrics (vigd_mqtt_*, vigd_serial_*, …) stay in their
// packages.
var (
	FramesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_frames_total",
		Help: "Frames an adapter handed to the pipeline and saw durably stored.",
	}, []string{"adapter", "kind"})
	FrameErrorsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_frame_errors_total",
		Help: "Frames an adapter could not deliver, by reason.",
	}, []string{"adapter", "kind", "reason"})
	BytesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_bytes_total",
		Help: "Bytes an adapter received.",
	}, []string{"adapter", "kind"})
	ConnectionsGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_adapter_connections",
		Help: "Open connections of a listening adapter.",
	}, []string{"adapter"})
	ConnectionsRefusedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_adapter_connections_refused_total",
		Help: "Connections closed at once, by reason (max_connections, max_connections_per_ip, not_allowed, tls).",
	}, []string{"adapter", "reason"})
)
