package serial

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// The vigd_adapter_* metrics are shared by every adapter kind (same names,
// same labels, same help texts as adapters/tcp): whichever package
// registers first wins and the others reuse its collector. The
// vigd_serial_* ones are this package's own.
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

	portOpenGauge = gaugeVec(prometheus.GaugeOpts{
		Name: "vigd_serial_port_open",
		Help: "1 while the serial adapter has its port open (and, in sbd-modem mode, the modem initialised), else 0.",
	}, "adapter")
	reopensTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_serial_reopens_total",
		Help: "Times a serial port was opened again after it vanished or failed.",
	}, "adapter")
	portErrorsTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_serial_port_errors_total",
		Help: "Serial port failures by operation: open, read, write, modem (the modem stopped answering).",
	}, "adapter", "op")
	sbdSessionsTotal = counterVec(prometheus.CounterOpts{
		Name: "vigd_serial_sbd_sessions_total",
		Help: "SBD modem mailbox checks (AT+SBDIX) by result: success, retry, busy, fatal, error (no usable answer).",
	}, "adapter", "result")
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
		frames:      framesTotal.WithLabelValues(name, Kind),
		frameErrors: frameErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": Kind}),
		bytes:       bytesTotal.WithLabelValues(name, Kind),
		open:        portOpenGauge.WithLabelValues(name),
		reopens:     reopensTotal.WithLabelValues(name),
		portErrors:  portErrorsTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
		sessions:    sbdSessionsTotal.MustCurryWith(prometheus.Labels{"adapter": name}),
	}
}
