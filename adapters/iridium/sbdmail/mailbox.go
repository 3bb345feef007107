// Package sbdmail is the "sbdmail" adapter: it reads Iridium SBD MO e-mails
// ("SBD Msg From Unit: <IMEI>", the payload in a .sbd attachment) from an
// IMAP folder, by polling or IMAP IDLE, with github.com/emersion/go-imap v1.
//
// Each scan searches the folder for mails whose subject holds "SBD Msg From
// Unit" (unseen ones when on_success is "seen"), fetches them with
// BODY.PEEK[] (so fetching never marks them read), parses them with
// iridium.ParseMail and emits one frame each, in UID order. Only after the
// sink said the frame is durable (adapters.Durable) is the mail flagged
// \Seen or moved. A frame that is not durable leaves its mail untouched and
// ends the scan; the next scan (poll_interval) emits it again.
//
// A mail without .sbd attachment is a session record: an empty payload and
// the body's metadata. A mail that matches the subject search but is not an
// SBD mail (a reply, a forward) is left alone and skipped for the rest of the
// connection. A mail with the right subject that cannot be parsed, and a mail
// above max_message_bytes, is emitted with Meta "parse_error" (the raw mail
// as payload, or no payload when too large) so the pipeline dead-letters it;
// it is then acknowledged like any other, and stays in the mailbox.
//
// Redeliveries — a mail processed but not flagged because the connection
// dropped, or Iridium sending the same message twice — are recognised by
// (IMEI, MOMSN, time of session) in a bounded set in StateDir: they are
// acknowledged and counted, not emitted again.
//
// Connection failures are retried for ever with adapters.Backoff; the
// password file is read at each connect.
package sbdmail

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/client"
	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/iridium"
)

// subjectSearch is what the IMAP SEARCH looks for (case-insensitive
// substring, RFC 3501); ParseSubject then checks the exact form.
const subjectSearch = "SBD Msg From Unit"

var errDisconnected = errors.New("imap connection closed")

// Mailbox is the sbdmail adapter.
type Mailbox struct {
	name     string
	cfg      Config
	log      *logrus.Entry
	stateDir string
	metrics  *iridium.Metrics

	mu     sync.Mutex
	status adapters.Status
	// scans counts finished scans (tests wait on it).
	scans uint64
	// backoff is the reconnect policy (zero: 500ms to 1m); tests shorten it.
	backoff adapters.Backoff
}

// New builds the adapter from a validated config; it does no I/O.
func New(name string, cfg *Config, env adapters.Env) (*Mailbox, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := env.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger()).WithFields(logrus.Fields{"component": "adapter", "name": name, "kind": Kind})
	}
	m := &Mailbox{
		name:     name,
		cfg:      *cfg,
		log:      log,
		stateDir: env.StateDir,
		metrics:  iridium.NewMetrics(name, Kind),
		status:   adapters.Status{Detail: "not started"},
	}
	return m, nil
}

// Status implements adapters.StatusReporter.
func (m *Mailbox) Status() adapters.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

func (m *Mailbox) setStatus(ok bool, detail string) {
	m.mu.Lock()
	m.status = adapters.Status{OK: ok, Detail: detail}
	m.mu.Unlock()
}

// Scans returns the number of completed scans.
func (m *Mailbox) Scans() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scans
}

func (m *Mailbox) scanDone() {
	m.mu.Lock()
	m.scans++
	m.mu.Unlock()
}

// Run reads the mailbox until ctx is cancelled, reconnecting with backoff.
// It returns an error only when the de-duplication set cannot be opened.
func (m *Mailbox) Run(ctx context.Context, sink adapters.Sink) error {
	if m.stateDir == "" {
		return errors.New("sbdmail: no state folder for the de-duplication set")
	}
	if err := os.MkdirAll(m.stateDir, 0o750); err != nil {
		return fmt.Errorf("sbdmail: %w", err)
	}
	dedup, err := iridium.OpenDedup(filepath.Join(m.stateDir, iridium.DedupFile), m.cfg.DedupSize)
	if err != nil {
		m.setStatus(false, err.Error())
		return fmt.Errorf("sbdmail: %w", err)
	}
	defer dedup.Close()
	if m.cfg.TLS.InsecureSkipVerify {
		m.log.Warn("tls.insecure_skip_verify is set: the IMAP server is not authenticated")
	}

	bo := adapters.Backoff{Min: m.backoff.Min, Max: m.backoff.Max}
	for {
		ready, err := m.session(ctx, sink, dedup)
		if ctx.Err() != nil {
			m.setStatus(false, "stopped")
			return nil
		}
		if ready {
			bo.Reset()
		}
		m.setStatus(false, err.Error())
		m.metrics.Error("connect")
		entry := m.log.WithError(err).WithField("attempt", bo.Attempt()+1)
		if bo.Attempt() == 0 {
			entry.Warn("imap session failed, reconnecting")
		} else {
			entry.Debug("imap session failed, reconnecting")
		}
		if !bo.Wait(ctx) {
			m.setStatus(false, "stopped")
			return nil
		}
	}
}

// conn is one logged-in IMAP connection with a watchdog on every command.
type conn struct {
	c       *client.Client
	timeout time.Duration
	wake    chan struct{} // a new message arrived (EXISTS)
	fwdDone chan struct{}
}

// do runs one command, closing the connection when it takes longer than the
// timeout (go-imap v1's own Timeout leaves a deadline on an idle
// connection, which would break IDLE and long polls).
func (cn *conn) do(fn func() error) error {
	t := time.AfterFunc(cn.timeout, func() { cn.c.Terminate() })
	defer t.Stop()
	return fn()
}

// session connects, logs in, selects the folder and scans until an error or
// ctx ends. ready says whether it got as far as selecting the folder.
func (m *Mailbox) session(ctx context.Context, sink adapters.Sink, dedup *iridium.Dedup) (ready bool, err error) {
	m.log.WithField("address", m.cfg.Address).Debug("imap connecting")
	cn, err := m.connect(ctx)
	if err != nil {
		return false, err
	}
	defer m.close(cn)
	stop := context.AfterFunc(ctx, func() { cn.c.Terminate() })
	defer stop()

	if m.cfg.OnSuccess == OnSuccessMove {
		if err := m.ensureFolder(cn, m.cfg.MoveTo); err != nil {
			return false, err
		}
	}
	var mbox *imap.MailboxStatus
	if err := cn.do(func() (e error) { mbox, e = cn.c.Select(m.cfg.Folder, false); return }); err != nil {
		return false, fmt.Errorf("select %s: %w", m.cfg.Folder, err)
	}
	idle := false
	if m.cfg.Idle {
		if err := cn.do(func() (e error) { idle, e = cn.c.Support("IDLE"); return }); err != nil {
			return false, err
		}
	}
	m.setStatus(true, "connected to "+m.cfg.Address+" folder "+m.cfg.Folder)
	m.log.WithFields(logrus.Fields{"folder": m.cfg.Folder, "messages": mbox.Messages, "idle": idle}).Info("imap connected")

	s := &scanner{m: m, cn: cn, sink: sink, dedup: dedup, skip: map[uint32]bool{}, uidValidity: mbox.UidValidity}
	for {
		if err := s.scan(ctx); err != nil {
			return true, err
		}
		m.scanDone()
		if err := m.wait(ctx, cn, idle); err != nil {
			return true, err
		}
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
	}
}

func (m *Mailbox) connect(ctx context.Context) (*conn, error) {
	pw, err := readPassword(m.cfg.PasswordFile)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	d := net.Dialer{}
	raw, err := d.DialContext(dctx, "tcp", m.cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", m.cfg.Address, err)
	}
	var tlsConf *tls.Config
	if m.cfg.TLS.Mode != TLSNone {
		if tlsConf, err = m.tlsConfig(); err != nil {
			raw.Close()
			return nil, err
		}
	}
	nc := raw
	if m.cfg.TLS.Mode == TLSImplicit {
		tc := tls.Client(raw, tlsConf)
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", m.cfg.Address, err)
		}
		nc = tc
	}
	// The greeting must arrive within the timeout; the deadline is cleared
	// once the client runs (see conn.do).
	nc.SetDeadline(time.Now().Add(m.cfg.Timeout))
	c, err := client.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("imap greeting: %w", err)
	}
	nc.SetDeadline(time.Time{})
	c.ErrorLog = imapLogger{m.log}
	// Set before any command, so the reader goroutine sees it (the handler
	// registration of the next command orders the two).
	updates := make(chan client.Update, 16)
	c.Updates = updates
	cn := &conn{c: c, timeout: m.cfg.Timeout, wake: make(chan struct{}, 1), fwdDone: make(chan struct{})}
	go cn.forward(updates)

	fail := func(err error) (*conn, error) {
		m.close(cn)
		return nil, err
	}
	if m.cfg.TLS.Mode == TLSStart {
		if err := cn.do(func() error { return c.StartTLS(tlsConf) }); err != nil {
			return fail(fmt.Errorf("starttls: %w", err))
		}
	}
	if err := cn.do(func() error { return c.Login(m.cfg.Username, pw) }); err != nil {
		return fail(fmt.Errorf("login as %s: %w", m.cfg.Username, err))
	}
	return cn, nil
}

// forward drains the client's updates (a blocked Updates channel blocks
// the whole client) and turns new-mail notices into a wake-up. It runs
// until the connection's reader has stopped.
func (cn *conn) forward(updates <-chan client.Update) {
	defer close(cn.fwdDone)
	for {
		select {
		case u := <-updates:
			if _, ok := u.(*client.MailboxUpdate); ok {
				select {
				case cn.wake <- struct{}{}:
				default:
				}
			}
		case <-cn.c.LoggedOut():
			return
		}
	}
}

func (m *Mailbox) close(cn *conn) {
	if cn.c.State() != imap.LogoutState {
		t := time.AfterFunc(2*time.Second, func() { cn.c.Terminate() })
		_ = cn.c.Logout()
		t.Stop()
	}
	cn.c.Terminate()
	<-cn.fwdDone
}

func (m *Mailbox) tlsConfig() (*tls.Config, error) {
	host, _, _ := net.SplitHostPort(m.cfg.Address)
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: m.cfg.TLS.InsecureSkipVerify}
	if m.cfg.TLS.ServerName != "" {
		tc.ServerName = m.cfg.TLS.ServerName
	}
	if m.cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(m.cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate", m.cfg.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password_file: %w", err)
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
}

// ensureFolder creates the move_to folder when it is missing.
func (m *Mailbox) ensureFolder(cn *conn, name string) error {
	err := cn.do(func() error {
		_, err := cn.c.Status(name, []imap.StatusItem{imap.StatusMessages})
		return err
	})
	if err == nil {
		return nil
	}
	if cn.c.State() == imap.LogoutState {
		return errDisconnected
	}
	if err := cn.do(func() error { return cn.c.Create(name) }); err != nil {
		return fmt.Errorf("create folder %s: %w", name, err)
	}
	m.log.WithField("folder", name).Info("imap folder created")
	return nil
}

// wait blocks until the next scan is due: new mail (IDLE), poll_interval,
// or ctx.
func (m *Mailbox) wait(ctx context.Context, cn *conn, idle bool) error {
	timer := time.NewTimer(m.cfg.PollInterval)
	defer timer.Stop()
	if !idle {
		select {
		case <-ctx.Done():
		case <-timer.C:
		case <-cn.wake:
		case <-cn.c.LoggedOut():
			return errDisconnected
		}
		return nil
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- cn.c.Idle(stop, &client.IdleOptions{LogoutTimeout: 20 * time.Minute})
	}()
	select {
	case <-ctx.Done():
	case <-timer.C:
	case <-cn.wake:
	case err := <-done:
		close(stop)
		if err == nil {
			err = errDisconnected
		}
		return fmt.Errorf("idle: %w", err)
	}
	close(stop)
	select {
	case err := <-done:
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("idle: %w", err)
		}
		return nil
	case <-time.After(m.cfg.Timeout):
		cn.c.Terminate()
		<-done
		return errors.New("idle: server did not end IDLE")
	}
}

type scanner struct {
	m           *Mailbox
	cn          *conn
	sink        adapters.Sink
	dedup       *iridium.Dedup
	skip        map[uint32]bool // not SBD mails: leave alone this session
	uidValidity uint32
}

// scan processes every matching mail; it returns nil when a frame was not
// durable (the mail stays, the next scan retries) and an error when the
// connection failed.
func (s *scanner) scan(ctx context.Context) error {
	m, c := s.m, s.cn.c
	crit := imap.NewSearchCriteria()
	crit.Header = textproto.MIMEHeader{"Subject": {subjectSearch}}
	crit.WithoutFlags = []string{imap.DeletedFlag}
	if m.cfg.OnSuccess == OnSuccessSeen {
		crit.WithoutFlags = append(crit.WithoutFlags, imap.SeenFlag)
	}
	var uids []uint32
	if err := s.cn.do(func() (e error) { uids, e = c.UidSearch(crit); return }); err != nil {
		return fmt.Errorf("search: %w", err)
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
	todo := uids[:0]
	for _, u := range uids {
		if !s.skip[u] {
			todo = append(todo, u)
		}
	}
	if len(todo) > 0 {
		m.log.WithField("count", len(todo)).Debug("imap scan")
	}
	for len(todo) > 0 {
		n := min(len(todo), m.cfg.BatchSize)
		batch := todo[:n]
		todo = todo[n:]
		msgs, err := s.fetch(batch)
		if err != nil {
			return err
		}
		for _, uid := range batch {
			fm, ok := msgs[uid]
			if !ok {
				continue // expunged meanwhile
			}
			cont, err := s.process(ctx, fm)
			if err != nil {
				return err
			}
			if !cont {
				return nil
			}
		}
	}
	return nil
}

// fetched is one mail: its size, and its bytes when not too large.
type fetched struct {
	uid  uint32
	size uint32
	raw  []byte
}

func (s *scanner) fetch(uids []uint32) (map[uint32]*fetched, error) {
	set := new(imap.SeqSet)
	set.AddNum(uids...)
	out := map[uint32]*fetched{}
	var small []uint32
	err := s.collect(set, []imap.FetchItem{imap.FetchUid, imap.FetchRFC822Size}, func(msg *imap.Message) {
		out[msg.Uid] = &fetched{uid: msg.Uid, size: msg.Size}
		if msg.Size <= s.m.cfg.MaxMessageBytes {
			small = append(small, msg.Uid)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("fetch sizes: %w", err)
	}
	if len(small) == 0 {
		return out, nil
	}
	set = new(imap.SeqSet)
	set.AddNum(small...)
	// PEEK: fetching must not set \Seen; only a durable emit may.
	section := &imap.BodySectionName{Peek: true}
	var bodyErr error
	err = s.collect(set, []imap.FetchItem{imap.FetchUid, section.FetchItem()}, func(msg *imap.Message) {
		f := out[msg.Uid]
		if f == nil {
			return
		}
		lit := msg.GetBody(section)
		if lit == nil {
			return
		}
		b, err := io.ReadAll(io.LimitReader(lit, int64(s.m.cfg.MaxMessageBytes)+1))
		if err != nil && bodyErr == nil {
			bodyErr = err
		}
		f.raw = b
	})
	if err == nil {
		err = bodyErr
	}
	if err != nil {
		return nil, fmt.Errorf("fetch bodies: %w", err)
	}
	return out, nil
}

func (s *scanner) collect(set *imap.SeqSet, items []imap.FetchItem, each func(*imap.Message)) error {
	ch := make(chan *imap.Message, 8)
	errc := make(chan error, 1)
	return s.cn.do(func() error {
		go func() { errc <- s.cn.c.UidFetch(set, items, ch) }()
		for msg := range ch {
			each(msg)
		}
		return <-errc
	})
}

// process emits one mail and acknowledges it once durable. cont is false
// when the frame was not durable (stop this scan).
func (s *scanner) process(ctx context.Context, fm *fetched) (cont bool, err error) {
	m := s.m
	source := m.cfg.Folder + "/" + strconv.FormatUint(uint64(fm.uid), 10)
	log := m.log.WithField("source", source)
	f := &adapters.Frame{
		Adapter:    m.name,
		Kind:       Kind,
		Source:     source,
		Offset:     -1,
		Received:   time.Now().UTC(),
		CustomerID: m.cfg.CustomerID,
		Decoder:    m.cfg.Decoder,
	}
	var key string
	switch {
	case fm.raw == nil && fm.size > m.cfg.MaxMessageBytes:
		m.metrics.Error("parse")
		msg := fmt.Sprintf("mail of %d bytes exceeds max_message_bytes %d; left in the mailbox", fm.size, m.cfg.MaxMessageBytes)
		log.WithField("bytes", fm.size).Warn("sbd mail too large, reported without payload")
		f.Payload = []byte{}
		f.Meta = map[string]string{iridium.MetaTransport: Kind, iridium.MetaParseError: msg}
		key = fmt.Sprintf("large/%s/%d/%d", m.cfg.Folder, s.uidValidity, fm.uid)
	case fm.raw == nil:
		return true, nil // vanished between the two fetches
	default:
		mail, perr := iridium.ParseMail(fm.raw)
		switch {
		case errors.Is(perr, iridium.ErrNotSBDMail):
			// A reply or forward that only mentions the subject: not ours.
			log.WithError(perr).Debug("mail is not an sbd message, left alone")
			s.skip[fm.uid] = true
			return true, nil
		case perr != nil:
			m.metrics.Error("parse")
			log.WithError(perr).Warn("sbd mail unparseable, emitted raw for dead letters")
			f.Payload = fm.raw
			f.Meta = map[string]string{iridium.MetaTransport: Kind, iridium.MetaParseError: perr.Error()}
			if msg, err := readHeaderSubject(fm.raw); err == nil {
				if imei, err := iridium.ParseSubject(msg); err == nil {
					f.Identity = imei
					f.Meta[iridium.MetaIMEI] = imei
				}
			}
			key = iridium.RawKey(fm.raw)
		default:
			f.Identity = mail.IMEI
			f.Payload = mail.Attachment
			if f.Payload == nil {
				f.Payload = []byte{}
			}
			f.Meta = mail.Meta()
			key = mail.DedupKey()
			log = log.WithFields(logrus.Fields{"imei": mail.IMEI, "momsn": mail.MOMSN})
		}
	}

	seen, release, err := s.dedup.Claim(ctx, key)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		m.metrics.Error("dedup")
		log.WithError(err).Warn("de-duplication lookup failed")
		return false, nil
	}
	defer release()
	if seen {
		m.metrics.Duplicates.Inc()
		log.Debug("sbd mail seen before, acknowledged without emitting")
		return true, s.ack(fm.uid, log)
	}
	err = s.sink.Emit(ctx, f)
	if !adapters.Durable(err) {
		m.metrics.Error("emit")
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		log.WithError(err).Warn("sbd mail frame not queued, mail left for the next scan")
		return false, nil
	}
	m.metrics.Frames.Inc()
	log.WithField("bytes", len(f.Payload)).Trace("sbd mail frame queued")
	if err := s.dedup.Add(key); err != nil {
		m.metrics.Error("dedup")
		log.WithError(err).Warn("de-duplication key not recorded")
	}
	return true, s.ack(fm.uid, log)
}

// ack flags the mail \Seen or moves it.
func (s *scanner) ack(uid uint32, log *logrus.Entry) error {
	set := new(imap.SeqSet)
	set.AddNum(uid)
	var err error
	if s.m.cfg.OnSuccess == OnSuccessMove {
		err = s.cn.do(func() error { return s.cn.c.UidMove(set, s.m.cfg.MoveTo) })
	} else {
		err = s.cn.do(func() error {
			return s.cn.c.UidStore(set, imap.FormatFlagsOp(imap.AddFlags, true), []any{imap.SeenFlag}, nil)
		})
	}
	if err != nil {
		s.m.metrics.Error("ack")
		// The frame is durable and its key recorded: after reconnecting the
		// mail is found again and only acknowledged.
		return fmt.Errorf("acknowledge uid %d: %w", uid, err)
	}
	log.Trace("sbd mail acknowledged")
	return nil
}

func readHeaderSubject(raw []byte) (string, error) {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	h, err := r.ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return "", err
	}
	return h.Get("Subject"), nil
}

// imapLogger sends go-imap's own complaints to debug (they repeat what the
// adapter reports as errors).
type imapLogger struct{ log *logrus.Entry }

func (l imapLogger) Printf(format string, v ...any) {
	l.log.Debugf("imap client: "+format, v...)
}

func (l imapLogger) Println(v ...any) {
	l.log.Debug("imap client: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

var (
	_ adapters.Adapter        = (*Mailbox)(nil)
	_ adapters.StatusReporter = (*Mailbox)(nil)
	_ adapters.Config         = (*Config)(nil)
	_ imap.Logger             = imapLogger{}
)
