package forwarder

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/forwarder/deadletter"
)

// stopGrace is how long a request in flight may finish after Run's ctx
// ended (bounded by Config.Timeout too). A variable for tests.
var stopGrace = 10 * time.Second

// max422Rounds is how many times a batch is re-sent after posting the
// entities a 422 named before the records that refer to them are given up
// as dead letters.
const max422Rounds = 3

// maxRetryAfter caps a server's Retry-After (a wrong date must not stop the
// forwarder for days).
const maxRetryAfter = time.Hour

// apiError is one element of an answer's errors list.
type apiError struct {
	RecordID    json.RawMessage `json:"recordId"`
	RecordIndex *int            `json:"recordIndex"`
	AlarmID     string          `json:"alarmId"`
	Error       string          `json:"error"`
	Message     string          `json:"message"`
}

func (e apiError) reason() string {
	switch {
	case e.Error != "" && e.Message != "":
		return e.Error + ": " + e.Message
	case e.Error != "":
		return e.Error
	}
	return e.Message
}

// answer is the server's reply.
type answer struct {
	status     int
	body       []byte
	retryAfter time.Duration
	Status     string     `json:"status"`
	Error      string     `json:"error"`
	Message    string     `json:"message"`
	Errors     []apiError `json:"errors"`
	Rejected   int        `json:"recordsRejected"`
	Failures   int        `json:"failureCount"`
}

// reason is the server's explanation of a refusal.
func (a *answer) reason() string {
	var parts []string
	if a.Error != "" {
		parts = append(parts, a.Error)
	}
	if a.Message != "" {
		parts = append(parts, a.Message)
	}
	for _, e := range a.Errors {
		parts = append(parts, e.reason())
		if len(parts) > 4 {
			break
		}
	}
	if len(parts) == 0 {
		s := strings.TrimSpace(string(a.body))
		if len(s) > 200 {
			s = s[:200]
		}
		return s
	}
	return strings.Join(parts, ": ")
}

// gzipWriters are reused: a gzip.Writer's compressor state is most of a
// megabyte, and a new one per request was a large part of the forwarder's
// allocations with gzip on.
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// gzipBody compresses a request body.
func gzipBody(body []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(body)/4 + 64)
	zw := gzipWriters.Get().(*gzip.Writer)
	zw.Reset(&buf)
	_, _ = zw.Write(body)
	_ = zw.Close()
	gzipWriters.Put(zw)
	return buf.Bytes()
}

// errStopped reports that the request did not get an answer because Run
// is stopping.
var errStopped = errors.New("forwarder stopping")

// post sends b once.
func (f *Forwarder) post(ctx context.Context, b *batch) (*answer, error) {
	if b.wire == nil {
		body := b.body()
		if f.cfg.Gzip {
			body = gzipBody(body)
		}
		b.wire = body
	}
	now := f.clock.Now()
	if d := f.limiter.ReserveN(now, 1).DelayFrom(now); d > 0 {
		if !f.sleep(ctx, d) {
			return nil, errStopped
		}
	}
	if ctx.Err() != nil {
		return nil, errStopped
	}
	// The request outlives ctx for a while: an answer that arrives lets
	// the records be committed instead of sent again after the restart.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.cfg.Timeout.D())
	defer cancel()
	finished := make(chan struct{})
	defer close(finished)
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(f.stopGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-finished:
		}
	})
	defer stop()

	u := *f.base
	u.Path += b.ep.path
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, u.String(), bytes.NewReader(b.wire))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if f.cfg.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	batchRecords.Observe(float64(len(b.items)))
	resp, err := f.client.Do(req)
	if err != nil {
		requestsTotal.WithLabelValues(b.ep.name, "error").Inc()
		if ctx.Err() != nil && rctx.Err() != nil {
			return nil, errStopped
		}
		return nil, err
	}
	defer resp.Body.Close()
	a := &answer{status: resp.StatusCode}
	a.body, err = io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	requestsTotal.WithLabelValues(b.ep.name, strconv.Itoa(resp.StatusCode)).Inc()
	if err != nil && resp.StatusCode/100 == 2 {
		// The server took the batch but its list of rejected records is
		// lost: send again (the batchId makes it a 409).
		return nil, fmt.Errorf("read answer: %w", err)
	}
	_ = json.Unmarshal(a.body, a)
	a.retryAfter = retryAfter(resp.Header.Get("Retry-After"), f.clock.Now())
	return a, nil
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		d = time.Duration(n * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// deliver sends b until each of its items is resolved: accepted by the
// server or put in the dead-letter store. It returns only when ctx ends
// (errStopped).
func (f *Forwarder) deliver(ctx context.Context, b *batch) error {
	return f.deliverFrom(ctx, b, nil)
}

// deliverFrom is deliver for a batch whose first request may already have
// been sent (first; nil when not).
func (f *Forwarder) deliverFrom(ctx context.Context, b *batch, first *posted) error {
	bo := f.newBackoff()
	rounds := 0
	for {
		var a *answer
		var err error
		if first != nil {
			a, err, first = first.a, first.err, nil
		} else {
			if ctx.Err() != nil {
				return errStopped
			}
			if bo.attempt > 0 && b.q == &f.data {
				// Alarms go first, also while the data queue waits for an
				// outage to end.
				if _, err := f.drainAlarms(ctx); err != nil {
					return err
				}
			}
			a, err = f.post(ctx, b)
		}
		if errors.Is(err, errStopped) {
			return err
		}
		if err != nil {
			if !f.retry(ctx, b, bo, 0, "network", err.Error()) {
				return errStopped
			}
			continue
		}
		le := f.log.WithFields(logrus.Fields{"endpoint": b.ep.name, "status": a.status, "batch_id": b.id, "count": len(b.items)})
		switch {
		case a.status == 200 || a.status == 201 || a.status == 202:
			f.succeeded()
			if len(a.Errors) > 0 {
				return f.partial(ctx, b, a)
			}
			if n := max(a.Rejected, a.Failures); n > 0 {
				le.WithField("rejected", n).Error("server rejected records without naming them")
			}
			le.Debug("batch accepted")
			return f.accept(b, b.items, "accepted")
		case a.status == 409:
			f.succeeded()
			le.Debug("batch already received")
			return f.accept(b, b.items, "duplicate")
		case a.status == 400 || a.status == 413:
			f.succeeded()
			return f.splitOrReject(ctx, b, a)
		case a.status == 422:
			f.succeeded()
			unknown := unknownRefs(a)
			if len(unknown) == 0 || b.ep == &f.eps.things {
				// A thing refers to nothing: posting entities cannot help.
				return f.splitOrReject(ctx, b, a)
			}
			rounds++
			nb, err := f.recover422(ctx, b, a, unknown, rounds > max422Rounds)
			if err != nil {
				return err
			}
			if nb == nil {
				return nil
			}
			b = nb
			continue
		case a.status == 401 || a.status == 403 || a.status == 404 ||
			(a.status/100 == 4 && a.status != 408 && a.status != 429):
			if !f.retry(ctx, b, bo, a.retryAfter, "refused", fmt.Sprintf("%d %s", a.status, a.reason())) {
				return errStopped
			}
		default: // 408, 429, 5xx and anything else
			if !f.retry(ctx, b, bo, a.retryAfter, "transient", fmt.Sprintf("%d %s", a.status, a.reason())) {
				return errStopped
			}
		}
	}
}

// retry records a failure, logs it (the first of a streak at error for a
// refusal or warn for a transient failure, then debug) and waits the
// backoff, at least retryAfter. False when ctx ended.
func (f *Forwarder) retry(ctx context.Context, b *batch, bo *backoff, ra time.Duration, class, msg string) bool {
	wait := max(bo.next(), ra)
	f.mu.Lock()
	first := f.status.Failures == 0 || !strings.HasPrefix(f.status.State, stateOf(class))
	f.status.Failures++
	f.status.LastError = b.ep.name + ": " + msg
	f.status.LastErrorAt = f.clock.Now()
	f.status.State = stateOf(class)
	n := f.status.Failures
	f.mu.Unlock()
	retriesTotal.Inc()
	le := f.log.WithFields(logrus.Fields{"endpoint": b.ep.name, "path": b.ep.path, "batch_id": b.id,
		"error": msg, "attempt": n, "retry_in": wait.Round(time.Millisecond).String()})
	switch {
	case first && class == "refused":
		le.Error("eventstore refused the request, check url, paths, service_id and secret")
	case first:
		le.Warn("eventstore unreachable, retrying")
	default:
		le.Debug("request failed, retrying")
	}
	return f.sleep(ctx, wait)
}

func stateOf(class string) string {
	if class == "refused" {
		return "refused"
	}
	return "retrying"
}

// succeeded ends a failure streak: the server answered.
func (f *Forwarder) succeeded() {
	now := f.clock.Now()
	f.mu.Lock()
	n := f.status.Failures
	f.status.Failures = 0
	f.status.LastDelivery = now
	if f.status.State == "retrying" || f.status.State == "refused" {
		f.status.State = "sending"
	}
	f.mu.Unlock()
	lastSuccess.Set(float64(now.Unix()))
	if n > 0 {
		f.log.WithField("failures", n).Info("eventstore reachable again")
	}
}

// accept resolves items the server took.
func (f *Forwarder) accept(b *batch, items []item, result string) error {
	var ents []pendingEntity
	// Counted per run of one kind: a label lookup per record was a few
	// percent of the forwarder's CPU.
	kind, n := "", 0
	for i := range items {
		if items[i].ent != nil {
			ents = append(ents, *items[i].ent)
		}
		if k := items[i].kind(); k != kind {
			if n > 0 {
				recordsTotal.WithLabelValues(kind, result).Add(float64(n))
			}
			kind, n = k, 0
		}
		n++
	}
	if n > 0 {
		recordsTotal.WithLabelValues(kind, result).Add(float64(n))
	}
	if err := f.state.setStatus(ents, statusSent, ""); err != nil {
		// They are posted again later: harmless.
		f.log.WithError(err).Warn("state write failed")
	}
	return nil
}

// reject puts an item in the dead-letter store. It retries a failing
// store until ctx ends: the queue must not move past a record that is
// neither delivered nor kept.
func (f *Forwarder) reject(ctx context.Context, b *batch, it *item, status int, reason string) error {
	data, err := json.Marshal(deadRecord(b, it))
	if err != nil {
		return err
	}
	e := deadletter.Entry{Class: deadletter.ClassRecord, Reason: reason,
		Where: b.ep.name + "/" + strconv.Itoa(status), Data: data}
	bo := f.newBackoff()
	for {
		if e, err = f.dl.Put(e); err == nil {
			break
		}
		f.log.WithError(err).Error("dead letter store failed")
		if !f.sleep(ctx, bo.next()) {
			return errStopped
		}
	}
	recordsTotal.WithLabelValues(it.kind(), "rejected").Inc()
	fields := logrus.Fields{"endpoint": b.ep.name, "status": status, "batch_id": b.id,
		"reason": reason, "dead_letter": e.ID, "kind": it.kind()}
	if it.ent != nil {
		fields["sensus_id"] = it.ent.SensusID
		if err := f.state.setStatus([]pendingEntity{*it.ent}, statusRejected, reason); err != nil {
			f.log.WithError(err).Warn("state write failed")
		}
	} else {
		fields["device_id"] = it.entry.Rec.DeviceID
	}
	f.log.WithFields(fields).Warn("record rejected, kept as dead letter")
	return nil
}

// partial handles an answer with errors: the named records are dead
// letters, the others accepted (never sent again).
func (f *Forwarder) partial(ctx context.Context, b *batch, a *answer) error {
	bad := map[int]string{}
	var unnamed []string
	for _, e := range a.Errors {
		i := locate(b, e)
		if i < 0 {
			unnamed = append(unnamed, e.reason())
			continue
		}
		bad[i] = e.reason()
	}
	if len(unnamed) > 0 {
		f.log.WithFields(logrus.Fields{"endpoint": b.ep.name, "batch_id": b.id, "count": len(unnamed),
			"reason": strings.Join(unnamed, "; ")}).Error("server rejected records that cannot be identified")
	}
	var ok []item
	for i := range b.items {
		if reason, isBad := bad[i]; isBad {
			if err := f.reject(ctx, b, &b.items[i], a.status, reason); err != nil {
				return err
			}
			continue
		}
		ok = append(ok, b.items[i])
	}
	return f.accept(b, ok, "accepted")
}

// locate finds the item an error names: by recordIndex, else by alarmId,
// else by recordId. -1 when none.
func locate(b *batch, e apiError) int {
	if e.RecordIndex != nil && *e.RecordIndex >= 0 && *e.RecordIndex < len(b.items) {
		return *e.RecordIndex
	}
	want := []string{e.AlarmID, rawID(e.RecordID)}
	for i := range b.items {
		for _, id := range b.items[i].ids() {
			for _, w := range want {
				if w != "" && w == id {
					return i
				}
			}
		}
	}
	return -1
}

// splitOrReject handles 400 and 413: halves are sent one after the other
// (order kept) down to single records; a single record still refused is a
// dead letter.
func (f *Forwarder) splitOrReject(ctx context.Context, b *batch, a *answer) error {
	if len(b.items) == 1 {
		reason := a.reason()
		if a.status == 413 {
			reason = "413 request too large: " + reason
		}
		return f.reject(ctx, b, &b.items[0], a.status, reason)
	}
	f.log.WithFields(logrus.Fields{"endpoint": b.ep.name, "status": a.status, "batch_id": b.id,
		"count": len(b.items), "reason": a.reason()}).Debug("batch refused, splitting")
	x, y := b.split()
	if err := f.deliver(ctx, x); err != nil {
		return err
	}
	return f.deliver(ctx, y)
}

// unknownRef is an entity a 422 says the server does not know.
type unknownRef struct {
	kind EntityKind
	err  apiError
}

func unknownRefs(a *answer) []unknownRef {
	var out []unknownRef
	for _, e := range a.Errors {
		switch e.Error {
		case "UNKNOWN_THING":
			out = append(out, unknownRef{Thing, e})
		case "UNKNOWN_DATASTREAM":
			out = append(out, unknownRef{Datastream, e})
		}
	}
	return out
}

// recover422 posts the entities a 422 named and returns the batch to send
// again (nil when nothing is left). Records that refer to an entity the
// state store does not know, or that the server refused, or (giveUp) that
// the server still does not know after being posted, become dead letters.
func (f *Forwarder) recover422(ctx context.Context, b *batch, a *answer, unknown []unknownRef, giveUp bool) (*batch, error) {
	type target struct {
		kind     EntityKind
		sid      string
		affected []int
		e        apiError
	}
	drop := map[int]string{}
	var targets []target
	for _, u := range unknown {
		id := rawID(u.err.RecordID)
		var idx []int
		if i := u.err.RecordIndex; i != nil && *i >= 0 && *i < len(b.items) {
			idx = append(idx, *i)
			if id == "" {
				id = b.items[*i].ref()
			}
		}
		if id == "" && u.kind == Thing && !b.entBatch() {
			id = b.dev + "@" + b.cust // a batch's records are of one thing
		}
		sid, status, why, ok := f.state.resolveEntity(u.kind, id)
		key := id
		if ok {
			key = sid
		}
		for i := range b.items {
			if refersTo(&b.items[i], u.kind, key) && !contains(idx, i) {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			// The server named an entity no record here refers to:
			// every record waits on it.
			for i := range b.items {
				idx = append(idx, i)
			}
		}
		switch {
		case !ok:
			for _, i := range idx {
				drop[i] = fmt.Sprintf("%s: the server does not know %s %q and vigd has no definition of it (%s)",
					u.err.Error, u.kind, id, u.err.Message)
			}
		case status == statusRejected:
			// Posting it again would only be refused again.
			for _, i := range idx {
				drop[i] = fmt.Sprintf("%s %q was rejected by the server: %s", u.kind, sid, why)
			}
		case giveUp:
			for _, i := range idx {
				drop[i] = fmt.Sprintf("%s: the server still does not know %s %q after it was posted %d times (%s)",
					u.err.Error, u.kind, sid, max422Rounds, u.err.Message)
			}
		default:
			if _, err := f.state.MarkUnsent(u.kind, sid); err != nil {
				f.log.WithError(err).Warn("state write failed")
			}
			targets = append(targets, target{u.kind, sid, idx, u.err})
		}
	}
	if len(targets) > 0 {
		f.log.WithFields(logrus.Fields{"endpoint": b.ep.name, "batch_id": b.id, "count": len(targets),
			"reason": a.reason()}).Info("server lacks entities, posting them")
		var err error
		if b.entBatch() {
			// An entity batch only waits on things.
			err = f.syncKind(ctx, Thing)
		} else {
			err = f.syncEntities(ctx)
		}
		if err != nil {
			return nil, errStopped
		}
		for _, t := range targets {
			if _, status, reason, _ := f.state.resolveEntity(t.kind, t.sid); status == statusRejected {
				for _, i := range t.affected {
					drop[i] = fmt.Sprintf("%s %q was rejected by the server: %s", t.kind, t.sid, reason)
				}
			}
		}
	}
	if len(drop) == 0 {
		return b, nil
	}
	dropSet := map[int]bool{}
	for i, reason := range drop {
		if err := f.reject(ctx, b, &b.items[i], a.status, reason); err != nil {
			return nil, err
		}
		dropSet[i] = true
	}
	if len(dropSet) == len(b.items) {
		return nil, nil
	}
	return b.without(dropSet), nil
}

// entBatch reports whether b is an entity batch.
func (b *batch) entBatch() bool { return len(b.items) > 0 && b.items[0].ent != nil }

// refersTo reports whether an item depends on the entity: its reference is
// the entity, or (for a thing) its reference is one of the thing's
// datastreams, or it is a record of the thing's device.
func refersTo(it *item, k EntityKind, sid string) bool {
	if sid == "" {
		return false
	}
	ref := it.ref()
	if ref == sid {
		return true
	}
	if k == Thing {
		if strings.HasSuffix(ref, "@"+sid) {
			return true
		}
		if it.entry != nil && it.entry.Rec.DeviceID+"@"+it.entry.Rec.CustomerID == sid {
			return true
		}
	}
	return false
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
