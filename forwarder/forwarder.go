// Package forwarder moves encoded records from vigd's durable queues to the
// XCloud eventstore (../shared/contract/v2-eventstore.md): it posts things
// and datastreams from its state store, batches observations and alarms per
// device, posts raw records one by one, signs and rate-limits every request,
// acts on each answer as the contract's table says, and commits a queue only
// past records that are resolved (accepted or dead-lettered).
//
// Delivery works in windows. A window is a span of one queue (alarms first,
// always); its end is saved in the state store before the first request, so
// that after a crash the same records form the same batches with the same
// batchIds, and a server that deduplicates sees a re-sent batch as the one it
// already has (409). Batch ids derive from queue positions plus a random
// epoch kept in the state store, so a wiped queue or a second gateway never
// reuses an id. The queue is committed at the end of each window; batches
// resolved inside a window are remembered, so a restart does not post them
// again.
//
// Per device the order is kept: a device's batches are sent one after the
// other, each only when the one before it is resolved. A bad record never
// blocks the queue: 400 splits the batch down to the record and
// dead-letters it, an entity the server and the state store both do not know
// dead-letters the records that refer to it.
//
// The backoff is written here rather than taken from adapters.Backoff
// because the forwarder must not import adapters (import graph), and it must
// honour Retry-After and run on the injected Clock.
package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/vigd/vigd/forwarder/deadletter"
	"github.com/vigd/vigd/forwarder/queue"
	"github.com/vigd/vigd/forwarder/signer"
)

// A window holds up to windowBatches full batches, or more records while
// they fit in windowBytes of bodies and windowRecords: with many devices in
// a window each device's batch is small, and a larger window makes each
// device's batch larger (fewer requests) for a bounded amount of memory.
const (
	windowBatches = 4
	windowBytes   = 8 << 20
	windowRecords = 64 << 10
)

// While a window lingers, new records are read at most every gatherEvery,
// readChunk bytes at a time.
const (
	gatherEvery = 10 * time.Millisecond
	readChunk   = 256 << 10
	readRecords = 1024 // what a queue read holds without growing its entry array
)

// resolvedEvery is how often, while a window is being delivered, the
// batches resolved so far are written to the state store. Between writes a
// crash costs re-posting them (the server answers 409, taken as accepted),
// not a state-store fsync per request.
const resolvedEvery = time.Second

// Clock is the time source; tests inject a fake.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Deps are what the forwarder works with.
type Deps struct {
	Data, Alarms queue.Queue
	State        *State
	DeadLetters  *deadletter.Store
	// HTTPClient sends the requests; it must sign them. Nil means a client
	// with the signer.Transport built from Config (the secret is read
	// once, in New).
	HTTPClient *http.Client
	Clock      Clock // nil: real time
	Log        *logrus.Entry
}

// ErrConfig wraps configuration and dependency problems found by New.
var ErrConfig = errors.New("forwarder: invalid configuration")

// qinfo is one of the two queues.
type qinfo struct {
	name string // "alarms" or "data": part of batch ids and state keys
	q    queue.Queue
	// ents is the last window's entry array, reused: a window of tens of
	// thousands of entries grown by append was a megabytes-large
	// allocation and copy per window.
	ents []queue.Entry
}

type endpoints struct {
	things, datastreams, observations, alarms, raw endpoint
}

// Forwarder delivers the queues upstream. Create with New, run with Run.
type Forwarder struct {
	cfg     Config
	base    *url.URL
	client  *http.Client
	state   *State
	dl      *deadletter.Store
	clock   Clock
	log     *logrus.Entry
	limiter *rate.Limiter
	eps     endpoints
	data    qinfo
	alarms  qinfo

	inAlarms    bool // the alarms queue is being drained (no nesting)
	stopGrace   time.Duration
	replayEvery time.Duration
	closeIdle   func()

	mu     sync.Mutex
	status Status

	live liveness // heartbeat for the watchdog (alive.go)
}

// Status is the forwarder's state for readiness and sd_notify STATUS.
type Status struct {
	// State is "starting", "idle", "sending", "retrying" (transient
	// failures), "refused" (401/403/404: an operator must act) or
	// "stopped".
	State        string
	LastDelivery time.Time // last request the server accepted
	LastError    string
	LastErrorAt  time.Time
	Failures     int // consecutive failed requests
}

// String is a one-line summary for sd_notify STATUS.
func (s Status) String() string {
	var b strings.Builder
	b.WriteString("forwarder " + s.State)
	if !s.LastDelivery.IsZero() {
		b.WriteString(", last delivery " + s.LastDelivery.UTC().Format(time.RFC3339))
	}
	if s.Failures > 0 && s.LastError != "" {
		fmt.Fprintf(&b, ", %d failures: %s", s.Failures, s.LastError)
	}
	return b.String()
}

// New checks cfg and deps; it does no network I/O (it reads the secret
// file when it has to build the HTTP client).
func New(cfg Config, deps Deps) (*Forwarder, error) {
	cfg = cfg.withDefaults()
	var errs []error
	if deps.Data == nil || deps.Alarms == nil {
		errs = append(errs, errors.New("deps: both queues are required"))
	}
	if deps.State == nil || deps.DeadLetters == nil {
		errs = append(errs, errors.New("deps: state and dead-letter stores are required"))
	}
	if err := cfg.Validate(); err != nil {
		if deps.HTTPClient != nil {
			// A given client signs by itself: the secret settings do not
			// matter.
			err = dropSecretErrors(err)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	base, _ := url.Parse(strings.TrimRight(cfg.URL, "/"))
	f := &Forwarder{
		cfg:    cfg,
		base:   base,
		client: deps.HTTPClient,
		state:  deps.State,
		dl:     deps.DeadLetters,
		clock:  deps.Clock,
		log:    deps.Log,
		data:   qinfo{name: "data", q: deps.Data},
		alarms: qinfo{name: "alarms", q: deps.Alarms},
		eps: endpoints{
			things:       endpoint{"things", cfg.Paths.Things, "things"},
			datastreams:  endpoint{"datastreams", cfg.Paths.Datastreams, "datastreams"},
			observations: endpoint{"observations", cfg.Paths.Observations, "observations"},
			alarms:       endpoint{"alarms", cfg.Paths.Alarms, "alarms"},
			raw:          endpoint{"raw", cfg.Paths.Raw, ""},
		},
		status:      Status{State: "starting"},
		stopGrace:   min(stopGrace, cfg.Timeout.D()),
		replayEvery: replayEvery,
	}
	if f.clock == nil {
		f.clock = realClock{}
	}
	if f.log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		f.log = logrus.NewEntry(l)
	}
	// A burst of one spaces requests evenly: a server that limits with a
	// small bucket never sees two at once.
	f.limiter = rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), 1)
	if f.client == nil {
		secret, err := signer.LoadSecret(signer.SecretSpec{File: cfg.SecretFile, Credential: cfg.SecretCredential})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		// An own transport (transport.go), so that Run can close its idle
		// connections on the way out (a server shutting down waits for
		// them).
		base, err := newTransport(cfg)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if cfg.TLS.InsecureSkipVerify {
			f.log.Warn("tls.insecure_skip_verify is set: the eventstore's certificate is not verified")
		}
		f.log.WithFields(logrus.Fields{"proxy": redactedProxy(cfg.Proxy), "tls_ca_file": cfg.TLS.CAFile,
			"tls_client_certificate": cfg.TLS.CertFile != ""}).Debug("http transport")
		base.MaxIdleConnsPerHost = max(base.MaxIdleConnsPerHost, cfg.ParallelRequests)
		f.closeIdle = base.CloseIdleConnections
		f.client = &http.Client{Transport: &signer.Transport{
			Base:      base,
			Config:    cfg.Signing,
			ServiceID: cfg.ServiceID,
			Secret:    secret,
			Now:       f.clock.Now,
		}}
	}
	return f, nil
}

func dropSecretErrors(err error) error {
	var keep []error
	for _, e := range unjoin(err) {
		if !strings.HasPrefix(e.Error(), "secret_file:") && !strings.HasPrefix(e.Error(), "service_id:") {
			keep = append(keep, e)
		}
	}
	return errors.Join(keep...)
}

// Status reports the current state.
func (f *Forwarder) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

// LastDelivery is when the server last accepted a request (zero: never
// since start).
func (f *Forwarder) LastDelivery() time.Time { return f.Status().LastDelivery }

func (f *Forwarder) setState(s string) {
	f.mu.Lock()
	f.status.State = s
	f.mu.Unlock()
}

// Run delivers until ctx ends, then returns nil once the request in flight
// has its answer (or Config.Timeout, at most 10s, has passed).
func (f *Forwarder) Run(ctx context.Context) error {
	f.log.WithFields(logrus.Fields{"url": f.base.String(), "epoch": f.state.Epoch()}).Info("forwarder started")
	f.watchRequests()
	defer func() {
		if f.closeIdle != nil {
			f.closeIdle()
		} else {
			f.client.CloseIdleConnections()
		}
		f.setState("stopped")
		f.log.Info("forwarder stopped")
	}()
	for ctx.Err() == nil {
		f.beat()
		if err := f.syncEntities(ctx); err != nil {
			return nil
		}
		did, err := f.drainAlarms(ctx)
		if err != nil {
			return nil
		}
		if did {
			continue
		}
		f.setState("sending")
		did, err = f.runWindow(ctx, &f.data)
		if err != nil {
			return nil
		}
		if did {
			continue
		}
		f.setState("idle")
		f.replayPending(ctx)
		t := time.NewTimer(f.replayEvery)
		idle := f.waiting()
		select {
		case <-ctx.Done():
		case <-f.alarms.q.Notify():
		case <-f.data.q.Notify():
		case <-f.state.Notify():
		case <-t.C:
		}
		idle()
		t.Stop()
	}
	return nil
}

// replayEvery is how often an idle forwarder looks for records that
// `vigd deadletters replay` marked.
var replayEvery = 5 * time.Second

// replayPending re-queues the record entries waiting in the dead-letter
// store's replay folder and deletes them. Frames are left for the
// pipeline.
func (f *Forwarder) replayPending(ctx context.Context) {
	n, err := f.ReplayPending(ctx)
	if err != nil {
		f.log.WithError(err).Warn("dead letter replay failed")
	}
	if n > 0 {
		f.log.WithField("count", n).Info("dead letters replayed")
	}
}

// ReplayPending re-queues every record entry waiting in the dead-letter
// store's replay folder (see deadletter.Store.MarkReplay) and deletes each
// once it is queued. Run calls it when idle; it returns how many it
// replayed.
func (f *Forwarder) ReplayPending(ctx context.Context) (int, error) {
	es, err := f.dl.TakeReplays()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range es {
		if e.Class != deadletter.ClassRecord {
			continue
		}
		if err := f.ReplayRecord(ctx, e); err != nil {
			return n, fmt.Errorf("replay %s: %w", e.ID, err)
		}
		if err := f.dl.Delete(e.ID); err != nil && !errors.Is(err, deadletter.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

// drainAlarms delivers alarm windows until the alarms queue is empty.
func (f *Forwarder) drainAlarms(ctx context.Context) (bool, error) {
	if f.inAlarms {
		return false, nil
	}
	f.inAlarms = true
	defer func() { f.inAlarms = false }()
	any := false
	for {
		did, err := f.runWindow(ctx, &f.alarms)
		if err != nil || !did {
			return any, err
		}
		any = true
	}
}

// runWindow delivers one window of a queue and commits it. It reports
// false when the queue is empty; the error is ctx's.
func (f *Forwarder) runWindow(ctx context.Context, qi *qinfo) (bool, error) {
	es, w, err := f.formWindow(ctx, qi)
	if err != nil {
		return false, err
	}
	if len(es) == 0 {
		return false, nil
	}
	// The pipeline stores an entity before it appends the records that
	// refer to it: posting the unsent ones now keeps a window's records
	// behind their entities.
	if err := f.syncEntities(ctx); err != nil {
		return true, err
	}
	batches := f.makeBatches(qi, es)
	done, err := f.state.resolved(qi.name)
	if err != nil {
		f.log.WithError(err).Warn("state read failed")
	}
	todo := make([]*batch, 0, len(batches))
	for _, b := range batches {
		if done[b.id] {
			continue
		}
		if b.ep.listKey == "" && !f.cfg.RawEnabled {
			// Skipping again after a restart costs nothing: no state write.
			recordsTotal.WithLabelValues("raw", "skipped").Inc()
			continue
		}
		todo = append(todo, b)
	}
	var marks []string
	flushed := time.Now()
	mark := func() {
		if len(marks) == 0 {
			return
		}
		if err := f.state.markResolved(qi.name, marks...); err != nil {
			// Only costs duplicates (409) after a crash.
			f.log.WithError(err).Warn("state write failed")
		}
		marks, flushed = marks[:0], time.Now()
	}
	for len(todo) > 0 {
		// Batches of different devices go out together (parallel_requests):
		// a window of many small per-device batches is not held to one
		// round trip each. A device's own batches go one after the other.
		run := distinctRun(todo, f.cfg.ParallelRequests)
		todo = todo[len(run):]
		first := f.postAll(ctx, run)
		for i, b := range run {
			if err := f.deliverFrom(ctx, b, first[i]); err != nil {
				mark()
				return true, err
			}
			b.wire = nil // sent: do not hold the body for the rest of the window
			marks = append(marks, b.id)
		}
		if time.Since(flushed) >= resolvedEvery {
			mark()
		}
	}
	for {
		err := qi.q.Commit(w.End)
		if err == nil {
			break
		}
		f.log.WithError(err).WithField("queue", qi.name).Warn("queue commit failed")
		if !f.sleep(ctx, f.cfg.Retry.Min.D()) {
			mark()
			return true, ctx.Err()
		}
	}
	if err := f.state.clearWindow(qi.name); err != nil {
		f.log.WithError(err).Warn("state write failed")
	}
	if cap(es) <= 2*windowRecords {
		clear(es) // the bodies are not held until the next window
		qi.ents = es[:0]
	}
	f.log.WithFields(logrus.Fields{"queue": qi.name, "count": len(es), "batches": len(batches)}).Debug("window delivered")
	return true, nil
}

// distinctRun is the longest prefix of bs, at most n long, in which no
// device (endpoint, deviceId, customerId) has two batches: those may be in
// flight together.
func distinctRun(bs []*batch, n int) []*batch {
	type key struct{ ep, dev, cust string }
	seen := make(map[key]bool, n)
	i := 0
	for i < len(bs) && i < n {
		k := key{bs[i].ep.name, bs[i].dev, bs[i].cust}
		if seen[k] {
			break
		}
		seen[k] = true
		i++
	}
	return bs[:max(i, 1)]
}

// posted is the outcome of a batch's first request.
type posted struct {
	a   *answer
	err error
}

// postAll sends the first request of every batch of run at once and
// returns the outcomes in order. A run of one is posted by deliverFrom
// itself (nil outcome).
func (f *Forwarder) postAll(ctx context.Context, run []*batch) []*posted {
	out := make([]*posted, len(run))
	if len(run) < 2 {
		return out
	}
	var wg sync.WaitGroup
	for i, b := range run {
		wg.Go(func() {
			a, err := f.post(ctx, b)
			out[i] = &posted{a, err}
		})
	}
	wg.Wait()
	return out
}

// formWindow reads the next window: the saved one after a restart, else
// up to windowBatches full batches, waiting up to the linger time for more
// records when it is not full. A new window is saved before it is returned.
func (f *Forwarder) formWindow(ctx context.Context, qi *qinfo) ([]queue.Entry, window, error) {
	cur := qi.q.Cursor()
	if w, ok, err := f.state.loadWindow(qi.name); err == nil && ok {
		if cur.Less(w.End) {
			es, err := f.read(ctx, qi, cur, w.N, math.MaxInt)
			if err != nil {
				return nil, w, err
			}
			n := 0
			for n < len(es) && es[n].Pos.Less(w.End) {
				n++
			}
			if n > 0 {
				f.log.WithFields(logrus.Fields{"queue": qi.name, "count": n}).Info("resuming window after restart")
				return es[:n], w, nil
			}
		}
		if err := f.state.clearWindow(qi.name); err != nil {
			f.log.WithError(err).Warn("state write failed")
		}
	}
	maxN := max(f.cfg.Batch.MaxRecords*windowBatches, windowRecords)
	maxB := int(min(max(f.cfg.Batch.MaxBytes*windowBatches, windowBytes), math.MaxInt32))
	es, size, err := f.readInto(ctx, qi, qi.ents[:0], cur, maxN, maxB)
	if err != nil || len(es) == 0 {
		return nil, window{}, err
	}
	// A read stops just under the byte limit (the next record did not
	// fit): such a window is full, and waiting for more would only slow a
	// drain down. Linger when there is room.
	if linger := f.cfg.Batch.Linger.D(); linger > 0 && len(es) < maxN && size < maxB-maxB/16 {
		deadline := f.clock.Now().Add(linger)
		if _, real := f.clock.(realClock); real && es[0].Rec.Time > 0 {
			// The oldest record has waited since it was appended (while
			// the previous window was being sent): linger counts from
			// then. Append times are on the real clock.
			if d := time.Unix(0, es[0].Rec.Time).Add(linger); d.Before(deadline) {
				deadline = d
			}
		}
		for len(es) < maxN && size < maxB {
			left := deadline.Sub(f.clock.Now())
			if left <= 0 {
				break
			}
			select {
			case <-ctx.Done():
				return nil, window{}, ctx.Err()
			case <-qi.q.Notify():
				// Appends come one group commit at a time: gather a
				// few before reading again (real time: pacing, not a
				// wait the clock should see).
				t := time.NewTimer(min(left, gatherEvery))
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, window{}, ctx.Err()
				case <-t.C:
				}
			case <-f.clock.After(left):
			}
			// Only what came after the records in hand is read.
			if es, size, err = f.readInto(ctx, qi, es, es[len(es)-1].Next, maxN, maxB); err != nil {
				return nil, window{}, err
			}
		}
	}
	w := window{Start: es[0].Pos, End: es[len(es)-1].Next, N: len(es)}
	for {
		err := f.state.saveWindow(qi.name, w)
		if err == nil {
			break
		}
		f.log.WithError(err).Warn("state write failed")
		if !f.sleep(ctx, f.cfg.Retry.Min.D()) {
			return nil, w, ctx.Err()
		}
	}
	return es, w, nil
}

// readInto appends to es what the queue holds from `from`, until es has
// maxN entries or maxB bytes of bodies or the queue has no more, reading in
// chunks (a read sizes its buffers by what it may return). It returns es
// and the bytes of its bodies.
func (f *Forwarder) readInto(ctx context.Context, qi *qinfo, es []queue.Entry, from queue.Position, maxN, maxB int) ([]queue.Entry, int, error) {
	size := bodyBytes(es)
	for len(es) < maxN && size < maxB {
		wantN, wantB := min(maxN-len(es), readRecords), min(maxB-size, readChunk)
		more, err := f.read(ctx, qi, from, wantN, wantB)
		if err != nil {
			return es, size, err
		}
		if len(more) == 0 {
			break
		}
		es = append(es, more...)
		n := bodyBytes(more)
		size += n
		from = more[len(more)-1].Next
		if len(more) < wantN && n < wantB-wantB/16 {
			break // caught up
		}
	}
	return es, size, nil
}

func bodyBytes(es []queue.Entry) int {
	n := 0
	for i := range es {
		n += len(es[i].Rec.Body)
	}
	return n
}

// read retries a failing queue read until ctx ends.
func (f *Forwarder) read(ctx context.Context, qi *qinfo, from queue.Position, maxN, maxB int) ([]queue.Entry, error) {
	bo := f.newBackoff()
	for {
		es, err := qi.q.Read(from, maxN, maxB)
		if err == nil {
			return es, nil
		}
		f.log.WithError(err).WithField("queue", qi.name).Warn("queue read failed")
		if !f.sleep(ctx, bo.next()) {
			return nil, ctx.Err()
		}
	}
}

// syncEntities posts every thing, then every datastream, not yet sent.
func (f *Forwarder) syncEntities(ctx context.Context) error {
	if err := f.syncKind(ctx, Thing); err != nil {
		return err
	}
	return f.syncKind(ctx, Datastream)
}

func (f *Forwarder) syncKind(ctx context.Context, k EntityKind) error {
	bo := f.newBackoff()
	var last string
	for ctx.Err() == nil {
		ps, err := f.state.unsent(k, f.cfg.Batch.MaxRecords*windowBatches)
		if err != nil {
			f.log.WithError(err).Warn("state read failed")
			if !f.sleep(ctx, bo.next()) {
				break
			}
			continue
		}
		if len(ps) == 0 {
			return nil
		}
		// The same set again means the state store could not record the
		// last round: do not spin on it.
		if key := fmt.Sprint(len(ps), ps[0].SensusID, ps[0].Hash); key == last {
			if !f.sleep(ctx, bo.next()) {
				break
			}
		} else {
			last = key
		}
		for _, b := range f.entityBatches(k, ps) {
			if err := f.deliver(ctx, b); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// sleep waits d on the clock; false when ctx ended first.
func (f *Forwarder) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	defer f.waiting()()
	select {
	case <-ctx.Done():
		return false
	case <-f.clock.After(d):
		return true
	}
}

// backoff is exponential from min to max with jitter in [d/2, d].
type backoff struct {
	min, max time.Duration
	attempt  int
}

func (f *Forwarder) newBackoff() *backoff {
	return &backoff{min: f.cfg.Retry.Min.D(), max: f.cfg.Retry.Max.D()}
}

func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.attempt && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	b.attempt++
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// DeadRecord is the Data of a dead letter of class "record": a queue
// record, or a thing or datastream the server refused.
type DeadRecord struct {
	Kind       string `json:"kind"` // observation, alarm, raw, thing, datastream
	DeviceID   string `json:"deviceId,omitempty"`
	CustomerID string `json:"customerId,omitempty"`
	// Ref is the entity the record refers to (an entity's thing).
	Ref string `json:"ref,omitempty"`
	// SensusID of a dead-lettered thing or datastream.
	SensusID string `json:"sensusID,omitempty"`
	BatchID  string `json:"batchId,omitempty"`
	// Body is the record's JSON; BodyText holds a body that is not JSON.
	Body     json.RawMessage `json:"body,omitempty"`
	BodyText string          `json:"bodyText,omitempty"`
}

func deadRecord(b *batch, it *item) DeadRecord {
	d := DeadRecord{Kind: it.kind(), BatchID: b.id}
	if it.ent != nil {
		d.SensusID, d.Ref = it.ent.SensusID, it.ent.Thing
	} else {
		r := &it.entry.Rec
		d.DeviceID, d.CustomerID, d.Ref = r.DeviceID, r.CustomerID, r.Ref
	}
	if json.Valid(it.body) {
		d.Body = it.body
	} else {
		d.BodyText = string(it.body)
	}
	return d
}

// ErrNotRecord is returned by ReplayRecord for an entry that is not a
// record (frames are replayed through the pipeline).
var ErrNotRecord = errors.New("dead letter is not a record")

// ReplayRecord puts a dead-lettered record back into its queue (a thing or
// datastream back into the state store, not sent). The caller deletes the
// entry once this returns nil.
func (f *Forwarder) ReplayRecord(ctx context.Context, e deadletter.Entry) error {
	if e.Class != deadletter.ClassRecord {
		return fmt.Errorf("%w: %s is a %s", ErrNotRecord, e.ID, e.Class)
	}
	var d DeadRecord
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return fmt.Errorf("dead letter %s: %w", e.ID, err)
	}
	body := []byte(d.Body)
	if len(body) == 0 {
		body = []byte(d.BodyText)
	}
	rec := queue.Record{DeviceID: d.DeviceID, CustomerID: d.CustomerID, Ref: d.Ref, Body: body}
	switch d.Kind {
	case "observation":
		rec.Kind = queue.Observation
		return f.data.q.Append(ctx, rec)
	case "raw":
		rec.Kind = queue.Raw
		return f.data.q.Append(ctx, rec)
	case "alarm":
		rec.Kind = queue.Alarm
		return f.alarms.q.Append(ctx, rec)
	case "thing", "datastream":
		k := Thing
		if d.Kind == "datastream" {
			k = Datastream
		}
		if _, err := f.state.upsert(k, d.SensusID, d.Ref, body); err != nil {
			return err
		}
		_, err := f.state.MarkUnsent(k, d.SensusID)
		return err
	}
	return fmt.Errorf("dead letter %s: unknown record kind %q", e.ID, d.Kind)
}
