// Package mqtt is the "mqtt" adapter: it subscribes to topics on an MQTT
// 3.1.1 broker with github.com/eclipse/paho.mqtt.golang and hands each
// message to the sink as a Frame (Kind "mqtt", Source the topic, Offset -1).
//
// # Nothing acknowledged before it is on disk
//
// The client runs with manual acknowledgement (SetAutoAckDisabled): a QoS 1
// or 2 message is acknowledged (PUBACK / PUBREC) only after Sink.Emit
// returned an error for which adapters.Durable is true. With a stable
// client id and clean_session false (the default) the broker keeps the
// session while vigd is down, stopped or killed, and sends every message
// not acknowledged again on the next connection. The guarantee is
// therefore at least once: a message emitted whose acknowledgement did not
// reach the broker (connection lost, vigd killed) is emitted again. A
// message still held when its connection ends is emitted all the same (the
// broker may have lost the session), but not acknowledged: paho would drop
// the PUBACK. It counts in vigd_mqtt_ack_lost_total, not acked_total, and
// its redelivery is an expected duplicate.
//
// A non-durable Emit error (disk full) leaves the message unacknowledged.
// MQTT 3.1.1 brokers resend only on a new connection, so for a QoS 1/2
// message in a kept session the adapter ends the connection and reconnects
// after the shared backoff: the broker sends it (and everything else not
// acknowledged) again; the backoff is not reset while emits keep failing.
// A QoS 0 message, or any message under clean_session true, will never be
// sent again, so the adapter keeps it and retries Emit itself, with
// backoff, until it is durable or Run ends.
//
// # Why handlers run concurrently, and what order is kept
//
// paho's router calls handlers in order on one goroutine (SetOrderMatters
// true) or each in its own goroutine (false). In order mode a handler that
// waits for the sink blocks the router, then the socket reader, so PINGRESP
// is not read and the connection drops after the keep-alive. In paho
// v1.5.0 (the version in go.mod) an Ack() made after the handler returned
// can also panic once the connection is gone (paho issue #726, fixed in
// v1.5.1), so the message must be acknowledged inside its handler call.
// The adapter therefore uses SetOrderMatters(false) and each handler
// goroutine carries its message through Emit and Ack:
//
//   - at most max_inflight messages are inside Sink.Emit at once (a
//     semaphore); the others wait, still unacknowledged;
//   - for QoS 1/2 the broker's in-flight window (Mosquitto
//     max_inflight_messages, default 20) bounds how many wait, so they are
//     never a reason to disconnect: after a reconnect the broker resends
//     its whole in-flight list at once (over a thousand messages seen),
//     and pausing for that burst made the broker send it all again on the
//     next connection — a livelock that only grew duplicates;
//   - for QoS 0 nothing bounds them, so when more than max_buffered QoS 0
//     messages are waiting the adapter disconnects — the broker keeps the
//     rest for the session (QoS 0 only with Mosquitto's
//     queue_qos0_messages; what it had already written to the socket is
//     lost: QoS 0 is at most once) — and reconnects, at the shortest
//     backoff, once they have all reached the sink;
//   - the socket keeps being read, so keep-alive works however long the
//     sink blocks.
//
// Order guarantee: within one connection, QoS 1/2 messages of the same
// topic are emitted one after the other, in the order the broker sent them;
// messages of different topics are emitted concurrently. When the sink is
// an adapters.BatchSink (the pipeline), the messages of a topic already
// waiting behind the one whose turn it is go with it in one EmitBatch, in
// order: one commit for the lot instead of one per message, which is what
// lets a backlog on few topics drain faster than one fsync per message. The arrival order
// is taken from the client's Store, which paho calls for every QoS 1/2
// PUBLISH on the reading goroutine before dispatching it (the handler
// goroutines themselves may start in any order). QoS 0 messages carry no
// packet id and get no order guarantee. After a connection ends, what is
// still held is emitted without order, and redelivered messages arrive
// after newer ones; decoders must rely on timestamps, not arrival order.
//
// # Sessions
//
// Frames carry the topic's decoder; when a topic names none, Decoder is
// empty and the pipeline applies the adapter's decoder key. Identity is
// the topic level named by identity: {segment: N}, or empty ("payload").
//
// Each connection uses a new paho client (same id, same options), so no
// state is carried between connections by the library and the connect
// loop is the shared adapters.Backoff. Subscriptions are made in the
// OnConnect handler, on every connection, whether or not the broker kept
// the session. Retained messages replayed on subscribing are acknowledged
// and dropped by default (retained: ignore); with "take" they are emitted
// on every (re)subscription.
package mqtt

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
)

// Kind is the adapter kind name in the configuration.
const Kind = "mqtt"

func init() {
	adapters.Register(adapters.Kind{
		Name:      Kind,
		NewConfig: func() adapters.Config { return DefaultConfig() },
		New: func(name string, cfg adapters.Config, env adapters.Env) (adapters.Adapter, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("mqtt: config is %T, not *mqtt.Config", cfg)
			}
			return New(name, *c, env)
		},
	})
}

// Adapter is one configured MQTT input. Build it with New; Run it once.
type Adapter struct {
	name   string
	cfg    Config
	log    *logrus.Entry
	routes []route
	m      metrics

	mu    sync.Mutex
	state state

	emitFails atomic.Int64 // failed emits in a row, for log levels
}

type route struct {
	filter   filter
	decoder  string
	identity Identity
}

// state is what Status reports.
type state struct {
	running     bool
	subscribed  bool
	broker      string
	lastMessage time.Time
	lastErr     string
	failStreak  int // connections that ended badly in a row, for log levels
	silent      bool
	silentSince time.Time
}

// New checks the config and builds the adapter; it does no I/O.
func New(name string, cfg Config, env adapters.Env) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := env.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger()).WithFields(logrus.Fields{
			"component": "adapter", "name": name, "kind": Kind,
		})
	}
	a := &Adapter{name: name, cfg: cfg, log: log, m: newMetrics(name)}
	for _, t := range cfg.Topics {
		f, _ := parseFilter(t.Topic) // checked by Validate
		a.routes = append(a.routes, route{filter: f, decoder: t.Decoder, identity: t.Identity})
	}
	a.cfg.Brokers = append([]string(nil), cfg.Brokers...)
	a.cfg.Topics = append([]Topic(nil), cfg.Topics...)
	return a, nil
}

// Run connects, subscribes and emits until ctx is cancelled, reconnecting
// with backoff; it returns nil once every goroutine it started (paho's
// handler goroutines included) is done with the sink.
func (a *Adapter) Run(ctx context.Context, sink adapters.Sink) error {
	if a.cfg.TLS.InsecureSkipVerify {
		a.log.Warn("tls certificate verification is off (insecure_skip_verify)")
	}
	clientID := a.clientID()
	a.log.WithFields(logrus.Fields{
		"client_id": clientID, "brokers": a.redactedBrokers(), "clean_session": a.cfg.CleanSession,
	}).Info("starting")
	a.mu.Lock()
	a.state = state{running: true}
	a.mu.Unlock()
	fl := newFlow(a.cfg.MaxInflight, a.m)
	defer func() {
		fl.shutdown() // ctx is done: handlers are on their way out
		a.m.connected.Set(0)
		a.mu.Lock()
		a.state.running, a.state.subscribed = false, false
		a.mu.Unlock()
		a.log.Info("stopped")
	}()

	var b adapters.Backoff
	for {
		end := a.session(ctx, sink, fl, clientID)
		if ctx.Err() != nil {
			return nil
		}
		a.sessionEnded(end)
		if end.reason == reasonBackpressure {
			fl.waitBacklog(ctx)
		}
		if resetsBackoff(end) {
			b.Reset()
		}
		if !b.Wait(ctx) {
			return nil
		}
	}
}

// resetsBackoff says whether the next connect comes at the shortest delay:
// after a connection that worked, and after a back-pressure pause (the
// adapter's own choice, not a broker failure, even when the burst came
// before the SUBACK). Failed emits and refused subscriptions keep growing
// it: reconnecting will not fix them soon.
func resetsBackoff(end sessionEnd) bool {
	switch end.reason {
	case reasonBackpressure:
		return true
	case reasonEmit, reasonSubscribe:
		return false
	}
	return end.subscribed
}

// sessionEnded logs and counts how a connection ended: the first failure of
// a streak at warn (error when the operator must fix files), repeats at debug.
func (a *Adapter) sessionEnded(end sessionEnd) {
	switch end.reason {
	case reasonLost, reasonSilence, reasonEmit, reasonBackpressure, reasonSubscribe:
		a.m.reconnect(string(end.reason))
	}
	switch end.reason {
	case reasonConnect:
		a.m.failed("connect")
	case reasonSubscribe:
		a.m.failed("subscribe")
	case reasonLost:
		a.m.failed("connection")
	}
	a.mu.Lock()
	if end.err != nil {
		a.state.lastErr = string(end.reason) + ": " + end.err.Error()
	} else {
		a.state.lastErr = string(end.reason)
	}
	if end.reason == reasonSilence {
		if !a.state.silent {
			a.state.silentSince = time.Now()
		}
		a.state.silent = true
	}
	a.state.failStreak++
	streak := a.state.failStreak
	a.mu.Unlock()

	l := a.log.WithFields(logrus.Fields{"reason": string(end.reason), "attempt": streak})
	if end.broker != "" {
		l = l.WithField("broker", end.broker)
	}
	if end.err != nil {
		l = l.WithError(end.err)
	}
	msg := map[endReason]string{
		reasonSetup:        "cannot prepare connection",
		reasonConnect:      "connect failed",
		reasonSubscribe:    "subscribe failed",
		reasonLost:         "connection lost",
		reasonSilence:      "no message within silence_timeout; reconnecting",
		reasonEmit:         "reconnecting for redelivery after failed emit",
		reasonBackpressure: "too many messages waiting for the sink; pausing",
	}[end.reason]
	switch {
	case streak > 1:
		l.Debug(msg)
	case end.reason == reasonSetup:
		l.Error(msg)
	default:
		l.Warn(msg)
	}
}

// Status reports connected-and-subscribed as healthy; a silence timeout
// keeps it unhealthy until a message arrives.
func (a *Adapter) Status() adapters.Status {
	a.mu.Lock()
	st := a.state
	a.mu.Unlock()
	now := time.Now()
	last := "no message yet"
	if !st.lastMessage.IsZero() {
		last = "last message " + now.Sub(st.lastMessage).Round(time.Second).String() + " ago"
	}
	switch {
	case !st.running:
		return adapters.Status{OK: false, Detail: "not running"}
	case st.silent:
		return adapters.Status{OK: false, Detail: fmt.Sprintf("silent: no message within silence_timeout %s since %s; %s",
			a.cfg.SilenceTimeout, st.silentSince.UTC().Format(time.RFC3339), connText(st))}
	case !st.subscribed:
		d := "disconnected"
		if st.lastErr != "" {
			d += ": " + st.lastErr
		}
		return adapters.Status{OK: false, Detail: d}
	}
	return adapters.Status{OK: true, Detail: connText(st) + "; " + last}
}

func connText(st state) string {
	if !st.subscribed {
		return "disconnected"
	}
	return "connected to " + st.broker
}

// setSubscribed records a working connection and logs it at info (the
// first one, and the recovery after a streak of failures).
func (a *Adapter) setSubscribed(broker string, sessionPresent bool) {
	a.mu.Lock()
	a.state.subscribed, a.state.broker = true, broker
	streak := a.state.failStreak
	a.state.failStreak = 0
	a.mu.Unlock()
	a.m.connected.Set(1)
	l := a.log.WithFields(logrus.Fields{"broker": broker, "session_present": sessionPresent})
	if streak > 0 {
		l.WithField("attempt", streak).Info("reconnected")
	} else {
		l.Info("connected")
	}
}

func (a *Adapter) setDisconnected() {
	a.mu.Lock()
	a.state.subscribed = false
	a.mu.Unlock()
	a.m.connected.Set(0)
}

func (a *Adapter) noteMessage(t time.Time) {
	a.mu.Lock()
	a.state.lastMessage = t
	a.state.silent = false
	a.mu.Unlock()
	a.m.messages.Inc()
	a.m.lastMessage.Set(float64(t.UnixNano()) / 1e9)
}

func (a *Adapter) lastMessage() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state.lastMessage
}

// clientID is the configured id or "vigd-HOSTNAME-NAME", stable across
// restarts of the same gateway so the broker finds the session again.
func (a *Adapter) clientID() string {
	if a.cfg.ClientID != "" {
		return a.cfg.ClientID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
				return r
			}
			return '-'
		}, s)
	}
	return "vigd-" + clean(host) + "-" + clean(a.name)
}

func (a *Adapter) redactedBrokers() []string {
	out := make([]string, 0, len(a.cfg.Brokers))
	for _, b := range a.cfg.Brokers {
		if u, err := url.Parse(b); err == nil {
			out = append(out, u.Redacted())
		}
	}
	return out
}

// route finds the first configured topic matching a message topic.
func (a *Adapter) route(topic string) (*route, []string) {
	segs := strings.Split(topic, "/")
	for i := range a.routes {
		if a.routes[i].filter.match(segs) {
			return &a.routes[i], segs
		}
	}
	return nil, segs
}

// frame builds the Frame for a message.
func (a *Adapter) frame(r *route, segs []string, m paho.Message, received time.Time) *adapters.Frame {
	f := &adapters.Frame{
		Adapter:  a.name,
		Kind:     Kind,
		Source:   m.Topic(),
		Offset:   -1,
		Received: received.UTC(),
		Payload:  m.Payload(),
		Decoder:  r.decoder,
		Meta: map[string]string{
			"topic":      m.Topic(),
			"qos":        strconv.Itoa(int(m.Qos())),
			"retained":   strconv.FormatBool(m.Retained()),
			"message_id": strconv.Itoa(int(m.MessageID())),
		},
	}
	if r.identity.From == IdentitySegment && r.identity.Segment < len(segs) {
		f.Identity = segs[r.identity.Segment]
	}
	return f
}

var (
	_ adapters.Adapter        = (*Adapter)(nil)
	_ adapters.StatusReporter = (*Adapter)(nil)
)
