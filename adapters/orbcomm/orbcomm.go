// Package orbcomm is the ORBCOMM / Inmarsat IsatData Pro gateway adapter
// (kind "orbcomm"): it polls a mailbox's get_return_messages REST call
// (IGWS "v1" JSON) and hands each mobile-originated message to the
// pipeline as a frame.
//
// # Acknowledgement: the high-water mark
//
// The gateway has no acknowledgement; the mark (from_id = NextStartID when
// positive, else start_utc = NextStartUTC) is the adapter's. It is saved
// in StateDir only after every message of the page was durably queued
// (adapters.Durable), together with the page's message IDs, in one bbolt
// transaction. A message the sink does not take leaves the mark where it
// was, so the same page is fetched again on the next attempt; the IDs
// already queued are then skipped. Delivery is at-least-once: a crash
// between Emit and the save queues the page's messages again on restart,
// and the bounded ID set (dedup_size) drops what it still remembers.
//
// # Calls
//
// Every call (retries and More pages included) waits for a token of a
// golang.org/x/time/rate limiter (calls_per_minute, burst 1). A page with
// More is followed at once (subject to the limiter); otherwise the next
// poll is poll_interval later. HTTP failures, timeouts, unreadable pages
// and ErrorID != 0 back off (adapters.Backoff, retry_min..retry_max) and
// retry from the same mark. `Messages: null` is an empty page: the mark
// stays unless the page names a next one.
//
// # Credentials
//
// access_id and the password go in the query string, as the API wants.
// Neither is ever logged: errors from net/http (which print the whole URL)
// are rebuilt around the bare endpoint, and every error text is scrubbed of
// both values before it is returned or logged. Redirects are not followed,
// so the query cannot be replayed to another host.
//
// # Frames
//
// Identity and Source are the MobileID. The payload is RawPayload when
// present, else the JSON of the decoded Payload object; Meta has sin, min,
// mobile_id, message_id, message_utc, receive_utc, region_name,
// ota_message_size, payload_name, payload_format (raw or json) and each
// decoded field as "field.<Name>". A message the adapter cannot read in
// full (a RawPayload value over 255, no ID) is handed on with its whole
// JSON as payload, payload_format "message" and Meta "parse_error", so the
// decoder fails on it and it lands in the dead letters with the reason.
package orbcomm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/vigd/vigd/adapters"
)

// Poller is one configured orbcomm adapter.
type Poller struct {
	name     string
	cfg      Config
	log      *logrus.Entry
	stateDir string
	m        metrics
	endpoint string // cfg.URL without credentials, for errors
	start    time.Time

	// now is the clock for the first start (tests replace it).
	now func() time.Time

	mu     sync.Mutex
	status adapters.Status
	mark   Mark
}

// New builds a poller from a config; it validates and does no I/O.
func New(name string, cfg *Config, env adapters.Env) (*Poller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := env.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	p := &Poller{
		name:     name,
		cfg:      *cfg,
		log:      log,
		stateDir: env.StateDir,
		m:        newMetrics(name),
		endpoint: cfg.URL,
		now:      time.Now,
		status:   adapters.Status{Detail: "not started"},
	}
	if cfg.StartTime != "" {
		p.start, _ = parseStart(cfg.StartTime) // checked by Validate
	}
	return p, nil
}

// Status reports whether the last call succeeded, and the mark.
func (p *Poller) Status() adapters.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *Poller) setStatus(ok bool, detail string) {
	p.mu.Lock()
	p.status = adapters.Status{OK: ok, Detail: detail}
	p.mu.Unlock()
}

// Mark is the mark the next call starts from (the saved one once Run has
// started).
func (p *Poller) Mark() Mark {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mark
}

func (p *Poller) setMark(m Mark) {
	p.mu.Lock()
	p.mark = m
	p.mu.Unlock()
	p.m.highWater.Set(float64(max(m.FromID, 0)))
}

// GatewayError is an answer with ErrorID != 0.
type GatewayError struct{ ErrorID int64 }

func (e *GatewayError) Error() string { return fmt.Sprintf("gateway error id %d", e.ErrorID) }

// StatusError is an HTTP answer other than 200.
type StatusError struct {
	Code int
	Body string // the start of the body, credentials removed
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("http status %d", e.Code)
	}
	return fmt.Sprintf("http status %d: %s", e.Code, e.Body)
}

// errNotQueued says the sink did not take a message; the mark stays.
var errNotQueued = errors.New("message not queued")

// Run polls until ctx is cancelled. It returns an error only when the
// password or the state file cannot be read.
func (p *Poller) Run(ctx context.Context, sink adapters.Sink) error {
	password, err := p.password()
	if err != nil {
		p.setStatus(false, err.Error())
		return fmt.Errorf("orbcomm %s: %w", p.name, err)
	}
	red := newRedactor(p.cfg.AccessID, password)
	if p.stateDir == "" {
		p.setStatus(false, "no state folder")
		return fmt.Errorf("orbcomm %s: no state folder for the high-water mark", p.name)
	}
	if err := os.MkdirAll(p.stateDir, 0o750); err != nil {
		p.setStatus(false, err.Error())
		return fmt.Errorf("orbcomm %s: %w", p.name, err)
	}
	st, err := openStore(filepath.Join(p.stateDir, StateFile), p.cfg.DedupSize)
	if err != nil {
		p.setStatus(false, err.Error())
		return fmt.Errorf("orbcomm %s: %w", p.name, err)
	}
	defer st.Close()
	mark, saved, err := st.Mark()
	if err != nil {
		p.setStatus(false, err.Error())
		return fmt.Errorf("orbcomm %s: %w", p.name, err)
	}
	if !saved {
		start := p.start
		if start.IsZero() {
			start = p.now().Add(-p.cfg.Lookback)
		}
		mark = Mark{StartUTC: FormatTime(start)}
		p.log.WithField("start_utc", mark.StartUTC).Info("no saved mark: first poll starts at start_utc")
	}
	p.setMark(mark)

	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	c := &call{
		p: p, red: red, password: password,
		client: &http.Client{
			Transport: tr,
			// The query holds the credentials: never replay it elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	lim := rate.NewLimiter(rate.Every(time.Minute/time.Duration(p.cfg.CallsPerMinute)), 1)
	backoff := adapters.Backoff{Min: p.cfg.RetryMin, Max: p.cfg.RetryMax}
	p.log.WithFields(logrus.Fields{"url": p.endpoint, "mark": mark.String(), "calls_per_minute": p.cfg.CallsPerMinute}).Info("polling orbcomm gateway")
	p.setStatus(true, "polling "+p.endpoint+", next "+mark.String())

	for {
		if err := lim.Wait(ctx); err != nil {
			break // ctx done
		}
		more, err := c.poll(ctx, sink, st)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			p.failed(err, &backoff)
			if !backoff.Wait(ctx) {
				break
			}
			continue
		}
		if backoff.Attempt() > 0 {
			p.log.WithField("attempt", backoff.Attempt()).Info("gateway polls work again")
		}
		backoff.Reset()
		p.setStatus(true, "last call ok at "+time.Now().UTC().Format(time.RFC3339)+", next "+p.Mark().String())
		if more {
			continue
		}
		t := time.NewTimer(p.cfg.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	p.setStatus(false, "stopped")
	p.log.Info("stopped polling")
	return nil
}

// escalateAfter is the streak of failed calls that is logged at error.
const escalateAfter = 10

// failed logs a failed poll: the first of a streak at warn, the
// escalateAfter-th at error, the others at debug; and records it for
// readiness.
func (p *Poller) failed(err error, b *adapters.Backoff) {
	entry := p.log.WithError(err).WithFields(logrus.Fields{"attempt": b.Attempt() + 1, "mark": p.Mark().String()})
	var ge *GatewayError
	if errors.As(err, &ge) {
		entry = entry.WithField("error_id", ge.ErrorID)
	}
	var se *StatusError
	if errors.As(err, &se) {
		entry = entry.WithField("status", se.Code)
	}
	switch b.Attempt() {
	case 0:
		entry.Warn("gateway poll failed; retrying with backoff")
	case escalateAfter - 1:
		// Messages wait (and expire after a few days) at the gateway:
		// someone has to look.
		entry.Error("gateway polls keep failing")
	default:
		entry.Debug("gateway poll failed again")
	}
	p.setStatus(false, "last call failed: "+err.Error())
}

// password reads the mailbox password as configured; errors name the
// file, never its content.
func (p *Poller) password() (string, error) {
	path, what := p.cfg.PasswordFile, "password_file"
	if path == "" {
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", fmt.Errorf("password_credential %q: $CREDENTIALS_DIRECTORY is not set (LoadCredential= missing in the unit?)", p.cfg.PasswordCredential)
		}
		path, what = filepath.Join(dir, p.cfg.PasswordCredential), "password_credential"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		return "", fmt.Errorf("%s: cannot read %s", what, path)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", what, path)
	}
	return s, nil
}

// call is what one Run needs for its calls.
type call struct {
	p        *Poller
	red      *redactor
	password string
	client   *http.Client
}

// poll makes one call from the current mark and queues the page; it
// reports whether the gateway has more.
func (c *call) poll(ctx context.Context, sink adapters.Sink, st *store) (bool, error) {
	p := c.p
	mark := p.Mark()
	page, err := c.fetch(ctx, mark)
	if err != nil {
		return false, err
	}
	if page.ErrorID != 0 {
		p.m.calls.WithLabelValues("gateway_error").Inc()
		return false, &GatewayError{ErrorID: page.ErrorID}
	}
	p.m.calls.WithLabelValues("ok").Inc()
	p.m.lastSuccess.SetToCurrentTime()
	received := time.Now().UTC()
	log := p.log.WithField("mark", mark.String())
	log.WithFields(logrus.Fields{"count": len(page.Messages), "more": page.More}).Debug("page fetched")

	var keys []string
	inPage := map[string]bool{}
	for i := range page.Messages {
		msg := &page.Messages[i]
		key := msg.DedupKey()
		dup := inPage[key]
		if !dup {
			if dup, err = st.Seen(key); err != nil {
				c.save(st, keys, nil, log)
				return false, err
			}
		}
		if dup {
			p.m.messages.WithLabelValues("duplicate").Inc()
			log.WithFields(logrus.Fields{"message_id": msg.ID, "mobile_id": msg.MobileID}).Debug("repeated message skipped")
			continue
		}
		f := msg.Frame(p.name, received)
		if msg.Err != nil {
			p.m.frameErrors.WithLabelValues("unreadable").Inc()
			log.WithError(msg.Err).WithFields(logrus.Fields{"message_id": msg.ID, "mobile_id": msg.MobileID}).
				Warn("message not readable in full; handed on for the dead letters")
		}
		log.WithFields(logrus.Fields{"message_id": msg.ID, "mobile_id": msg.MobileID, "sin": msg.SIN, "bytes": len(f.Payload)}).Trace("message received")
		err := sink.Emit(ctx, f)
		if !adapters.Durable(err) {
			p.m.frameErrors.WithLabelValues("not_queued").Inc()
			// What was queued so far is remembered, the mark is not moved.
			c.save(st, keys, nil, log)
			return false, fmt.Errorf("message %d of %s: %w: %w", msg.ID, msg.MobileID, errNotQueued, err)
		}
		p.m.frames.Inc()
		if err != nil {
			p.m.messages.WithLabelValues("rejected").Inc()
		} else {
			p.m.messages.WithLabelValues("queued").Inc()
		}
		keys = append(keys, key)
		inPage[key] = true
	}

	next := nextMark(mark, page, log)
	var save *Mark
	if next != mark {
		save = &next
	}
	if err := st.Commit(keys, save); err != nil {
		// The page is queued; it will be fetched again and de-duplicated
		// as far as the set was saved.
		return false, err
	}
	p.setMark(next)
	if page.More && next == mark {
		log.Warn("gateway says More but names no next mark; waiting for the next poll")
		return false, nil
	}
	return page.More, nil
}

// save records the keys of messages already queued when a page stops
// half way (best effort: a repeat is only a duplicate).
func (c *call) save(st *store, keys []string, mark *Mark, log *logrus.Entry) {
	if len(keys) == 0 && mark == nil {
		return
	}
	if err := st.Commit(keys, mark); err != nil {
		log.WithError(err).Warn("cannot record queued message ids")
	}
}

// nextMark is where the call after page starts: from_id = NextStartID when
// positive, else start_utc = NextStartUTC, else where page started.
func nextMark(cur Mark, page *Page, log *logrus.Entry) Mark {
	utc := page.NextStartUTC
	if utc != "" {
		if _, err := ParseTime(utc); err != nil {
			log.WithField("next_start_utc", utc).Warn("gateway sent an unreadable NextStartUTC; ignored")
			utc = ""
		}
	}
	switch {
	case page.NextStartID > 0:
		if utc == "" {
			utc = cur.StartUTC
		}
		return Mark{FromID: page.NextStartID, StartUTC: utc}
	case utc != "":
		return Mark{StartUTC: utc}
	}
	return cur
}

// fetch makes one get_return_messages call.
func (c *call) fetch(ctx context.Context, mark Mark) (*Page, error) {
	p := c.p
	q := url.Values{}
	q.Set("access_id", p.cfg.AccessID)
	q.Set("password", c.password)
	if mark.FromID > 0 {
		q.Set("from_id", strconv.FormatInt(mark.FromID, 10))
	} else {
		q.Set("start_utc", mark.StartUTC)
	}
	if p.cfg.IncludeRawPayload {
		q.Set("include_raw_payload", "true")
	}
	if p.cfg.MobileID != "" {
		q.Set("mobile_id", p.cfg.MobileID)
	}
	// %20, not "+", for the space in start_utc: not every server reads
	// "+" in a query as a space.
	u := p.endpoint + "?" + strings.ReplaceAll(q.Encode(), "+", "%20")
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u, nil)
	if err != nil {
		p.m.calls.WithLabelValues("http_error").Inc()
		return nil, c.red.Error(err, p.endpoint)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		p.m.calls.WithLabelValues("http_error").Inc()
		return nil, c.red.Error(err, p.endpoint)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxResponseBytes+1))
	if err != nil {
		p.m.calls.WithLabelValues("http_error").Inc()
		return nil, c.red.Error(fmt.Errorf("read answer: %w", err), p.endpoint)
	}
	if resp.StatusCode != http.StatusOK {
		p.m.calls.WithLabelValues("http_error").Inc()
		snippet := strings.Join(strings.Fields(string(body[:min(len(body), 200)])), " ")
		return nil, &StatusError{Code: resp.StatusCode, Body: c.red.String(snippet)}
	}
	if int64(len(body)) > p.cfg.MaxResponseBytes {
		p.m.calls.WithLabelValues("bad_page").Inc()
		return nil, fmt.Errorf("answer over max_response_bytes (%d)", p.cfg.MaxResponseBytes)
	}
	page, err := ParsePage(body)
	if err != nil {
		p.m.calls.WithLabelValues("bad_page").Inc()
		return nil, c.red.Error(err, p.endpoint)
	}
	return page, nil
}

var (
	_ adapters.Adapter        = (*Poller)(nil)
	_ adapters.StatusReporter = (*Poller)(nil)
	_ error                   = (*GatewayError)(nil)
	_ error                   = (*StatusError)(nil)
)
