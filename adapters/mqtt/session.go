package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
)

// endReason says why a connection ended.
type endReason string

const (
	reasonShutdown     endReason = "shutdown"
	reasonSetup        endReason = "setup" // password or TLS files unreadable
	reasonConnect      endReason = "connect"
	reasonSubscribe    endReason = "subscribe"
	reasonLost         endReason = "connection_lost"
	reasonSilence      endReason = "silence"
	reasonEmit         endReason = "emit_error"
	reasonBackpressure endReason = "backpressure"
)

type sessionEnd struct {
	reason     endReason
	err        error
	subscribed bool
	broker     string
}

// disconnectQuiesce is how long Disconnect waits for the DISCONNECT packet
// to be written.
const disconnectQuiesce = 250 // ms

// ackFlush is how long after the last Ack the adapter waits before it
// disconnects on purpose. Ack() returns once paho has taken the packet, but
// paho picks between it and the DISCONNECT at random when both are ready;
// an acknowledgement overtaken is lost and the message comes again (a
// duplicate, not a loss). paho passes it on in microseconds.
const ackFlush = 50 * time.Millisecond

// session is one connection: one paho client from CONNECT to its end.
type session struct {
	a      *Adapter
	fl     *flow
	client paho.Client     // set before Connect
	ctx    context.Context // Run's: Emit and waits end with it
	sink   adapters.Sink
	bsink  adapters.BatchSink // sink, when it takes batches; else nil

	end        chan struct{} // closed by finish
	endOnce    sync.Once
	reason     endReason // set before end is closed
	err        error
	subscribed atomic.Bool
	subAt      atomic.Int64 // unix nanoseconds of the SUBACK
	lastAck    atomic.Int64 // unix nanoseconds of the last Ack
	// ackMu orders acknowledgements before the deliberate close: Ack is
	// made under RLock while closed is false; session sets closed under
	// Lock before it waits for the last acks and disconnects.
	ackMu      sync.RWMutex
	closed     bool
	broker     atomic.Pointer[string]
	onConnDone chan struct{} // closed when the OnConnect handler returns
	opened     chan struct{} // closed when Connect succeeded; present is set
	present    atomic.Bool   // the broker kept the session

	// Arrival order of QoS 1/2 messages, per topic (see the package doc).
	mu        sync.Mutex
	tickets   map[uint16]ticket // packet id → place in its topic's lane
	lanes     map[string]*lane
	unordered bool          // order given up: connection over, or ids did not add up
	loose     chan struct{} // closed when unordered becomes true
	looseOnce sync.Once
	warned    map[string]bool // unmatched topics already logged
}

type ticket struct {
	topic string
	seq   uint64
}

// lane orders one topic's messages: seq head may emit; tail is the next
// seq to hand out; turn is closed (and replaced) each time head moves;
// parked holds the messages waiting for their turn, ready to emit.
type lane struct {
	head, tail uint64
	turn       chan struct{}
	parked     map[uint64]*pending
}

// pending is a message ready for the sink, waiting in its lane.
type pending struct {
	m     paho.Message
	f     *adapters.Frame
	taken bool          // in a batch (under session.mu)
	done  chan struct{} // closed by the batch's leader when it is settled
}

// maxBatch bounds one EmitBatch; the broker's in-flight window keeps it
// lower in practice.
const maxBatch = 256

func newSession(a *Adapter, ctx context.Context, sink adapters.Sink, fl *flow) *session {
	bsink, _ := sink.(adapters.BatchSink)
	return &session{
		a: a, fl: fl, ctx: ctx, sink: sink, bsink: bsink,
		end:        make(chan struct{}),
		onConnDone: make(chan struct{}),
		opened:     make(chan struct{}),
		tickets:    map[uint16]ticket{},
		lanes:      map[string]*lane{},
		loose:      make(chan struct{}),
		warned:     map[string]bool{},
	}
}

// finish ends the session (first reason wins).
func (s *session) finish(r endReason, err error) {
	s.endOnce.Do(func() {
		s.reason, s.err = r, err
		s.mu.Lock()
		s.releaseLocked()
		s.mu.Unlock()
		close(s.end)
	})
}

func (s *session) releaseLocked() {
	s.unordered = true
	s.looseOnce.Do(func() { close(s.loose) })
}

func (s *session) brokerName() string {
	if p := s.broker.Load(); p != nil {
		return *p
	}
	return ""
}

// session runs one connection to its end.
func (a *Adapter) session(ctx context.Context, sink adapters.Sink, fl *flow, clientID string) sessionEnd {
	s := newSession(a, ctx, sink, fl)
	opts, err := a.clientOptions(clientID, s)
	if err != nil {
		return sessionEnd{reason: reasonSetup, err: err}
	}
	c := paho.NewClient(opts)
	s.client = c
	tok := c.Connect()
	// Connect is bounded by connect_timeout per broker; paho does not take
	// a Disconnect well while connecting, so it is waited for even when ctx
	// ends first.
	<-tok.Done()
	if err := tok.Error(); err != nil {
		return sessionEnd{reason: reasonConnect, err: err, broker: s.brokerName()}
	}
	if ct, ok := tok.(*paho.ConnectToken); ok {
		s.present.Store(ct.SessionPresent())
	}
	close(s.opened)

	var tick <-chan time.Time
	if a.cfg.SilenceTimeout > 0 {
		every := min(a.cfg.SilenceTimeout/4, time.Second)
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
wait:
	for {
		select {
		case <-ctx.Done():
			s.finish(reasonShutdown, nil)
			// Let the handlers finish (Emit sees ctx) while the connection
			// is still there to carry the acknowledgements of what they did
			// get on disk.
			fl.shutdown()
			break wait
		case <-s.end:
			break wait
		case now := <-tick:
			if s.silent(now) {
				s.finish(reasonSilence, nil)
				break wait
			}
		}
	}
	a.setDisconnected()
	s.ackMu.Lock()
	s.closed = true // no Ack from now on: paho would drop it, or race the DISCONNECT
	s.ackMu.Unlock()
	if s.reason != reasonLost {
		s.flushAcks()
	}
	c.Disconnect(disconnectQuiesce)
	// paho starts OnConnect for every connection it reports; wait for it so
	// no goroutine of this session outlives it (bounded, in case a future
	// paho skips it).
	select {
	case <-s.onConnDone:
	case <-time.After(a.cfg.ConnectTimeout + time.Second):
	}
	return sessionEnd{reason: s.reason, err: s.err, subscribed: s.subscribed.Load(), broker: s.brokerName()}
}

// ack acknowledges a message (a no-op for QoS 0) and notes when. It
// reports false for a QoS 1/2 message whose connection is gone or being
// closed: the acknowledgement cannot reach the broker (paho would drop it),
// so the broker sends the message again on the next connection.
func (s *session) ack(m paho.Message) bool {
	if m.Qos() == 0 {
		return true
	}
	s.ackMu.RLock()
	defer s.ackMu.RUnlock()
	if s.closed || !s.client.IsConnectionOpen() {
		return false
	}
	m.Ack()
	s.lastAck.Store(time.Now().UnixNano())
	return true
}

// flushAcks gives the last acknowledgements time to reach the socket
// before a deliberate disconnect.
func (s *session) flushAcks() {
	last := s.lastAck.Load()
	if last == 0 {
		return
	}
	if d := ackFlush - time.Since(time.Unix(0, last)); d > 0 {
		time.Sleep(d)
	}
}

// silent reports a connection that is subscribed, holds no message, and
// has seen none for silence_timeout (a sink that blocks makes the broker
// hold messages back; that is not silence).
func (s *session) silent(now time.Time) bool {
	if !s.subscribed.Load() {
		return false
	}
	inHand, lastIdle := s.fl.idle()
	if inHand > 0 {
		return false
	}
	last := time.Unix(0, s.subAt.Load())
	for _, t := range []time.Time{s.a.lastMessage(), lastIdle} {
		if t.After(last) {
			last = t
		}
	}
	return now.Sub(last) >= s.a.cfg.SilenceTimeout
}

func (a *Adapter) clientOptions(clientID string, s *session) (*paho.ClientOptions, error) {
	o := paho.NewClientOptions()
	for _, b := range a.cfg.Brokers {
		o.AddBroker(b)
	}
	o.SetClientID(clientID)
	if a.cfg.Username != "" {
		o.SetUsername(a.cfg.Username)
	}
	if a.cfg.PasswordFile != "" {
		b, err := os.ReadFile(a.cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if pw == "" {
			return nil, fmt.Errorf("password_file %s is empty", a.cfg.PasswordFile)
		}
		o.SetPassword(pw)
	}
	if a.needsTLS() {
		tc, err := a.cfg.TLS.build()
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(tc)
	}
	o.SetProtocolVersion(4) // 3.1.1; no silent fallback to 3.1 on a refusal
	o.SetCleanSession(a.cfg.CleanSession)
	o.SetKeepAlive(a.cfg.KeepAlive)
	o.SetPingTimeout(min(a.cfg.KeepAlive, 10*time.Second))
	o.SetConnectTimeout(a.cfg.ConnectTimeout)
	o.SetWriteTimeout(a.cfg.ConnectTimeout)
	o.SetAutoReconnect(false) // Run reconnects, with a new client
	o.SetConnectRetry(false)
	o.SetResumeSubs(false)
	o.SetOrderMatters(false)   // see the package doc
	o.SetAutoAckDisabled(true) // Ack only after a durable Emit
	o.SetStore(orderStore{Store: paho.NewMemoryStore(), s: s})
	o.SetDefaultPublishHandler(s.handle) // subscriptions carry no callback: one handler call per message
	o.SetOnConnectHandler(s.onConnect)
	o.SetConnectionLostHandler(func(_ paho.Client, err error) { s.finish(reasonLost, err) })
	o.SetConnectionAttemptHandler(func(broker *url.URL, tc *tls.Config) *tls.Config {
		name := broker.Redacted()
		s.broker.Store(&name)
		return tc
	})
	return o, nil
}

func (a *Adapter) needsTLS() bool {
	for _, b := range a.cfg.Brokers {
		if strings.HasPrefix(b, "ssl://") || strings.HasPrefix(b, "wss://") {
			return true
		}
	}
	return false
}

// build reads the PEM files (at each connect, so renewed certificates are
// picked up).
func (t TLSConfig) build() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // operator's explicit choice, warned at start
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate in it", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// onConnect subscribes on every connection: a broker that lost the
// session (restarted without persistence) knows no subscription any more.
func (s *session) onConnect(c paho.Client) {
	defer close(s.onConnDone)
	filters := make(map[string]byte, len(s.a.cfg.Topics))
	for _, t := range s.a.cfg.Topics {
		filters[t.Topic] = byte(t.QoS)
	}
	tok := c.SubscribeMultiple(filters, nil)
	timer := time.NewTimer(s.a.cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
	case <-s.end:
		return
	case <-timer.C:
		s.finish(reasonSubscribe, errors.New("no SUBACK within connect_timeout"))
		return
	}
	if err := tok.Error(); err != nil {
		s.finish(reasonSubscribe, err)
		return
	}
	st, _ := tok.(*paho.SubscribeToken)
	var granted map[string]byte
	if st != nil {
		granted = st.Result()
	}
	for _, t := range s.a.cfg.Topics {
		g, ok := granted[t.Topic]
		if !ok || g == 0x80 {
			s.finish(reasonSubscribe, fmt.Errorf("broker refused subscription to %q", t.Topic))
			return
		}
		if int(g) < t.QoS {
			s.a.log.WithFields(logrus.Fields{"topic": t.Topic, "qos": t.QoS, "granted_qos": int(g)}).
				Warn("broker granted a lower qos")
		}
	}
	s.subAt.Store(time.Now().UnixNano())
	s.subscribed.Store(true)
	select {
	case <-s.end: // ended while subscribing: do not report it up
		return
	default:
	}
	select { // wait for Connect's result, for session_present
	case <-s.opened:
	case <-s.end:
		return
	}
	s.a.setSubscribed(s.brokerName(), s.present.Load())
}

// handle carries one message through Emit and Ack. paho runs it in a
// goroutine of its own (SetOrderMatters(false)); acknowledging before it
// returns is what keeps paho v1.5.0 from panicking on a dead connection.
//
// With a BatchSink, the handler whose turn it is in a topic's lane also
// takes the messages right behind it that are already waiting (their
// handlers are parked, see take) and hands them to the sink in one
// EmitBatch: in order, one fsync for all. It acknowledges each durable one
// while their handlers still wait (closing done lets them return).
func (s *session) handle(_ paho.Client, m paho.Message) {
	fl := s.fl
	h := &hold{qos0: m.Qos() == 0}
	if !fl.enter(h) {
		return // Run is over: leave it unacknowledged
	}
	defer fl.leave(h)
	received := time.Now()
	s.a.noteMessage(received)
	// Only QoS 0 counts against max_buffered: QoS 1/2 messages held are
	// bounded by the broker's in-flight window, and a disconnect would only
	// make the broker send them all again (after a restart it resends its
	// whole in-flight list at once; pausing for that burst never ends).
	if h.qos0 && fl.waiting0() > s.a.cfg.MaxBuffered {
		s.finish(reasonBackpressure, nil)
	}

	r, segs := s.a.route(m.Topic())
	var p *pending
	if r != nil && !(m.Retained() && s.a.cfg.Retained == RetainedIgnore) {
		p = &pending{m: m, f: s.a.frame(r, segs, m, received), done: make(chan struct{})}
	}
	batch := []*pending{p}
	if t, ok := s.take(m, p); ok {
		n := 1 // places this handler moves its lane on by
		defer func() { s.done(t, n) }()
		var lead bool
		batch, lead = s.waitTurn(t, p)
		if !lead {
			return // Run is over, or an earlier handler emitted it in its batch
		}
		n = max(len(batch), 1)
	}
	if p != nil {
		defer func() {
			for _, q := range batch[1:] {
				close(q.done)
			}
		}()
	}

	switch {
	case r == nil:
		// A kept session can hold subscriptions from an older config.
		s.mu.Lock()
		first := !s.warned[m.Topic()]
		s.warned[m.Topic()] = true
		s.mu.Unlock()
		if first {
			s.a.log.WithField("topic", m.Topic()).
				Warn("message on a topic not configured (subscription left in the broker session?); acknowledged and dropped")
		}
		s.ack(m)
		s.a.m.ignored("unmatched")
		return
	case p == nil:
		s.a.log.WithField("topic", m.Topic()).Trace("retained message ignored")
		s.ack(m)
		s.a.m.ignored("retained")
		return
	}
	if !fl.acquire(s.ctx, h) {
		return
	}
	defer fl.release()
	if len(batch) == 1 {
		s.settle(m, p.f, s.sink.Emit(s.ctx, p.f))
		return
	}
	frames := make([]*adapters.Frame, len(batch))
	for i, q := range batch {
		frames[i] = q.f
	}
	errs := make([]error, len(batch))
	s.bsink.EmitBatch(s.ctx, frames, errs)
	s.a.m.batch.Observe(float64(len(batch)))
	for i, q := range batch {
		s.settle(q.m, q.f, errs[i])
	}
}

// settle acknowledges a message whose Emit was durable. Otherwise a QoS
// 1/2 message in a kept session stays unacknowledged and the connection
// ends (the broker sends it again on the next); any other is emitted
// again here, with backoff, until durable or Run ends.
func (s *session) settle(m paho.Message, f *adapters.Frame, err error) {
	redeliverable := m.Qos() > 0 && !s.a.cfg.CleanSession
	var b adapters.Backoff
	for {
		if adapters.Durable(err) {
			if s.ack(m) {
				s.a.m.acked.Inc()
			} else {
				s.a.m.ackLost.Inc()
			}
			if n := s.a.emitFails.Swap(0); n > 0 {
				s.a.log.WithField("count", n).Info("emit works again")
			}
			s.a.log.WithFields(logrus.Fields{"topic": f.Source, "bytes": len(f.Payload), "qos": int(m.Qos())}).
				Trace("frame emitted")
			return
		}
		if s.ctx.Err() != nil {
			return // shutting down: unacknowledged, the broker keeps it for the session
		}
		s.a.m.failed("emit")
		l := s.a.log.WithError(err).WithFields(logrus.Fields{"topic": f.Source, "qos": int(m.Qos())})
		level := logrus.WarnLevel
		if s.a.emitFails.Add(1) > 1 {
			level = logrus.DebugLevel
		}
		if redeliverable {
			l.Log(level, "emit failed; not acknowledged, the broker sends it again after reconnect")
			s.finish(reasonEmit, err)
			return
		}
		// Nobody would send it again: keep it and retry here.
		l.Log(level, "emit failed; retrying")
		if !b.Wait(s.ctx) {
			return
		}
		err = s.sink.Emit(s.ctx, f)
	}
}

// orderStore is paho's memory store plus the arrival order of QoS 1/2
// PUBLISH packets: paho stores each one ("i.ID") on its reading goroutine
// before dispatching it.
type orderStore struct {
	paho.Store
	s *session
}

func (o orderStore) Put(key string, p packets.ControlPacket) {
	if pub, ok := p.(*packets.PublishPacket); ok && strings.HasPrefix(key, "i.") {
		o.s.assign(pub.MessageID, pub.TopicName)
	}
	o.Store.Put(key, p)
}

// assign gives a packet id the next place in its topic's lane.
func (s *session) assign(id uint16, topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unordered {
		return
	}
	if _, dup := s.tickets[id]; dup {
		// An id reused before its handler ran: cannot tell the two apart.
		s.releaseLocked()
		return
	}
	l := s.lanes[topic]
	if l == nil {
		l = &lane{turn: make(chan struct{}), parked: map[uint64]*pending{}}
		s.lanes[topic] = l
	}
	s.tickets[id] = ticket{topic: topic, seq: l.tail}
	l.tail++
}

// take finds a message's place, if it has one, and parks p (nil for a
// message that will not be emitted) in its lane for a batch to pick up.
func (s *session) take(m paho.Message, p *pending) (ticket, bool) {
	if m.Qos() == 0 {
		return ticket{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tickets[m.MessageID()]
	if !ok {
		return ticket{}, false
	}
	delete(s.tickets, m.MessageID())
	if t.topic != m.Topic() {
		s.releaseLocked()
	}
	if l := s.lanes[t.topic]; p != nil && l != nil && !s.unordered {
		l.parked[t.seq] = p
	}
	return t, true
}

// waitTurn blocks until the message is at the head of its lane (or the
// session gave up ordering) and returns the batch to emit: p and, with a
// BatchSink, the parked messages right behind it. lead is false when Run
// ends first or an earlier handler took p into its batch (p.done is
// closed by then).
func (s *session) waitTurn(t ticket, p *pending) (batch []*pending, lead bool) {
	for {
		s.mu.Lock()
		if p != nil && p.taken {
			s.mu.Unlock()
			<-p.done // the leader closes it whatever happens
			return nil, false
		}
		l := s.lanes[t.topic]
		if s.unordered || l == nil || l.head == t.seq {
			batch = s.collectLocked(l, t, p)
			s.mu.Unlock()
			return batch, true
		}
		turn := l.turn
		s.mu.Unlock()
		select {
		case <-turn:
		case <-s.loose:
		case <-s.ctx.Done():
			return nil, false
		}
	}
}

// collectLocked takes p and the parked messages with the next places of
// its lane, up to maxBatch, when the sink takes batches and order is kept.
func (s *session) collectLocked(l *lane, t ticket, p *pending) []*pending {
	if p == nil {
		return []*pending{nil}
	}
	p.taken = true
	if l == nil {
		return []*pending{p}
	}
	delete(l.parked, t.seq)
	batch := []*pending{p}
	if s.unordered || s.bsink == nil {
		return batch
	}
	for seq := t.seq + 1; len(batch) < maxBatch; seq++ {
		q := l.parked[seq]
		if q == nil {
			break
		}
		delete(l.parked, seq)
		q.taken = true
		batch = append(batch, q)
	}
	return batch
}

// done moves the lane on past a finished message and the n-1 after it
// that went in its batch (a no-op for a message not at the head: a
// batch's leader moved the lane past it already).
func (s *session) done(t ticket, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lanes[t.topic]
	if l == nil {
		return
	}
	if l.head == t.seq {
		l.head += uint64(n)
		close(l.turn)
		l.turn = make(chan struct{})
	}
	if l.head >= l.tail {
		delete(s.lanes, t.topic)
	}
}

// flow is shared by every connection of one Run: the emit slots, the count
// of messages held, and the handler calls still inside the adapter.
type flow struct {
	slots chan struct{}
	m     metrics

	mu        sync.Mutex
	closed    bool
	active    int // handler calls inside the adapter
	drained   chan struct{}
	drainOnce sync.Once
	inHand    int // received, not finished
	emitting  int
	q0Waiting int       // QoS 0 messages received, not yet inside Emit
	lastIdle  time.Time // when inHand last fell to 0
}

func newFlow(maxInflight int, m metrics) *flow {
	return &flow{slots: make(chan struct{}, maxInflight), m: m, drained: make(chan struct{})}
}

// hold is one handler call's place in the flow.
type hold struct {
	qos0    bool
	waiting bool // a QoS 0 message counted in q0Waiting
}

func (f *flow) enter(h *hold) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.active++
	f.inHand++
	if h.qos0 {
		h.waiting = true
		f.q0Waiting++
	}
	f.m.unacked.Set(float64(f.inHand))
	return true
}

func (f *flow) leave(h *hold) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active--
	f.inHand--
	f.unwait(h)
	if f.inHand == 0 {
		f.lastIdle = time.Now()
	}
	f.m.unacked.Set(float64(f.inHand))
	if f.closed && f.active == 0 {
		f.drainOnce.Do(func() { close(f.drained) })
	}
}

// waiting is how many held messages are not inside Emit.
func (f *flow) waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inHand - f.emitting
}

// waiting0 is how many held QoS 0 messages are not inside Emit.
func (f *flow) waiting0() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.q0Waiting
}

func (f *flow) unwait(h *hold) {
	if h.waiting {
		h.waiting = false
		f.q0Waiting--
	}
}

func (f *flow) idle() (inHand int, lastIdle time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inHand, f.lastIdle
}

func (f *flow) acquire(ctx context.Context, h *hold) bool {
	if ctx.Err() != nil {
		return false
	}
	select {
	case f.slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	f.mu.Lock()
	f.emitting++
	f.unwait(h)
	f.m.emitting.Set(float64(f.emitting))
	f.mu.Unlock()
	return true
}

func (f *flow) release() {
	f.mu.Lock()
	f.emitting--
	f.m.emitting.Set(float64(f.emitting))
	f.mu.Unlock()
	<-f.slots
}

// waitBacklog waits until every held message is inside Emit or done
// (after a back-pressure pause), or ctx ends.
func (f *flow) waitBacklog(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for f.waiting() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shutdown refuses new handler calls and waits for those inside (they end
// promptly: Run's ctx is cancelled). It may be called more than once.
func (f *flow) shutdown() {
	f.mu.Lock()
	f.closed = true
	if f.active == 0 {
		f.drainOnce.Do(func() { close(f.drained) })
	}
	f.mu.Unlock()
	<-f.drained
}

var _ paho.Store = orderStore{}
