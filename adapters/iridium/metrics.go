package iridium

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metric names are prefixed vigd_iridium_ so they cannot clash with the
// counters other adapter packages register on the default registry.
var (
	framesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_iridium_frames_total",
		Help: "Iridium SBD frames emitted durably (queued or dead-lettered).",
	}, []string{"adapter", "kind"})
	errorsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_iridium_errors_total",
		Help: "Iridium SBD adapter errors by reason (read, parse, emit, ack, auth, connect, dedup).",
	}, []string{"adapter", "kind", "reason"})
	duplicatesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_iridium_duplicates_total",
		Help: "Iridium SBD redeliveries recognised and acknowledged without emitting again.",
	}, []string{"adapter", "kind"})
)

// Metrics are one adapter instance's counters.
type Metrics struct {
	Frames     prometheus.Counter
	Duplicates prometheus.Counter
	errors     *prometheus.CounterVec
}

// NewMetrics returns the counters of adapter instance name of kind.
func NewMetrics(name, kind string) *Metrics {
	return &Metrics{
		Frames:     framesTotal.WithLabelValues(name, kind),
		Duplicates: duplicatesTotal.WithLabelValues(name, kind),
		errors:     errorsTotal.MustCurryWith(prometheus.Labels{"adapter": name, "kind": kind}),
	}
}

// Error counts one error of reason.
func (m *Metrics) Error(reason string) { m.errors.WithLabelValues(reason).Inc() }

// DedupKey is the (IMEI, MOMSN, CDR reference) key of a DirectIP MO message.
func (m *MO) DedupKey() string {
	h := m.Header
	return h.IMEI + "/" + strconv.Itoa(int(h.MOMSN)) + "/" + strconv.FormatUint(uint64(h.CDRRef), 10)
}

// DedupKey is the (IMEI, MOMSN, time of session) key of an SBD e-mail; the
// e-mail carries no CDR reference, and the session time tells a wrapped
// MOMSN apart.
func (m *SBDMail) DedupKey() string {
	return m.IMEI + "/" + strconv.Itoa(int(m.MOMSN)) + "/" + m.SessionTime.UTC().Format(time.RFC3339)
}

// RawKey is the de-duplication key of a message kept raw because it could
// not be parsed, so a redelivery is not dead-lettered twice.
func RawKey(raw []byte) string {
	sum := sha256.Sum256(raw)
	return "raw/" + hex.EncodeToString(sum[:16])
}
