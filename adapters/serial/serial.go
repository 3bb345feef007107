// Package serial is the serial port adapter (kind "serial"), opened with
// go.bug.st/serial. It has two modes:
//
//   - frames (the default): the byte stream is cut by adapters/framing
//     (lines, length prefixes, SLIP, COBS, an inter-byte silence with
//     framing type idle, ...) and each frame is emitted. When configured,
//     reply bytes are written back after a frame is durably queued.
//   - sbd-modem: the port is a local Iridium 9602/9603 modem. The adapter
//     initialises it (AT, ATE0, AT&K0, AT+SBDMTA, AT+CGSN), checks the
//     mailbox with AT+SBDIX on a schedule and when a ring alert comes
//     (AT+SBDIXA), reads each MT message with AT+SBDRB, verifies its
//     checksum, emits it, and clears the modem's MT buffer (AT+SBDD1) only
//     after the emit is durable. The AT dialogue and its parsers live in
//     the sbdmodem sub-package; the schedule and the acknowledgement rule
//     are here (modem.go).
//
// # Port lifetime
//
// The port is not expected to stay: a USB adapter is unplugged, a modem is
// power-cycled, a read fails with EIO. None of this is fatal. The adapter
// closes the port, tries to open it again with adapters.Backoff
// (reopen_min..reopen_max), resolving symbolic links at each attempt (a
// /dev/serial/by-id name may point at another ttyUSBn after a replug), and
// resumes. Status() and vigd_serial_port_open show the outage; the first
// failure of a streak is logged at warn, repeats at debug, the recovery at
// info. A partial frame open when the port fails is lost with the port.
//
// Frame.Offset (mode frames) is the byte offset of the frame's first byte
// since the port was last opened: it starts again at 0 after every reopen.
// Modem frames have no stream position and carry -1.
//
// # Acknowledgement and back-pressure
//
// One goroutine reads, emits and replies, so while Emit blocks (the queue
// is full) nothing more is read: the bytes wait in the kernel's buffer and
// then in the device's (a serial line has no other way to push back). The
// reply goes out only after Emit returned a durable result. After any
// other error (not ctx) the same frame is emitted again with backoff and
// nothing else is read meanwhile: a serial device cannot be asked to send
// the frame again, so dropping it would lose it.
package serial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	bugst "go.bug.st/serial"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/framing"
)

// Kind is the adapter kind name.
const Kind = "serial"

func init() {
	adapters.Register(adapters.Kind{
		Name:      Kind,
		NewConfig: func() adapters.Config { return DefaultConfig() },
		New: func(name string, cfg adapters.Config, env adapters.Env) (adapters.Adapter, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("serial: config is %T, not *serial.Config", cfg)
			}
			return New(name, c, env)
		},
	})
}

// Meta keys set on serial frames.
const (
	MetaPort      = "port"      // the configured port path
	MetaTransport = "transport" // sbd-modem
	MetaIMEI      = "imei"
	MetaMOMSN     = "momsn"
	MetaMTMSN     = "mtmsn"
	MetaMTQueued  = "mt_queued" // MT messages still waiting at the gateway
)

// TransportSBDModem is Meta["transport"] on frames read from a modem.
const TransportSBDModem = "sbd-modem"

// stableAfter is how long a port must stay open (or deliver bytes) before
// a failure counts as a new streak and the reopen backoff starts over.
const stableAfter = 10 * time.Second

// Adapter is one configured serial port.
type Adapter struct {
	name          string
	cfg           Config
	framing       framing.Config
	log           *logrus.Entry
	stateDir      string
	reply         []byte
	replyRejected []byte
	fixedID       string
	m             metrics

	// lastMTMSN is the MTMSN of the last modem message emitted durably
	// (-1: none); it lets a restart recognise a message it already
	// stored but could not clear. Touched only by Run's goroutine.
	lastMTMSN int

	mu sync.Mutex
	st status
}

// status is what Status() reports.
type status struct {
	open, ready bool
	device      string    // resolved path of the open port
	since       time.Time // open since / unavailable since
	lastErr     error
	attempts    int // failed opens in the current outage
	opens       int
	imei        string
	modem       string // last mailbox check, for the detail
	stopped     bool
}

// New builds the adapter from a config; it validates and does no I/O.
func New(name string, cfg *Config, env adapters.Env) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := env.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	a := &Adapter{
		name:      name,
		cfg:       *cfg,
		framing:   cfg.framing(),
		log:       log.WithField("port", cfg.Port),
		stateDir:  env.StateDir,
		m:         newMetrics(name),
		lastMTMSN: -1,
	}
	a.reply, _ = framing.ParseBytes(cfg.Reply) // checked by Validate
	a.replyRejected = a.reply
	if cfg.ReplyRejected != nil {
		a.replyRejected, _ = framing.ParseBytes(*cfg.ReplyRejected)
	}
	if id, ok := strings.CutPrefix(cfg.Identity, identityFixed); ok {
		a.fixedID = strings.TrimSpace(id)
	}
	return a, nil
}

// Status reports whether the port is open (and, for a modem, initialised)
// and, when not, since when and why.
func (a *Adapter) Status() adapters.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	switch {
	case s.ready:
		d := fmt.Sprintf("port %s (%s) open since %s, reopened %d times", a.cfg.Port, s.device,
			s.since.UTC().Format(time.RFC3339), max(s.opens-1, 0))
		if s.imei != "" {
			d += "; modem IMEI " + s.imei
		}
		if s.modem != "" {
			d += "; " + s.modem
		}
		return adapters.Status{OK: true, Detail: d}
	case s.open:
		return adapters.Status{OK: false, Detail: fmt.Sprintf("port %s (%s) open, initialising the modem", a.cfg.Port, s.device)}
	case s.lastErr != nil:
		return adapters.Status{OK: false, Detail: fmt.Sprintf("port %s unavailable since %s (%d attempts): %v",
			a.cfg.Port, s.since.UTC().Format(time.RFC3339), s.attempts, s.lastErr)}
	case s.stopped:
		return adapters.Status{OK: false, Detail: "stopped"}
	default:
		return adapters.Status{OK: false, Detail: fmt.Sprintf("port %s not opened yet", a.cfg.Port)}
	}
}

func (a *Adapter) update(f func(s *status)) {
	a.mu.Lock()
	f(&a.st)
	ready := a.st.ready
	a.mu.Unlock()
	if ready {
		a.m.open.Set(1)
	} else {
		a.m.open.Set(0)
	}
}

// opError says which operation failed the port.
type opError struct {
	op  string // read, write, framing, modem
	err error
}

func (e *opError) Error() string { return e.op + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

// Run opens the port, serves it, and opens it again whenever it vanishes
// or fails, until ctx is cancelled; then it returns nil.
func (a *Adapter) Run(ctx context.Context, sink adapters.Sink) error {
	if a.cfg.Mode == ModeSBDModem {
		a.loadLastMTMSN()
	}
	bo := adapters.Backoff{Min: a.cfg.ReopenMin, Max: a.cfg.ReopenMax}
	failing := false  // in a streak of failures (log levels)
	flapping := false // the port opens but fails before it works
	var downSince time.Time
	down := func(err error) {
		if !failing {
			failing, downSince = true, time.Now()
		}
		a.update(func(s *status) {
			s.open, s.ready, s.device = false, false, ""
			s.since, s.lastErr, s.attempts = downSince, err, bo.Attempt()+1
		})
	}
	for ctx.Err() == nil {
		dev, p, err := a.open()
		if err != nil {
			a.m.portErrors.WithLabelValues("open").Inc()
			entry := a.log.WithError(err).WithField("attempt", bo.Attempt()+1)
			if !failing {
				entry.Warn("serial port unavailable")
			} else {
				entry.Debug("serial port still unavailable")
			}
			down(err)
			if !bo.Wait(ctx) {
				break
			}
			continue
		}
		a.mu.Lock()
		a.st.opens++
		reopen := a.st.opens > 1
		a.mu.Unlock()
		if reopen {
			a.m.reopens.Inc()
		}
		entry := a.log.WithField("device", dev)
		if flapping {
			entry.Debug("serial port open again")
		} else if failing {
			entry.WithFields(logrus.Fields{"outage": time.Since(downSince).Round(time.Millisecond).String(), "attempt": bo.Attempt()}).Info("serial port open again")
		} else {
			entry.Info("serial port open")
		}
		failing = false
		opened := time.Now()
		a.update(func(s *status) {
			s.open, s.ready, s.device, s.since, s.lastErr, s.attempts = true, a.cfg.Mode == ModeFrames, dev, opened, nil, 0
		})

		worked, err := a.serve(ctx, p, sink)
		if ctx.Err() != nil {
			break
		}
		op := "read"
		var oe *opError
		if errors.As(err, &oe) {
			op = oe.op
		}
		a.m.portErrors.WithLabelValues(op).Inc()
		entry = a.log.WithError(err).WithFields(logrus.Fields{"device": dev, "op": op})
		switch {
		case worked || time.Since(opened) >= stableAfter:
			bo.Reset()
			flapping = false
			entry.Warn("serial port failed; closing it")
		case flapping:
			entry.Debug("serial port failed again; closing it")
		default:
			// Opened but never worked (no byte, no modem answer): the
			// next cycles of this streak are logged at debug.
			flapping = true
			entry.Warn("serial port failed; closing it")
		}
		down(err)
		if !bo.Wait(ctx) {
			break
		}
	}
	a.update(func(s *status) {
		s.open, s.ready, s.lastErr, s.stopped = false, false, nil, true
	})
	a.log.Info("serial adapter stopped")
	return nil
}

// open resolves the configured path (a by-id link may point elsewhere
// after a replug) and opens the device.
func (a *Adapter) open() (string, bugst.Port, error) {
	dev, err := filepath.EvalSymlinks(a.cfg.Port)
	if err != nil {
		return "", nil, fmt.Errorf("port not present: %w", err)
	}
	p, err := bugst.Open(dev, a.cfg.portMode())
	if err != nil {
		return dev, nil, fmt.Errorf("open %s: %w", dev, err)
	}
	return dev, p, nil
}

// portMode is the go.bug.st/serial line setting.
func (c *Config) portMode() *bugst.Mode {
	m := &bugst.Mode{BaudRate: c.Baud, DataBits: c.DataBits}
	switch c.Parity {
	case ParityOdd:
		m.Parity = bugst.OddParity
	case ParityEven:
		m.Parity = bugst.EvenParity
	case ParityMark:
		m.Parity = bugst.MarkParity
	case ParitySpace:
		m.Parity = bugst.SpaceParity
	default:
		m.Parity = bugst.NoParity
	}
	switch c.StopBits {
	case 2:
		m.StopBits = bugst.TwoStopBits
	case 1.5:
		// termios has no 1.5: CSTOPB with 5-bit characters is 1.5 on the
		// wire. go.bug.st/serial refuses OnePointFiveStopBits on Linux.
		m.StopBits = bugst.OnePointFiveStopBits
		if runtime.GOOS == "linux" {
			m.StopBits = bugst.TwoStopBits
		}
	default:
		m.StopBits = bugst.OneStopBit
	}
	return m
}

// serve runs one open port until it fails or ctx ends, and closes it. It
// reports whether the port worked (bytes came; for a modem, it answered
// the initialisation) and why it stopped.
func (a *Adapter) serve(ctx context.Context, p bugst.Port, sink adapters.Sink) (bool, error) {
	// Closing the port is the only way to end a blocking read.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		_ = p.Close()
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()
	pio := &portIO{p: p, dr: framing.NewDeadlineReader(p), bytes: a.m.bytes}
	var err error
	if a.cfg.Mode == ModeSBDModem {
		err = a.runModem(ctx, pio, sink)
	} else {
		err = a.runFrames(ctx, pio, sink)
	}
	return pio.worked || (a.cfg.Mode == ModeFrames && pio.n > 0), err
}

// portIO is the open port as the framers and the modem dialogue see it:
// reads with deadlines (turned into the port's read timeout), counted.
type portIO struct {
	p     bugst.Port
	dr    framing.DeadlineReader
	bytes prometheus.Counter
	n     int64
	// worked is set by the modem dialogue once the modem is initialised.
	worked bool
}

func (p *portIO) Read(b []byte) (int, error) {
	n, err := p.dr.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.bytes.Add(float64(n))
	}
	return n, err
}

func (p *portIO) SetReadDeadline(t time.Time) error { return p.dr.SetReadDeadline(t) }

func (p *portIO) Write(b []byte) (int, error) {
	n, err := p.p.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return n, err
}

// runFrames cuts the port's stream into frames, emits each and replies.
func (a *Adapter) runFrames(ctx context.Context, pio *portIO, sink adapters.Sink) error {
	fr, err := framing.New(a.framing, pio)
	if err != nil {
		return &opError{op: "framing", err: err} // unreachable after Validate
	}
	for {
		fm, err := fr.Next()
		if err != nil {
			var fe *framing.FrameError
			if errors.As(err, &fe) {
				a.m.frameErrors.WithLabelValues(fe.Reason).Inc()
				a.log.WithFields(logrus.Fields{"offset": fe.Offset, "reason": fe.Reason}).WithError(err).Warn("bad frame dropped")
				if fe.Fatal {
					// Reopening starts a fresh framer on the bytes
					// that come next.
					return &opError{op: "framing", err: err}
				}
				continue
			}
			return &opError{op: "read", err: err}
		}
		f := &adapters.Frame{
			Adapter:  a.name,
			Kind:     Kind,
			Source:   a.cfg.Port,
			Offset:   fm.Offset,
			Received: time.Now().UTC(),
			Payload:  fm.Data,
			Identity: a.fixedID,
			Meta:     map[string]string{MetaPort: a.cfg.Port},
		}
		a.log.WithFields(logrus.Fields{"offset": fm.Offset, "bytes": len(fm.Data)}).Trace("frame received")
		rejected, err := a.emit(ctx, sink, f)
		if err != nil {
			return err // ctx ended
		}
		reply := a.reply
		if rejected {
			reply = a.replyRejected
		}
		if len(reply) > 0 {
			if _, err := pio.Write(reply); err != nil {
				return &opError{op: "write", err: err}
			}
		}
	}
}

// emit hands f to the sink until the result is durable; it fails only when
// ctx ends. rejected says the frame went to the dead letters.
func (a *Adapter) emit(ctx context.Context, sink adapters.Sink, f *adapters.Frame) (rejected bool, err error) {
	bo := adapters.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}
	for {
		err := sink.Emit(ctx, f)
		if adapters.Durable(err) {
			a.m.frames.Inc()
			if bo.Attempt() > 0 {
				a.log.WithFields(logrus.Fields{"offset": f.Offset, "attempt": bo.Attempt() + 1}).Info("frame queued after retries")
			}
			return err != nil, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		a.m.frameErrors.WithLabelValues("not_queued").Inc()
		entry := a.log.WithError(err).WithFields(logrus.Fields{"offset": f.Offset, "attempt": bo.Attempt() + 1})
		if bo.Attempt() == 0 {
			entry.Warn("frame not queued; holding it and retrying")
		} else {
			entry.Debug("frame not queued; holding it and retrying")
		}
		if !bo.Wait(ctx) {
			return false, ctx.Err()
		}
	}
}

var (
	_ adapters.Adapter        = (*Adapter)(nil)
	_ adapters.StatusReporter = (*Adapter)(nil)
	_ framing.DeadlineReader  = (*portIO)(nil)
	_ error                   = (*opError)(nil)
)
