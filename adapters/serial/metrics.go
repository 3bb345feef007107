package serial

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/vigd/vigd/adapters"
)

// The vigd_adapter_* metrics are shared by every kind (adapters.FramesTotal
// and friends); the ones below are this package's own.
var (
	portOpenGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_serial_port_open",
		Help: "1 while the serial adapter has its port open (and, in sbd-modem mode, the modem initialised), else 0.",
	}, []string{"adapter"})
	reopensTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_serial_reopens_total",
		Help: "Times a serial port was opened again after it vanished or failed.",
	}, []string{"adapter"})
	portErrorsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_serial_port_errors_total",
		Help: "Serial port failures by operation: open, read, write, modem (the modem stopped answering).",
	}, []string{"adapter", "op"})
	sbdSessionsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_serial_sbd_sessions_total",
		Help: "SBD modem mailbox checks (AT+SBDIX) by result: success, retry, busy, fatal, error (no usable answer).",
	}, []string{"adapter", "result"})
)

// metrics are one adapter's children of the vectors.
type metrics struct {
	frames      prometheus.Counter
	frameErrors *prometheus.CounterVec // curried: reason
	bytes       prometheus.Counter
	open        prometheus.Gauge
	reopens     prometheus.Counter
	portErrors  *prometheus.CounterVec // curried: op
	sessions    *prometheus.CounterVec // curried: result
}

func newMetrics(name string) metrics {
	return metrics{
		frames:      adapters.FramesTotal.WithLabelValues(name, Kind),
		frameErrors: adapters.FrameErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": Kind}),
		bytes:       adapters.BytesTotal.WithLabelValues(name, Kind),
		open:        portOpenGauge.WithLabelValues(name),
		reopens:     reopensTotal.WithLabelValues(name),
		portErrors:  portErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
		sessions:    sbdSessionsTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
	}
}
