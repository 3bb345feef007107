// Package directip is the "directip" adapter: a TCP listener for Iridium SBD
// DirectIP mobile-originated messages pushed by the Iridium gateway.
//
// The gateway opens one connection per message, sends the 3-byte pre-header
// and exactly the declared length, and (when the modem's SSD is provisioned
// for it) waits for the MO confirmation. The adapter reads with io.ReadFull
// under a read deadline, parses the information elements (any order, unknown
// ones skipped), emits one Frame, and sends the confirmation only after the
// sink said the frame is durable (adapters.Durable). A non-durable error
// closes the connection without a byte, so the gateway delivers again.
//
// Redeliveries (a lost confirmation makes the gateway send a message we
// already hold) are recognised by (IMEI, MOMSN, CDR reference) in a bounded
// set kept in the adapter's StateDir; they are confirmed and counted, not
// emitted again.
//
// A complete message that cannot be parsed is emitted with its raw bytes as
// payload and Meta "parse_error" (see package iridium) and confirmed once
// durable; an incomplete one is dropped unconfirmed. Bytes sent past the
// declared length are counted in Meta "trailing_bytes" and logged, never
// parsed.
package directip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/iridium"
	"github.com/vigd/vigd/adapters/netguard"
)

// trailingWait is how long the adapter listens for bytes past the declared
// length before emitting. The gateway closes (or waits for the
// confirmation) right after the message, so this only delays a
// misbehaving peer.
const trailingWait = 50 * time.Millisecond

// maxTrailing stops counting trailing bytes (a peer streaming garbage).
const maxTrailing = 64 << 10

// Listener is the directip adapter.
type Listener struct {
	name     string
	cfg      Config
	allow    netguard.AllowList
	perIP    *netguard.Limiter
	log      *logrus.Entry
	stateDir string
	metrics  *iridium.Metrics

	listening chan struct{}
	mu        sync.Mutex
	addr      net.Addr
	status    adapters.Status
}

// New builds the adapter from a validated config; it does no I/O.
func New(name string, cfg *Config, env adapters.Env) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	allow, _ := netguard.ParseAllowList(cfg.AllowedSources) // checked by Validate
	log := env.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger()).WithFields(logrus.Fields{"component": "adapter", "name": name, "kind": Kind})
	}
	return &Listener{
		name:      name,
		cfg:       *cfg,
		allow:     allow,
		perIP:     netguard.NewLimiter(0, cfg.MaxConnectionsPerIP),
		log:       log,
		stateDir:  env.StateDir,
		metrics:   iridium.NewMetrics(name, Kind),
		listening: make(chan struct{}),
		status:    adapters.Status{Detail: "not started"},
	}, nil
}

// Listening is closed once the socket is bound; Addr is valid from then on.
func (l *Listener) Listening() <-chan struct{} { return l.listening }

// Addr is the bound address (nil before Listening is closed).
func (l *Listener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// Status implements adapters.StatusReporter.
func (l *Listener) Status() adapters.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

func (l *Listener) setStatus(ok bool, detail string) {
	l.mu.Lock()
	l.status = adapters.Status{OK: ok, Detail: detail}
	l.mu.Unlock()
}

// Run listens until ctx is cancelled. It returns an error only when the
// de-duplication set cannot be opened or the address cannot be bound.
func (l *Listener) Run(ctx context.Context, sink adapters.Sink) error {
	dedup, err := l.openDedup()
	if err != nil {
		l.setStatus(false, err.Error())
		return err
	}
	defer dedup.Close()

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", l.cfg.Listen)
	if err != nil {
		l.setStatus(false, err.Error())
		return fmt.Errorf("directip: listen %s: %w", l.cfg.Listen, err)
	}
	l.mu.Lock()
	l.addr = ln.Addr()
	l.mu.Unlock()
	close(l.listening)
	l.setStatus(true, "listening on "+ln.Addr().String())
	l.log.WithField("listen", ln.Addr().String()).Info("directip listening")

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, l.cfg.MaxConnections)
	var bo adapters.Backoff
	bo.Min, bo.Max = 50*time.Millisecond, 5*time.Second
	for {
		// Take a slot before accepting: when all are busy (the sink is
		// applying back-pressure) the kernel backlog fills and the gateway
		// retries later, instead of us buffering messages.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			ln.Close()
			l.setStatus(false, "stopped")
			return nil
		}
		conn, err := ln.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				l.setStatus(false, "stopped")
				return nil
			}
			l.metrics.Error("accept")
			if bo.Attempt() == 0 {
				l.log.WithError(err).Warn("accept failed")
			} else {
				l.log.WithError(err).Debug("accept failed")
			}
			if !bo.Wait(ctx) {
				l.setStatus(false, "stopped")
				return nil
			}
			continue
		}
		bo.Reset()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			l.serve(ctx, conn, sink, dedup)
		}()
	}
}

func (l *Listener) openDedup() (*iridium.Dedup, error) {
	if l.stateDir == "" {
		return nil, errors.New("directip: no state folder for the de-duplication set")
	}
	if err := os.MkdirAll(l.stateDir, 0o750); err != nil {
		return nil, fmt.Errorf("directip: %w", err)
	}
	return iridium.OpenDedup(filepath.Join(l.stateDir, iridium.DedupFile), l.cfg.DedupSize)
}

// serve handles one gateway connection: one message, then the confirmation.
func (l *Listener) serve(ctx context.Context, conn net.Conn, sink adapters.Sink, dedup *iridium.Dedup) {
	defer conn.Close()
	// Closing the socket on shutdown unblocks a read in progress.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	source := conn.RemoteAddr().String()
	log := l.log.WithField("source", source)
	if !l.allow.Allows(conn.RemoteAddr()) {
		l.metrics.Error("source")
		log.Warn("connection from a source not allowed")
		return
	}
	release, why := l.perIP.Acquire(conn.RemoteAddr())
	if why != "" {
		l.metrics.Error(why)
		log.WithField("max_connections_per_ip", l.cfg.MaxConnectionsPerIP).Debug("too many connections from one address; closed")
		return
	}
	defer release()
	log.Debug("directip connection")

	if err := conn.SetReadDeadline(time.Now().Add(l.cfg.ReadTimeout)); err != nil {
		return
	}
	raw, err := iridium.ReadMessage(conn)
	if err != nil {
		if errors.Is(err, io.EOF) {
			log.Debug("connection closed before a message")
			return
		}
		if ctx.Err() != nil {
			return
		}
		// Incomplete: not acknowledged, so the gateway delivers it again.
		l.metrics.Error("read")
		log.WithError(err).Warn("directip message incomplete, not confirmed")
		return
	}
	received := time.Now().UTC()
	trailing := l.countTrailing(conn)

	f := &adapters.Frame{
		Adapter:    l.name,
		Kind:       Kind,
		Source:     source,
		Received:   received,
		CustomerID: l.cfg.CustomerID,
		Decoder:    l.cfg.Decoder,
	}
	mo, perr := iridium.ParseMO(raw)
	var key string // de-duplication key
	if perr != nil {
		l.metrics.Error("parse")
		log.WithError(perr).WithField("bytes", len(raw)).Warn("directip message unparseable, emitted raw for dead letters")
		f.Payload = raw
		f.Meta = map[string]string{iridium.MetaTransport: Kind, iridium.MetaParseError: perr.Error()}
		key = iridium.RawKey(raw)
		if trailing > 0 {
			f.Meta[iridium.MetaTrailingBytes] = strconv.Itoa(trailing)
		}
	} else {
		mo.Trailing = trailing
		f.Identity = mo.Header.IMEI
		f.Payload = mo.Payload
		if f.Payload == nil {
			f.Payload = []byte{}
		}
		f.Offset = int64(mo.PayloadOffset)
		f.Meta = mo.Meta()
		key = mo.DedupKey()
		log = log.WithFields(logrus.Fields{"imei": mo.Header.IMEI, "momsn": mo.Header.MOMSN})
	}
	if trailing > 0 {
		log.WithField("trailing_bytes", trailing).Warn("directip bytes past the declared length ignored")
	}

	seen, release, err := dedup.Claim(ctx, key)
	if err != nil {
		if ctx.Err() == nil {
			l.metrics.Error("dedup")
			log.WithError(err).Warn("de-duplication lookup failed, not confirmed")
		}
		return
	}
	defer release()
	if seen {
		l.metrics.Duplicates.Inc()
		log.WithField("key", key).Debug("directip duplicate confirmed, not emitted")
		l.confirm(conn, log)
		return
	}

	err = sink.Emit(ctx, f)
	if !adapters.Durable(err) {
		l.metrics.Error("emit")
		if ctx.Err() == nil {
			log.WithError(err).Warn("directip frame not queued, not confirmed")
		}
		return
	}
	l.metrics.Frames.Inc()
	log.WithField("bytes", len(f.Payload)).Trace("directip frame queued")
	if err := dedup.Add(key); err != nil {
		// The frame is durable; confirm anyway. A redelivery would be
		// emitted twice, which is the lesser harm.
		l.metrics.Error("dedup")
		log.WithError(err).Warn("de-duplication key not recorded")
	}
	l.confirm(conn, log)
}

// countTrailing reads whatever the peer sends past the declared length
// within trailingWait.
func (l *Listener) countTrailing(conn net.Conn) int {
	if err := conn.SetReadDeadline(time.Now().Add(trailingWait)); err != nil {
		return 0
	}
	var buf [512]byte
	n := 0
	for n < maxTrailing {
		k, err := conn.Read(buf[:])
		n += k
		if err != nil {
			break
		}
	}
	return n
}

func (l *Listener) confirm(conn net.Conn, log *logrus.Entry) {
	if !l.cfg.MOConfirmation {
		return
	}
	if err := conn.SetWriteDeadline(time.Now().Add(l.cfg.WriteTimeout)); err != nil {
		return
	}
	if _, err := conn.Write(iridium.EncodeMOConfirmation(true)); err != nil {
		// The gateway will deliver again; the dedup set catches it.
		l.metrics.Error("ack")
		log.WithError(err).Warn("directip confirmation not sent")
	}
}

var (
	_ adapters.Adapter        = (*Listener)(nil)
	_ adapters.StatusReporter = (*Listener)(nil)
	_ adapters.Config         = (*Config)(nil)
)
