package serial

// Mode sbd-modem: the mailbox schedule of a local Iridium 9602/9603 and
// the acknowledgement rule applied to its MT buffer.
//
// The modem has one MT buffer, and every session (AT+SBDIX/AT+SBDIXA) that
// receives a message overwrites it. The gateway forgets a message once it
// is in the buffer, so the buffer is the only copy until vigd has stored
// it. Hence:
//
//   - while a received message is not yet durably emitted, no new session
//     runs (not for the schedule, not for a ring alert): the next step is
//     always to read the same buffer again (AT+SBDRB) and emit again;
//   - AT+SBDD1 (clear the MT buffer) is sent only after Emit returned a
//     durable result;
//   - a damaged read (bad checksum, wrong length, cut short) is never
//     emitted: it is counted (vigd_adapter_frame_errors_total reason
//     bad_checksum / bad_length / cut_short), logged at warn, read again up
//     to read_attempts times, and then left in the buffer for the next try
//     after retry_min..retry_max backoff. A buffer that stays unreadable
//     therefore holds up the mailbox, visibly (metrics, log, Status), rather
//     than losing the message or storing garbage;
//   - the MTMSN of the last stored message is kept in the adapter's state
//     folder. At each (re)start AT+SBDSX tells whether the buffer holds a
//     message: with that MTMSN it is only cleared (it was stored, the clear
//     was lost); with another it is read and emitted (vigd stopped between
//     the session and the emit). A modem that lost power lost its buffer;
//     nothing can recover that message.
//
// Session results (MO status, protocols.md §5): 0–4 success; 35 busy:
// again after busy_retry; 12, 14, 15, 16: logged at error, next check at the
// normal interval (an operator must fix the modem or its subscription);
// anything else (32 no network service, 18 RF drop, ...): again after
// retry_min..retry_max backoff (at least 3 minutes for 36). MT status 2 (the
// mailbox check failed) backs off the same way. When a session delivered a
// message and reports more queued at the gateway, the next session starts
// as soon as this one's message is stored and cleared.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/serial/sbdmodem"
)

// stateFile holds the MTMSN of the last message stored, in the state dir.
const stateFile = "sbd_last_mtmsn"

// maxWait bounds one wait for a ring alert; the loop simply waits again.
const maxWait = time.Hour

// modemTimeoutsFatal is how many commands in a row may time out before the
// port is closed and the modem initialised again.
const modemTimeoutsFatal = 3

// mtPending is a message in the modem's MT buffer not yet cleared.
type mtPending struct {
	mtmsn, momsn, queued int
	length               int  // from +SBDIX; -1 when unknown (recovered at start)
	emitted              bool // durably stored; only the clear is left
	badReads             int
}

// modemRun is one open port's modem dialogue.
type modemRun struct {
	a        *Adapter
	conn     *sbdmodem.Conn
	sink     adapters.Sink
	log      *logrus.Entry
	cfg      ModemConfig
	imei     string
	identity string

	pending   *mtPending
	retryAt   time.Time // next try at the pending message
	nextCheck time.Time // next scheduled session
	ring      bool      // a ring alert is waiting for AT+SBDIXA
	sessionBo adapters.Backoff
	pendingBo adapters.Backoff
	failing   bool // in a streak of failed sessions (log levels)
	timeouts  int  // commands in a row without an answer
}

func (a *Adapter) runModem(ctx context.Context, pio *portIO, sink adapters.Sink) error {
	m := &modemRun{
		a:         a,
		conn:      sbdmodem.NewConn(pio),
		sink:      sink,
		log:       a.log,
		cfg:       a.cfg.Modem,
		sessionBo: adapters.Backoff{Min: a.cfg.Modem.RetryMin, Max: a.cfg.Modem.RetryMax},
		pendingBo: adapters.Backoff{Min: a.cfg.Modem.RetryMin, Max: a.cfg.Modem.RetryMax},
	}
	if a.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
		m.conn.Trace = func(dir, text string) {
			a.log.WithFields(logrus.Fields{"dir": dir, "text": text}).Trace("modem")
		}
	}
	if err := m.init(); err != nil {
		return &opError{op: "modem", err: err}
	}
	pio.worked = true
	a.update(func(s *status) { s.ready, s.imei = true, m.imei })
	m.log = a.log.WithField("imei", m.imei)
	m.log.Info("modem ready")
	m.nextCheck = time.Now() // messages may have queued up while the port was away

	for ctx.Err() == nil {
		if m.conn.TakeRings() > 0 {
			m.ring = true
		}
		now := time.Now()
		var err error
		switch {
		case m.pending != nil && !now.Before(m.retryAt):
			err = m.deliver(ctx)
		case m.pending == nil && (m.ring || !now.Before(m.nextCheck)):
			err = m.session()
		default:
			until := m.nextCheck
			if m.pending != nil {
				until = m.retryAt
			}
			until = minTime(until, now.Add(maxWait))
			var rang bool
			rang, err = m.conn.WaitRing(until)
			if rang {
				m.log.Debug("ring alert")
				m.ring = true
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &opError{op: "modem", err: err}
		}
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// init brings the modem to a known state and learns its IMEI.
func (m *modemRun) init() error {
	c, to := m.conn, m.cfg.CommandTimeout
	if err := c.Flush(100 * time.Millisecond); err != nil {
		return err
	}
	var err error
	for range 3 {
		if _, err = c.Command("AT", to); err == nil || !sbdmodem.ModemError(err) {
			break
		}
		if ferr := c.Flush(200 * time.Millisecond); ferr != nil {
			return ferr
		}
	}
	if err != nil {
		return fmt.Errorf("the modem does not answer AT: %w", err)
	}
	mta := "AT+SBDMTA=0"
	if m.cfg.RingAlerts {
		mta = "AT+SBDMTA=1"
	}
	// ATE0: no echo (Conn drops echoes anyway); AT&K0: no RTS/CTS flow
	// control, which three-wire modem cables lack.
	for _, cmd := range []string{"ATE0", "AT&K0", mta} {
		if _, err := c.Command(cmd, to); err != nil {
			return err
		}
	}
	imei, err := c.IMEI(to)
	if err != nil {
		return err
	}
	m.imei = imei
	m.identity = imei
	if m.a.fixedID != "" {
		m.identity = m.a.fixedID
	}

	st, err := c.Status(to)
	switch {
	case err != nil && !sbdmodem.ModemError(err):
		return err
	case err != nil:
		m.a.log.WithError(err).Debug("AT+SBDSX failed; not checking the MT buffer for a message left from before")
	case st.MTFlag == 1:
		p := &mtPending{mtmsn: st.MTMSN, momsn: st.MOMSN, queued: st.MsgWaiting, length: -1}
		p.emitted = st.MTMSN == m.a.lastMTMSN
		m.pending = p
		m.a.log.WithFields(logrus.Fields{"mtmsn": st.MTMSN, "already_stored": p.emitted}).Info("MT message left in the modem buffer")
	}
	return nil
}

// modemErr handles an error from a command: a port error is returned (the
// port is closed and opened again); a modem error is counted and nil is
// returned, except after modemTimeoutsFatal timeouts in a row.
func (m *modemRun) modemErr(err error) error {
	if err == nil {
		m.timeouts = 0
		return nil
	}
	if !sbdmodem.ModemError(err) {
		return err
	}
	var te *sbdmodem.TimeoutError
	if errors.As(err, &te) {
		m.timeouts++
		if m.timeouts >= modemTimeoutsFatal {
			return fmt.Errorf("the modem stopped answering (%d commands timed out): %w", m.timeouts, err)
		}
		if ferr := m.conn.Flush(200 * time.Millisecond); ferr != nil {
			return ferr
		}
	}
	return nil
}

// session runs one mailbox check.
func (m *modemRun) session() error {
	alert := m.ring
	m.ring = false
	r, err := m.conn.Session(alert, m.cfg.SessionTimeout)
	now := time.Now()
	if err != nil {
		if perr := m.modemErr(err); perr != nil {
			return perr
		}
		m.a.m.sessions.WithLabelValues("error").Inc()
		m.failed(now, err, m.sessionBo.Next(), "mailbox check failed")
		return nil
	}
	m.timeouts = 0
	class := sbdmodem.ClassifyMO(r.MOStatus)
	m.a.m.sessions.WithLabelValues(class.String()).Inc()
	m.a.update(func(s *status) {
		s.modem = fmt.Sprintf("last check %s: %s (MO %d %s, MT %d)", now.UTC().Format(time.RFC3339), class,
			r.MOStatus, sbdmodem.MOStatusText(r.MOStatus), r.MTStatus)
	})
	fields := logrus.Fields{"mo_status": r.MOStatus, "mt_status": r.MTStatus, "momsn": r.MOMSN,
		"mtmsn": r.MTMSN, "mt_length": r.MTLength, "mt_queued": r.MTQueued, "ring": alert}
	m.log.WithFields(fields).Debug("mailbox checked")
	if r.MTStatus == sbdmodem.MTReceived {
		m.pending = &mtPending{mtmsn: r.MTMSN, momsn: r.MOMSN, queued: r.MTQueued, length: r.MTLength}
		m.retryAt = now
	}
	status := fmt.Errorf("MO status %d: %s", r.MOStatus, sbdmodem.MOStatusText(r.MOStatus))
	switch class {
	case sbdmodem.MOSuccess:
		if r.MTStatus == sbdmodem.MTError {
			m.failed(now, errors.New("MT status 2: mailbox check error"), m.sessionBo.Next(), "mailbox check failed")
			return nil
		}
		if m.failing {
			m.log.Info("mailbox check succeeded again")
			m.failing = false
		}
		m.sessionBo.Reset()
		m.nextCheck = m.scheduled(now)
		if r.MTStatus == sbdmodem.MTReceived && r.MTQueued > 0 {
			m.nextCheck = now // right after this message is stored
		}
	case sbdmodem.MOBusy:
		m.nextCheck = now.Add(m.cfg.BusyRetry)
		m.log.WithFields(fields).WithField("retry_in", m.cfg.BusyRetry.String()).Debug("modem busy")
	case sbdmodem.MOFatal:
		m.nextCheck = m.scheduled(now)
		m.log.WithFields(fields).WithError(status).Error("the gateway refused the session; check the modem and its subscription")
	default:
		wait := m.sessionBo.Next()
		if r.MOStatus == sbdmodem.MOWaitRegister {
			wait = max(wait, 3*time.Minute)
		}
		m.failed(now, status, wait, "mailbox check failed")
	}
	return nil
}

// scheduled is the next regular check after now.
func (m *modemRun) scheduled(now time.Time) time.Time {
	if m.cfg.CheckInterval <= 0 {
		return now.Add(100 * 365 * 24 * time.Hour) // ring alerts only
	}
	return now.Add(m.cfg.CheckInterval)
}

// failed schedules a retry after a failed session and logs the first of a
// streak at warn.
func (m *modemRun) failed(now time.Time, err error, wait time.Duration, msg string) {
	m.nextCheck = now.Add(wait)
	entry := m.log.WithError(err).WithField("retry_in", wait.String())
	if !m.failing {
		entry.Warn(msg)
		m.failing = true
	} else {
		entry.Debug(msg)
	}
}

// deliver reads the pending message, emits it and, once it is stored,
// clears the MT buffer.
func (m *modemRun) deliver(ctx context.Context) error {
	p := m.pending
	log := m.log.WithField("mtmsn", p.mtmsn)
	if !p.emitted {
		msg, err := m.read(p, log)
		if err != nil {
			return err
		}
		if msg == nil {
			wait := m.pendingBo.Next()
			m.retryAt = time.Now().Add(wait)
			entry := log.WithFields(logrus.Fields{"attempts": m.cfg.ReadAttempts, "retry_in": wait.String()})
			if p.badReads == m.cfg.ReadAttempts {
				entry.Warn("MT message unreadable; leaving it in the modem buffer")
			} else {
				entry.Debug("MT message still unreadable; leaving it in the modem buffer")
			}
			return nil
		}
		f := &adapters.Frame{
			Adapter:  m.a.name,
			Kind:     Kind,
			Source:   m.a.cfg.Port,
			Offset:   -1,
			Received: time.Now().UTC(),
			Payload:  msg,
			Identity: m.identity,
			Meta: map[string]string{
				MetaPort:      m.a.cfg.Port,
				MetaTransport: TransportSBDModem,
				MetaIMEI:      m.imei,
				MetaMTMSN:     strconv.Itoa(p.mtmsn),
				MetaMOMSN:     strconv.Itoa(p.momsn),
				MetaMTQueued:  strconv.Itoa(p.queued),
			},
		}
		log.WithField("bytes", len(msg)).Trace("MT message read")
		err = m.sink.Emit(ctx, f)
		if !adapters.Durable(err) {
			if ctx.Err() != nil {
				return nil
			}
			m.a.m.frameErrors.WithLabelValues("not_queued").Inc()
			wait := m.pendingBo.Next()
			m.retryAt = time.Now().Add(wait)
			entry := log.WithError(err).WithField("retry_in", wait.String())
			if m.pendingBo.Attempt() == 1 {
				entry.Warn("MT message not queued; keeping it in the modem buffer")
			} else {
				entry.Debug("MT message not queued; keeping it in the modem buffer")
			}
			return nil
		}
		m.a.m.frames.Inc()
		p.emitted = true
		m.a.saveLastMTMSN(p.mtmsn)
		entry := log.WithFields(logrus.Fields{"bytes": len(msg), "damaged_reads": p.badReads, "attempt": m.pendingBo.Attempt() + 1})
		if p.badReads > 0 || m.pendingBo.Attempt() > 0 {
			entry.Info("MT message queued after retries")
		} else {
			entry.Debug("MT message queued")
		}
	}
	// Only now, with the message on disk, may the modem forget it.
	if err := m.conn.Clear(1, m.cfg.CommandTimeout); err != nil {
		if perr := m.modemErr(err); perr != nil {
			return perr
		}
		// The message is stored: a later session overwrites the buffer,
		// and a restart recognises it by its MTMSN and does not emit it
		// again.
		log.WithError(err).Warn("clearing the MT buffer failed")
	} else {
		m.timeouts = 0
	}
	if p.queued > 0 {
		m.nextCheck = time.Now()
	}
	m.pending = nil
	m.pendingBo.Reset()
	return nil
}

// lengthMismatch is an SBDRB message whose length differs from the one
// +SBDIX announced: the buffer is not the message the session received.
type lengthMismatch struct{ got, want int }

func (e *lengthMismatch) Error() string {
	return fmt.Sprintf("AT+SBDRB gave %d bytes, +SBDIX announced %d", e.got, e.want)
}

// read reads the MT buffer up to read_attempts times. It returns nil, nil
// when every read was damaged, and an error only for the port.
func (m *modemRun) read(p *mtPending, log *logrus.Entry) ([]byte, error) {
	for range m.cfg.ReadAttempts {
		msg, err := m.conn.ReadMT(m.cfg.CommandTimeout)
		if err == nil && p.length >= 0 && len(msg) != p.length {
			err = &lengthMismatch{got: len(msg), want: p.length}
		}
		if err == nil {
			m.timeouts = 0
			return msg, nil
		}
		var (
			lm *lengthMismatch
			ck *sbdmodem.ChecksumError
			pe *sbdmodem.ProtocolError
		)
		if !errors.As(err, &lm) {
			if perr := m.modemErr(err); perr != nil {
				return nil, perr
			}
		}
		p.badReads++
		reason := "sbdrb_error"
		switch {
		case errors.As(err, &ck):
			reason = "bad_checksum"
		case errors.As(err, &lm):
			reason = "bad_length"
		case errors.As(err, &pe):
			reason = "cut_short"
		}
		m.a.m.frameErrors.WithLabelValues(reason).Inc()
		entry := log.WithError(err).WithFields(logrus.Fields{"reason": reason, "read": p.badReads})
		if p.badReads == 1 {
			entry.Warn("damaged MT read; not emitted, reading again")
		} else {
			entry.Debug("damaged MT read; not emitted, reading again")
		}
	}
	return nil, nil
}

// loadLastMTMSN reads the state file; a missing one means none.
func (a *Adapter) loadLastMTMSN() {
	if a.stateDir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(a.stateDir, stateFile))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			a.log.WithError(err).Warn("cannot read the last stored MTMSN")
		}
		return
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		a.log.WithError(err).Warn("cannot read the last stored MTMSN")
		return
	}
	a.lastMTMSN = n
}

// saveLastMTMSN records the MTMSN of a message durably stored, before the
// buffer is cleared.
func (a *Adapter) saveLastMTMSN(n int) {
	a.lastMTMSN = n
	if a.stateDir == "" {
		return
	}
	if err := writeFileSync(filepath.Join(a.stateDir, stateFile), []byte(strconv.Itoa(n)+"\n")); err != nil {
		// Only a duplicate is at stake (after a crash before the clear).
		a.log.WithError(err).Warn("cannot save the last stored MTMSN")
	}
}

// writeFileSync replaces path atomically and durably.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

var _ error = (*lengthMismatch)(nil)
