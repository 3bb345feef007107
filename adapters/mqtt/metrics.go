package mqtt

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	mConnected = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_mqtt_connected",
		Help: "1 while the adapter is connected and subscribed, else 0.",
	}, []string{"adapter"})
	mMessages = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_mqtt_messages_total",
		Help: "Messages received from the broker (redeliveries included).",
	}, []string{"adapter"})
	mAcked = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_mqtt_acked_total",
		Help: "Messages emitted durably and acknowledged on their connection (or QoS 0, nothing to acknowledge).",
	}, []string{"adapter"})
	mAckLost = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_mqtt_ack_lost_total",
		Help: "QoS 1/2 messages emitted durably after their connection was gone: not acknowledged, the broker sends them again (duplicates).",
	}, []string{"adapter"})
	mIgnored = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_mqtt_ignored_total",
		Help: "Messages acknowledged without emitting: retained replays (retained: ignore) and topics no longer configured.",
	}, []string{"adapter", "reason"})
	mErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_mqtt_errors_total",
		Help: "Failures by operation: connect, subscribe, connection (lost), emit.",
	}, []string{"adapter", "op"})
	mUnacked = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_mqtt_unacked",
		Help: "Messages received and not yet acknowledged (waiting or being emitted).",
	}, []string{"adapter"})
	mEmitting = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_mqtt_emitting",
		Help: "Messages inside Sink.Emit now (at most max_inflight).",
	}, []string{"adapter"})
	mReconnects = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_mqtt_reconnects_total",
		Help: "Connections ended, by reason: connection_lost, silence, emit_error, backpressure, subscribe.",
	}, []string{"adapter", "reason"})
	mBatch = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "vigd_mqtt_emit_batch_size",
		Help:    "Messages of one topic handed to the sink in one EmitBatch (batches of 2 or more).",
		Buckets: []float64{2, 4, 8, 16, 32, 64, 128, 256},
	}, []string{"adapter"})
	mLastMessage = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_mqtt_last_message_timestamp_seconds",
		Help: "Unix time of the last message received.",
	}, []string{"adapter"})
)

// metrics holds one adapter's children, resolved once.
type metrics struct {
	connected, unacked, emitting, lastMessage prometheus.Gauge
	messages, acked, ackLost                  prometheus.Counter
	batch                                     prometheus.Observer
	name                                      string
}

func newMetrics(name string) metrics {
	return metrics{
		name:        name,
		connected:   mConnected.WithLabelValues(name),
		unacked:     mUnacked.WithLabelValues(name),
		emitting:    mEmitting.WithLabelValues(name),
		lastMessage: mLastMessage.WithLabelValues(name),
		messages:    mMessages.WithLabelValues(name),
		acked:       mAcked.WithLabelValues(name),
		ackLost:     mAckLost.WithLabelValues(name),
		batch:       mBatch.WithLabelValues(name),
	}
}

func (m metrics) ignored(reason string) { mIgnored.WithLabelValues(m.name, reason).Inc() }
func (m metrics) failed(op string)      { mErrors.WithLabelValues(m.name, op).Inc() }
func (m metrics) reconnect(reason string) {
	mReconnects.WithLabelValues(m.name, reason).Inc()
}
