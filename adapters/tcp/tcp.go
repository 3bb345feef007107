// Package tcp is the TCP listener adapter (kind "tcp"): devices and
// loggers connect, send frames (cut by adapters/framing) and, when
// configured, get a reply after each frame is durably queued.
//
// One goroutine serves each connection: it reads a frame, hands it to the
// sink and waits. When the sink takes batches (adapters.BatchSink) and the
// framing can tell what it already holds (framing.Buffered), every frame
// the last read brought goes to the sink at once and is made durable with
// one fsync: a device streaming lines is not held to one fsync per line.
// While the sink blocks (the queue is full) nothing more is read from that
// socket, so TCP flow control slows the device down instead of vigd
// buffering in memory. Replies go out in order, each only when its frame's
// result is durable (adapters.Durable); after any other error the
// connection is closed without a reply, so the device sends the frame
// again later.
//
// Against the open network (see tls.go): sources outside allowed_sources
// are closed at once, connections are bounded in total and per remote
// address, a TLS handshake has handshake_timeout, a silent connection is
// closed after idle_timeout and one that trickles a frame after
// frame_timeout, and a frame over max_frame_bytes is skipped without being
// buffered.
package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/framing"
	"github.com/vigd/vigd/adapters/netguard"
)

// Kind is the adapter kind name.
const Kind = "tcp"

func init() {
	adapters.Register(adapters.Kind{
		Name:      Kind,
		NewConfig: func() adapters.Config { return DefaultConfig() },
		New: func(name string, cfg adapters.Config, env adapters.Env) (adapters.Adapter, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("tcp: config is %T, not *tcp.Config", cfg)
			}
			return New(name, c, env)
		},
	})
}

// Listener is one configured tcp adapter.
type Listener struct {
	name          string
	cfg           Config
	framing       framing.Config
	log           *logrus.Entry
	reply         []byte
	replyRejected []byte
	identityReply []byte
	fixedID       string
	allow         netguard.AllowList
	limiter       *netguard.Limiter
	tlsConfig     *tls.Config // set by Run when tls is configured
	warnings      warnLimiter

	ready     chan struct{}
	readyOnce sync.Once

	mu        sync.Mutex
	addr      net.Addr
	listening bool
	conns     map[net.Conn]struct{}
	closing   bool // Run is shutting down: close new conns at once
	refusing  bool // full: in a streak of max_connections refusals (log at warn once)

	m metrics
}

// New builds a listener from a config; it validates and does no I/O.
func New(name string, cfg *Config, env adapters.Env) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := env.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	l := &Listener{
		name:    name,
		cfg:     *cfg,
		framing: cfg.framing(),
		log:     log,
		ready:   make(chan struct{}),
		m:       newMetrics(name),
		limiter: netguard.NewLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerIP),
	}
	l.allow, _ = netguard.ParseAllowList(cfg.AllowedSources) // checked by Validate
	l.reply, _ = framing.ParseBytes(cfg.Reply)               // checked by Validate
	l.replyRejected = l.reply
	if cfg.ReplyRejected != nil {
		l.replyRejected, _ = framing.ParseBytes(*cfg.ReplyRejected)
	}
	l.identityReply, _ = framing.ParseBytes(cfg.IdentityReply)
	if id, ok := strings.CutPrefix(cfg.Identity, identityFixed); ok {
		l.fixedID = strings.TrimSpace(id)
	}
	return l, nil
}

// Ready is closed once the listener has first bound its address.
func (l *Listener) Ready() <-chan struct{} { return l.ready }

// Addr is the bound address (":0" resolved), or nil before Run listens.
func (l *Listener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// Status reports whether the listener is up and how many connections it
// serves.
func (l *Listener) Status() adapters.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.listening {
		return adapters.Status{OK: false, Detail: "not listening on " + l.cfg.Listen}
	}
	return adapters.Status{OK: true, Detail: fmt.Sprintf("listening on %s, %d connections", l.addr, len(l.conns))}
}

// Run listens and serves until ctx is cancelled; it returns an error only
// when it cannot listen.
func (l *Listener) Run(ctx context.Context, sink adapters.Sink) error {
	tc, err := l.loadTLS()
	if err != nil {
		return err
	}
	l.tlsConfig = tc
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", l.cfg.Listen)
	if err != nil {
		return fmt.Errorf("tcp %s: listen on %s: %w", l.name, l.cfg.Listen, err)
	}
	l.mu.Lock()
	l.addr, l.listening, l.closing = ln.Addr(), true, false
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	l.readyOnce.Do(func() { close(l.ready) })
	l.log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "tls": tc != nil,
		"client_certificates": tc != nil && tc.ClientAuth == tls.RequireAndVerifyClientCert}).Info("listening")

	var wg sync.WaitGroup
	stopped := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		l.mu.Lock()
		l.closing = true
		for c := range l.conns {
			_ = c.Close()
		}
		l.mu.Unlock()
		_ = ln.Close()
	})

	backoff := adapters.Backoff{Min: 5 * time.Millisecond, Max: time.Second}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, net.ErrClosed) {
				break // cannot happen before ctx is done; do not spin
			}
			// Out of file descriptors and the like: wait and go on.
			entry := l.log.WithError(err)
			if backoff.Attempt() == 0 {
				entry.Warn("accept failed")
			} else {
				entry.Debug("accept failed")
			}
			if !backoff.Wait(ctx) {
				break
			}
			continue
		}
		backoff.Reset()
		release, ok := l.admit(c)
		if !ok {
			continue
		}
		wg.Go(func() {
			defer release()
			l.serve(ctx, c, sink)
		})
	}
	close(stopped)
	wg.Wait()
	l.mu.Lock()
	l.listening = false
	l.mu.Unlock()
	l.log.Info("stopped listening")
	return nil
}

// admit registers a new connection, or closes it at once when its source
// is not allowed or a connection limit is reached. release gives the
// limiter slot back.
func (l *Listener) admit(c net.Conn) (release func(), ok bool) {
	if !l.allow.Allows(c.RemoteAddr()) {
		l.refuse(c, netguard.RefusedNotAllowed)
		return nil, false
	}
	release, why := l.limiter.Acquire(c.RemoteAddr())
	if why != "" {
		l.refuse(c, why)
		return nil, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		_ = c.Close()
		release()
		return nil, false
	}
	if l.refusing {
		l.log.WithField("count", len(l.conns)).Info("accepting connections again")
		l.refusing = false
	}
	l.conns[c] = struct{}{}
	l.m.connections.Inc()
	return release, true
}

// refuse closes a connection that may not be served, counts it and logs
// it: at warn at the start of a streak (and then at most every
// warnEvery), else at debug, so that a flood does not flood the journal.
func (l *Listener) refuse(c net.Conn, reason string) {
	l.m.refused.WithLabelValues(reason).Inc() // before the close, which the peer sees at once
	_ = c.Close()
	entry := l.log.WithFields(logrus.Fields{"source": c.RemoteAddr().String(), "reason": reason})
	if reason == netguard.RefusedTotal {
		entry = entry.WithField("max_connections", l.cfg.MaxConnections)
	} else if reason == netguard.RefusedPerIP {
		entry = entry.WithField("max_connections_per_ip", l.cfg.MaxConnectionsPerIP)
	}
	// A full listener is one condition with a start and an end (logged
	// again at info when a connection is accepted); refusals of single
	// sources are only rate-limited.
	first := false
	if reason == netguard.RefusedTotal {
		l.mu.Lock()
		first = !l.refusing
		l.refusing = true
		l.mu.Unlock()
	}
	if first || l.warnings.allow() {
		entry.Warn("connection refused")
	} else {
		entry.Debug("connection refused")
	}
}

func (l *Listener) release(c net.Conn) {
	_ = c.Close()
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.m.connections.Dec()
}

// serve reads one connection's frames until it ends.
func (l *Listener) serve(ctx context.Context, c net.Conn, sink adapters.Sink) {
	defer l.release(c)
	remote := c.RemoteAddr().String()
	host, _, _ := net.SplitHostPort(remote)
	_, localPort, _ := net.SplitHostPort(c.LocalAddr().String())
	log := l.log.WithField("source", remote)
	log.Debug("connection opened")
	meta := map[string]string{"remote_addr": remote, "local_port": localPort}

	clientCN := ""
	if l.tlsConfig != nil {
		tc, cn, ok := l.handshake(ctx, c, log)
		if !ok {
			return
		}
		c, clientCN = tc, cn
		if cn != "" {
			meta["tls_client_cn"] = cn
		}
	}
	rd := &connReader{c: c, idle: l.cfg.IdleTimeout, frame: l.cfg.FrameTimeout, bytes: l.m.bytes}
	fr, err := framing.New(l.framing, rd)
	if err != nil {
		log.WithError(err).Error("framing setup failed") // unreachable after Validate
		return
	}
	identity := host
	needIdentity := false
	switch {
	case l.cfg.Identity == IdentityPayload:
		identity = ""
	case l.cfg.Identity == IdentityFirstFrame:
		identity, needIdentity = "", true
	case l.cfg.Identity == IdentityClientCert:
		identity = clientCN
	case l.fixedID != "":
		identity = l.fixedID
	}

	// Every frame one read brought is emitted at once when the sink takes
	// batches: one fsync for all of them. Replies still go out in order,
	// each only once its frame is durable.
	bs, batching := sink.(adapters.BatchSink)
	ready, _ := fr.(framing.Buffered)
	batching = batching && ready != nil
	var (
		frames  []*adapters.Frame
		errs    []error
		replies []byte
	)
	trace := log.Logger.IsLevelEnabled(logrus.TraceLevel)
	newFrame := func(fm framing.Frame) *adapters.Frame {
		if trace {
			log.WithFields(logrus.Fields{"offset": fm.Offset, "bytes": len(fm.Data)}).Trace("frame received")
		}
		return &adapters.Frame{
			Adapter:  l.name,
			Kind:     Kind,
			Source:   remote,
			Offset:   fm.Offset,
			Received: time.Now().UTC(),
			Payload:  fm.Data,
			Identity: identity,
			// One map for all the connection's frames: it is complete
			// before the first frame and never written after (nor by a
			// sink); a copy per frame was 7% of vigd's allocations.
			Meta: meta,
		}
	}
	for {
		fm, err := fr.Next()
		rd.frameDone()
		if err != nil {
			if l.readFailed(ctx, err, log) {
				return
			}
			continue
		}
		if needIdentity {
			identity = strings.TrimSpace(string(fm.Data))
			if identity == "" {
				l.m.frameErrors.WithLabelValues("bad_identity").Inc()
				log.Warn("blank identity frame; closing connection")
				return
			}
			needIdentity = false
			log = log.WithField("identity", identity)
			log.Debug("identity received")
			if !l.write(c, l.identityReply, log) {
				return
			}
			continue
		}
		frames = append(frames[:0], newFrame(fm))
		last := false // the connection ends after this batch
		for batching && !last && len(frames) < maxBatch && ready.Ready() {
			fm, err := fr.Next()
			rd.frameDone()
			if err != nil {
				last = l.readFailed(ctx, err, log)
				continue
			}
			frames = append(frames, newFrame(fm))
		}
		errs = append(errs[:0], make([]error, len(frames))...)
		if len(frames) == 1 {
			errs[0] = sink.Emit(ctx, frames[0])
		} else {
			bs.EmitBatch(ctx, frames, errs)
		}
		replies = replies[:0]
		queued := 0
		for i, err := range errs {
			if !adapters.Durable(err) {
				l.m.frameErrors.WithLabelValues("not_queued").Inc()
				if ctx.Err() == nil {
					log.WithError(err).WithField("offset", frames[i].Offset).Warn("frame not queued; closing connection without reply")
				}
				last = true
				break
			}
			queued++
			if err == nil {
				replies = append(replies, l.reply...)
			} else {
				replies = append(replies, l.replyRejected...)
			}
		}
		l.m.frames.Add(float64(queued))
		clear(frames) // the payloads are the pipeline's now
		if !l.write(c, replies, log) || last {
			return
		}
	}
}

// maxBatch bounds the frames handed to the sink at once (a 64 KiB read
// of short lines is about a thousand).
// 128 keeps the memory of many busy connections bounded (with 50
// connections at full speed, 1024 frames each took vigd to 60 MiB, 128 to
// 43 MiB) while one fsync still covers a whole read of short lines.
const maxBatch = 128

// readFailed counts and logs a failed Next; it reports whether the
// connection is done (anything but a bad frame that was skipped).
func (l *Listener) readFailed(ctx context.Context, err error, log *logrus.Entry) bool {
	var fe *framing.FrameError
	if errors.As(err, &fe) {
		l.m.frameErrors.WithLabelValues(fe.Reason).Inc()
		log.WithFields(logrus.Fields{"offset": fe.Offset, "reason": fe.Reason}).WithError(err).Warn("bad frame dropped")
		if fe.Fatal {
			log.Warn("framing lost; closing connection")
		}
		return fe.Fatal
	}
	switch {
	case ctx.Err() != nil:
	case errors.Is(err, io.EOF):
		log.Debug("connection closed by peer")
	case errors.Is(err, errIdle):
		log.WithField("idle_timeout", l.cfg.IdleTimeout.String()).Debug("idle connection closed")
	case errors.Is(err, errFrameTimeout):
		l.m.frameErrors.WithLabelValues("frame_timeout").Inc()
		log.WithField("frame_timeout", l.cfg.FrameTimeout.String()).Debug("frame not complete in time; connection closed")
	default:
		log.WithError(err).Debug("connection read failed")
	}
	return true
}

// write sends a reply; false when the connection is gone.
func (l *Listener) write(c net.Conn, p []byte, log *logrus.Entry) bool {
	if len(p) == 0 {
		return true
	}
	if err := c.SetWriteDeadline(time.Now().Add(l.cfg.WriteTimeout)); err != nil {
		return false
	}
	if _, err := c.Write(p); err != nil {
		log.WithError(err).Debug("reply failed")
		return false
	}
	return true
}

// errIdle ends a connection that sent nothing for idle_timeout, and
// errFrameTimeout one whose frame took longer than frame_timeout. They are
// not timeout errors on purpose: the idle framing takes those as frame
// ends.
var (
	errIdle         = errors.New("idle timeout")
	errFrameTimeout = errors.New("frame timeout")
)

// connReader is the framer's view of a connection: each Read may wait
// idle_timeout at most, a frame must be complete within frame_timeout of
// its first byte read, and a read deadline the framer sets (the idle
// framing's gap) is honoured alongside.
type connReader struct {
	c       net.Conn
	idle    time.Duration
	frame   time.Duration
	gapAt   time.Time // the framer's deadline
	frameAt time.Time // the current frame's deadline; zero between frames
	set     time.Time // deadline currently on the conn
	bytes   prometheus.Counter
	primed  bool
}

func (r *connReader) SetReadDeadline(t time.Time) error {
	r.gapAt = t
	return nil
}

// frameDone says the framer delivered (or dropped) a frame: the next byte
// read starts the next frame's clock. Bytes of the next frame the framer
// already holds are covered by idle_timeout until more arrive.
func (r *connReader) frameDone() { r.frameAt = time.Time{} }

func (r *connReader) Read(p []byte) (int, error) {
	var idleAt time.Time
	if r.idle > 0 {
		idleAt = time.Now().Add(r.idle)
	}
	dl := idleAt
	for _, t := range []time.Time{r.gapAt, r.frameAt} {
		if !t.IsZero() && (dl.IsZero() || t.Before(dl)) {
			dl = t
		}
	}
	if !r.primed || !dl.Equal(r.set) {
		if err := r.c.SetReadDeadline(dl); err != nil {
			return 0, err
		}
		r.set, r.primed = dl, true
	}
	n, err := r.c.Read(p)
	if n > 0 {
		r.bytes.Add(float64(n))
		if r.frame > 0 && r.frameAt.IsZero() {
			r.frameAt = time.Now().Add(r.frame)
		}
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		now := time.Now()
		if !r.gapAt.IsZero() && !now.Before(r.gapAt) {
			return n, err // the framer's own deadline
		}
		if !r.frameAt.IsZero() && !now.Before(r.frameAt) {
			return n, errFrameTimeout
		}
		if !idleAt.IsZero() {
			return n, errIdle
		}
	}
	return n, err
}

var (
	_ adapters.Adapter        = (*Listener)(nil)
	_ adapters.StatusReporter = (*Listener)(nil)
	_ adapters.Config         = (*Config)(nil)
	_ framing.DeadlineReader  = (*connReader)(nil)
)
