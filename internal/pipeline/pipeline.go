// Package pipeline is the middle of vigd: it implements adapters.Sink. For
// each frame it picks the decoder, resolves the device, decodes, records
// thing and datastream definitions in the forwarder's state store, appends
// observations and alarms to the durable queues, and only then returns — so
// an adapter's acknowledgement always follows durability. A frame that
// cannot be decoded is kept in the dead-letter store (and archived raw),
// never dropped.
package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/decoders/sta"
	"github.com/vigd/vigd/devices"
	"github.com/vigd/vigd/forwarder"
	"github.com/vigd/vigd/forwarder/deadletter"
	"github.com/vigd/vigd/forwarder/queue"
)

var (
	framesIn = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_pipeline_frames_total",
		Help: "Frames handed to the pipeline, by adapter and result (decoded, deadlettered, failed).",
	}, []string{"adapter", "result"})
	decodedBy = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_decoder_frames_total",
		Help: "Frames per decoder and result (ok, error).",
	}, []string{"decoder", "result"})
	skipped = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_decoder_values_skipped_total",
		Help: "Values or rows a decoder left out of a frame (missing values, bad rows), by decoder.",
	}, []string{"decoder"})
	decoderPanics = promauto.NewCounter(prometheus.CounterOpts{
		Name: "vigd_decoder_panics_total",
		Help: "Decoder panics caught (the frame went to the dead letters); each one is a bug to report.",
	})
	recordsOut = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_pipeline_records_total",
		Help: "Records queued by the pipeline, by kind.",
	}, []string{"kind"})
)

// alarmBucket is the state-store bucket holding alarm states.
const alarmBucket = "alarms"

// Options wires a Pipeline.
type Options struct {
	Data, Alarms queue.Queue
	State        *forwarder.State
	DeadLetters  *deadletter.Store
	// RawFrames: "all", "undecoded" or "none" (see config).
	RawFrames  string
	DeviceType string
	// UnknownDevices: "accept" or "deadletter".
	UnknownDevices   string
	DeviceIDTemplate string
	Log              *logrus.Entry
}

// Pipeline implements adapters.Sink. Safe for concurrent use.
type Pipeline struct {
	o        Options
	decoders atomic.Pointer[decoders.Set]
	devices  atomic.Pointer[devices.Registry]

	alarmMu sync.Mutex
	alarms  map[string]bool

	okCounters sync.Map // decoder name → its "ok" counter

	entMu    sync.Mutex
	entities map[string]string // sensusID → definition hash already stored
	stored   map[string]any    // sensusID → the decoder's entity value stored last (by address)

	// Frames of one source are decoded one at a time, so that alarm
	// raise/clear decisions see the previous frame's outcome.
	seed  maphash.Seed
	locks [64]sync.Mutex
}

// New builds a pipeline and loads the remembered alarm states.
func New(o Options, set *decoders.Set, reg *devices.Registry) (*Pipeline, error) {
	if reg == nil {
		reg = devices.Empty()
	}
	p := &Pipeline{o: o, alarms: map[string]bool{}, entities: map[string]string{}, stored: map[string]any{}, seed: maphash.MakeSeed()}
	p.decoders.Store(set)
	p.devices.Store(reg)
	if o.State != nil {
		err := o.State.ForEach(alarmBucket, func(k string, v []byte) error {
			p.alarms[k] = string(v) == "1"
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("load alarm states: %w", err)
		}
	}
	return p, nil
}

// SetDecoders swaps in a new decoder set (reload). Frames in flight finish
// with the set they started with.
func (p *Pipeline) SetDecoders(s *decoders.Set) { p.decoders.Store(s) }

// Decoders is the set in use.
func (p *Pipeline) Decoders() *decoders.Set { return p.decoders.Load() }

// SetDevices swaps in a new device registry (reload).
func (p *Pipeline) SetDevices(r *devices.Registry) { p.devices.Store(r) }

// For returns the sink one adapter gets: frames that do not name a decoder
// or customer take the adapter's. It is an adapters.BatchSink.
func (p *Pipeline) For(adapterName, kind, decoder, customerID string) adapters.Sink {
	return &adapterSink{p: p, adapter: adapterName, kind: kind, decoder: decoder, customer: customerID}
}

// adapterSink is the sink of one adapter.
type adapterSink struct {
	p                                *Pipeline
	adapter, kind, decoder, customer string
}

func (s *adapterSink) fill(f *adapters.Frame) {
	if f.Adapter == "" {
		f.Adapter = s.adapter
	}
	if f.Kind == "" {
		f.Kind = s.kind
	}
	if f.Decoder == "" {
		f.Decoder = s.decoder
	}
	if f.CustomerID == "" {
		f.CustomerID = s.customer
	}
}

// Emit implements adapters.Sink.
func (s *adapterSink) Emit(ctx context.Context, f *adapters.Frame) error {
	s.fill(f)
	return s.p.Emit(ctx, f)
}

// EmitBatch implements adapters.BatchSink.
func (s *adapterSink) EmitBatch(ctx context.Context, frames []*adapters.Frame, errs []error) {
	for _, f := range frames {
		s.fill(f)
	}
	s.p.EmitBatch(ctx, frames, errs)
}

// Emit implements adapters.Sink.
func (p *Pipeline) Emit(ctx context.Context, f *adapters.Frame) error {
	var errs [1]error
	p.emit(ctx, []*adapters.Frame{f}, errs[:], false)
	return errs[0]
}

// EmitBatch implements adapters.BatchSink: every frame is decoded in
// order, and the records of all that decode are queued with one append per
// queue (one fsync for the lot).
func (p *Pipeline) EmitBatch(ctx context.Context, frames []*adapters.Frame, errs []error) {
	p.emit(ctx, frames, errs, false)
}

// decoded is a frame whose records are ready to be stored.
type decoded struct {
	f   *adapters.Frame
	res *decoders.Result
	i   int // index in the batch
}

// emit decodes frames and stores their records; errs[i] is frames[i]'s
// result. replay is set for a dead letter processed again, whose raw copy
// was archived the first time.
func (p *Pipeline) emit(ctx context.Context, frames []*adapters.Frame, errs []error, replay bool) {
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return
	}
	// Frames of one source are decoded one at a time (alarm decisions see
	// the previous frame's outcome). A batch holds the locks of all its
	// sources, taken in index order so that two batches cannot deadlock.
	var held [len(p.locks)]bool
	for _, f := range frames {
		if f.Received.IsZero() {
			f.Received = time.Now().UTC()
		}
		held[maphash.String(p.seed, f.Adapter+"\x00"+f.Source+"\x00"+f.Identity)%uint64(len(p.locks))] = true
	}
	for i := range held {
		if held[i] {
			p.locks[i].Lock()
		}
	}
	defer func() {
		for i := range held {
			if held[i] {
				p.locks[i].Unlock()
			}
		}
	}()

	set := p.decoders.Load()
	alarms := p.alarmSnapshot()
	// Decoded frames are stored maxDecoded at a time: a decoded frame
	// (records, entities, parameter maps) weighs a few KB where its line
	// weighed tens of bytes, and every connection of a busy listener hands
	// over a thousand lines at once. A store that fails fails the frames
	// after it too: none may be queued behind one that is not.
	ok := make([]decoded, 0, min(len(frames), maxDecoded))
	for i := 0; i < len(frames); {
		ok = ok[:0]
		for ; i < len(frames) && len(ok) < maxDecoded; i++ {
			f := frames[i]
			res, err := p.decode(ctx, set, f, alarms, replay)
			if err != nil {
				errs[i] = err
				continue
			}
			// Later frames of the batch see this frame's alarm changes, as
			// they would had they come one by one.
			for k, v := range res.AlarmChanges {
				alarms[k] = v
			}
			ok = append(ok, decoded{f: f, res: res, i: i})
		}
		if len(ok) == 0 {
			continue
		}
		err := p.store(ctx, ok)
		result := "decoded"
		if err != nil {
			result = "failed"
		}
		adapter, n := "", 0
		for _, d := range ok {
			errs[d.i] = err
			if d.f.Adapter != adapter {
				if n > 0 {
					framesIn.WithLabelValues(adapter, result).Add(float64(n))
				}
				adapter, n = d.f.Adapter, 0
			}
			n++
		}
		if n > 0 {
			framesIn.WithLabelValues(adapter, result).Add(float64(n))
		}
		if err != nil {
			for ; i < len(frames); i++ {
				errs[i] = err
			}
		}
		clear(ok) // let the stored results go
	}
}

// maxDecoded bounds the decoded frames of one batch held before their
// records are stored.
const maxDecoded = 64

// decode decodes one frame; a frame that cannot be decoded is
// dead-lettered (a *RejectedError when that worked).
func (p *Pipeline) decode(ctx context.Context, set *decoders.Set, f *adapters.Frame, alarms map[string]bool, replay bool) (*decoders.Result, error) {
	// An adapter that could not parse its transport's envelope (a broken
	// DirectIP message, an SBD mail without fields) still hands the bytes
	// over, marked, so that they are kept: they go to the dead letters.
	if pe := f.Meta["parse_error"]; pe != "" {
		return nil, p.reject(ctx, f, f.Kind+" message could not be parsed: "+pe, nil, replay)
	}
	dec, ok := set.Get(f.Decoder)
	if !ok {
		reason := fmt.Sprintf("no decoder named %q", f.Decoder)
		if f.Decoder == "" {
			reason = "no decoder configured for adapter " + f.Adapter
		}
		return nil, p.reject(ctx, f, reason, nil, replay)
	}
	res, err := safeDecode(dec, f, decoders.Env{
		Lookup:          p.lookup,
		DefaultCustomer: f.CustomerID,
		Alarms:          alarms,
	})
	if err != nil {
		decodedBy.WithLabelValues(dec.Name(), "error").Inc()
		return nil, p.reject(ctx, f, err.Error(), err, replay)
	}
	p.decodedOK(dec.Name()).Inc()
	if why := badID(res.Device.ID); why != "" {
		return nil, p.reject(ctx, f, fmt.Sprintf("device id %q %s", res.Device.ID, why), nil, replay)
	}
	if why := badID(res.Device.CustomerID); why != "" {
		return nil, p.reject(ctx, f, fmt.Sprintf("customer id %q %s", res.Device.CustomerID, why), nil, replay)
	}
	if len(res.Skipped) > 0 {
		skipped.WithLabelValues(dec.Name()).Add(float64(len(res.Skipped)))
		p.o.Log.WithFields(logrus.Fields{"source": f.Where(), "decoder": dec.Name(), "count": len(res.Skipped), "first": res.Skipped[0]}).Debug("values left out")
	}
	if len(res.Observations) == 0 && len(res.Alarms) == 0 {
		// Things and datastreams alone carry no data: a frame that gave
		// nothing else must not vanish.
		reason := fmt.Sprintf("decoder %s produced no observations", dec.Name())
		if len(res.Skipped) > 0 {
			reason += ": " + strings.Join(res.Skipped, "; ")
		}
		return nil, p.reject(ctx, f, reason, nil, replay)
	}
	return res, nil
}

// slabs hold a batch's encoded observations until they are queued.
var slabs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledSlab bounds the buffers kept for reuse (a 1024-line batch of
// three observations is about 600 KB).
const maxPooledSlab = 1 << 20

// decodedOK is vigd_decoder_frames_total{decoder, ok}, looked up once per
// decoder rather than per frame.
func (p *Pipeline) decodedOK(name string) prometheus.Counter {
	if c, ok := p.okCounters.Load(name); ok {
		return c.(prometheus.Counter)
	}
	c := decodedBy.WithLabelValues(name, "ok")
	p.okCounters.Store(name, c)
	return c
}

// lookup resolves an identity through the registry, or (policy accept)
// makes a device of it.
func (p *Pipeline) lookup(identity string) (decoders.Device, bool) {
	reg := p.devices.Load()
	if d, ok := reg.Lookup(identity); ok {
		return decoders.Device{ID: d.DeviceID, CustomerID: d.CustomerID, Name: d.Name, Description: d.Description, Properties: d.Properties}, true
	}
	if p.o.UnknownDevices == "deadletter" || identity == "" {
		return decoders.Device{}, false
	}
	tmpl := p.o.DeviceIDTemplate
	if tmpl == "" {
		tmpl = "{identity}"
	}
	return decoders.Device{ID: strings.ReplaceAll(tmpl, "{identity}", identity), CustomerID: reg.DefaultCustomer()}, true
}

func (p *Pipeline) alarmSnapshot() map[string]bool {
	p.alarmMu.Lock()
	defer p.alarmMu.Unlock()
	m := make(map[string]bool, len(p.alarms))
	for k, v := range p.alarms {
		m[k] = v
	}
	return m
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:12])
}

// store records the entities of every frame, then appends all their
// records (one append per queue); it returns nil only when all of it is on
// disk.
func (p *Pipeline) store(ctx context.Context, batch []decoded) error {
	if err := p.storeEntities(batch); err != nil {
		return err
	}
	var alarmRecs, recs []queue.Record
	nObs, nRaw := 0, 0
	for _, d := range batch {
		nObs += len(d.res.Observations)
	}
	// The batch's observation bodies, back to back in one buffer, reused
	// once the append returned: both queues copy what they are given (Disk
	// encodes it, Memory clones it) and keep no reference.
	sp := slabs.Get().(*[]byte)
	slab := (*sp)[:0]
	if cap(slab) < nObs*256 {
		slab = make([]byte, 0, nObs*256)
	}
	defer func() {
		if cap(slab) <= maxPooledSlab {
			*sp = slab[:0]
			slabs.Put(sp)
		}
	}()
	nObs = 0
	for _, d := range batch {
		res := d.res
		dev := res.Device
		thingRef := dev.ID + "@" + dev.CustomerID
		for _, a := range res.Alarms {
			body, err := json.Marshal(a)
			if err != nil {
				return err
			}
			alarmRecs = append(alarmRecs, queue.Record{Kind: queue.Alarm, DeviceID: dev.ID, CustomerID: dev.CustomerID, Ref: thingRef, Body: body})
		}
		if recs == nil {
			recs = make([]queue.Record, 0, len(batch)*(len(res.Observations)+1))
		}
		for i := range res.Observations {
			o := &res.Observations[i]
			start := len(slab)
			var err error
			if slab, err = appendObservation(slab, o); err != nil {
				return err
			}
			recs = append(recs, queue.Record{Kind: queue.Observation, DeviceID: dev.ID, CustomerID: dev.CustomerID, Ref: o.Datastream.SensusID,
				Body: slab[start:len(slab):len(slab)]})
		}
		nObs += len(res.Observations)
		if p.o.RawFrames == "all" {
			raw, err := p.rawRecord(d.f, dev.ID, dev.CustomerID)
			if err != nil {
				return err
			}
			recs = append(recs, raw)
			nRaw++
		}
	}
	if len(alarmRecs) > 0 {
		if err := p.o.Alarms.Append(ctx, alarmRecs...); err != nil {
			return fmt.Errorf("queue alarms: %w", err)
		}
		recordsOut.WithLabelValues("alarm").Add(float64(len(alarmRecs)))
	}
	if len(recs) > 0 {
		if err := p.o.Data.Append(ctx, recs...); err != nil {
			return fmt.Errorf("queue observations: %w", err)
		}
		recordsOut.WithLabelValues("observation").Add(float64(nObs))
		if nRaw > 0 {
			recordsOut.WithLabelValues("raw").Add(float64(nRaw))
		}
	}
	p.alarmMu.Lock()
	defer p.alarmMu.Unlock()
	for _, d := range batch {
		for k, v := range d.res.AlarmChanges {
			val := "0"
			if v {
				val = "1"
			}
			// The records are already queued: a crash before this write
			// re-raises the same alarm (same alarmId), which the server
			// takes as the same alarm. Losing it would be worse.
			if err := p.o.State.Put(alarmBucket, k, []byte(val)); err != nil {
				p.o.Log.WithError(err).WithField("alarm", k).Error("cannot save alarm state")
			}
			p.alarms[k] = v
		}
	}
	return nil
}

// storeEntities records the batch's things and datastreams in the state
// store, those that changed with one write. A decoder hands out the same
// entities for every frame of a device when only the device shapes them:
// those are recognised by address and cost nothing.
func (p *Pipeline) storeEntities(batch []decoded) error {
	type pending struct {
		key, hash string
		ent       any
	}
	var (
		ups  []forwarder.Upsert
		done []pending
		seen map[string]bool
	)
	add := func(kind forwarder.EntityKind, sid, thing string, ent, v any) error {
		if p.sameEntity(sid, ent) || seen[sid] {
			return nil
		}
		body, err := json.Marshal(v)
		if err != nil {
			return err
		}
		h := hashOf(body)
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[sid] = true
		done = append(done, pending{sid, h, ent})
		p.entMu.Lock()
		same := p.entities[sid] == h
		p.entMu.Unlock()
		if !same {
			ups = append(ups, forwarder.Upsert{Kind: kind, SensusID: sid, Thing: thing, Body: body})
		}
		return nil
	}
	for _, d := range batch {
		for i := range d.res.Things {
			th := &d.res.Things[i]
			if err := add(forwarder.Thing, th.SensusID, "", th, th); err != nil {
				return err
			}
		}
	}
	for _, d := range batch {
		for i := range d.res.Datastreams {
			ds := &d.res.Datastreams[i]
			if err := add(forwarder.Datastream, ds.SensusID, ds.Thing.SensusID, ds, ds); err != nil {
				return err
			}
		}
	}
	if len(ups) > 0 {
		if _, err := p.o.State.UpsertAll(ups); err != nil {
			return fmt.Errorf("store entities: %w", err)
		}
	}
	p.entMu.Lock()
	for _, e := range done {
		p.entities[e.key] = e.hash
		p.stored[e.key] = e.ent
	}
	p.entMu.Unlock()
	return nil
}

// sameEntity reports whether ent (a *sta.Thing or *sta.Datastream) is the
// very value stored last under key.
func (p *Pipeline) sameEntity(key string, ent any) bool {
	p.entMu.Lock()
	defer p.entMu.Unlock()
	return p.stored[key] == ent
}

func (p *Pipeline) rawRecord(f *adapters.Frame, deviceID, customerID string) (queue.Record, error) {
	if deviceID == "" {
		deviceID = f.Identity
	}
	if deviceID == "" {
		deviceID = "unknown"
	}
	if customerID == "" {
		customerID = f.CustomerID
	}
	meta := map[string]string{"source": strings.ToUpper(f.Kind), "adapter": f.Adapter, "from": f.Source}
	for k, v := range f.Meta {
		meta[k] = v
	}
	body, err := json.Marshal(sta.Raw{
		DeviceID:      deviceID,
		CustomerID:    customerID,
		TransportType: strings.ToUpper(f.Kind),
		DataType:      "SENSOR_DATA",
		DeviceType:    p.o.DeviceType,
		Payload:       hex.EncodeToString(f.Payload),
		Timestamp:     f.Received.UTC().Format(time.RFC3339),
		Metadata:      meta,
	})
	if err != nil {
		return queue.Record{}, err
	}
	return queue.Record{Kind: queue.Raw, DeviceID: deviceID, CustomerID: customerID, Ref: deviceID + "@" + customerID, Body: body}, nil
}

// reject keeps the frame in the dead-letter store (and archives it raw
// unless raw_frames is none). It returns a *RejectedError when both are on
// disk, so the adapter may acknowledge.
func (p *Pipeline) reject(ctx context.Context, f *adapters.Frame, reason string, cause error, replay bool) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if _, err := p.o.DeadLetters.Put(deadletter.Entry{
		Class:  deadletter.ClassFrame,
		Reason: reason,
		Where:  f.Where(),
		Data:   data,
	}); err != nil {
		framesIn.WithLabelValues(f.Adapter, "failed").Inc()
		return fmt.Errorf("dead-letter frame from %s: %w", f.Where(), err)
	}
	if p.o.RawFrames != "none" && !replay {
		raw, err := p.rawRecord(f, "", "")
		if err == nil {
			err = p.o.Data.Append(ctx, raw)
		}
		if err != nil {
			// The frame itself is safe in dead letters; the raw archive
			// copy is best effort here.
			p.o.Log.WithError(err).WithField("source", f.Where()).Warn("cannot queue raw copy of rejected frame")
		}
	}
	framesIn.WithLabelValues(f.Adapter, "deadlettered").Inc()
	p.o.Log.WithFields(logrus.Fields{"source": f.Where(), "decoder": f.Decoder, "reason": reason}).Debug("frame dead-lettered")
	return &adapters.RejectedError{Reason: reason, Err: cause}
}

// Replay re-decodes a dead-lettered frame with the decoders as they are now.
func (p *Pipeline) Replay(ctx context.Context, data []byte) error {
	var f adapters.Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("dead letter is not a frame: %w", err)
	}
	var errs [1]error
	p.emit(ctx, []*adapters.Frame{&f}, errs[:], true)
	return errs[0]
}

var (
	_ adapters.Sink      = (*Pipeline)(nil)
	_ adapters.BatchSink = (*Pipeline)(nil)
	_ adapters.BatchSink = (*adapterSink)(nil)
)

// badID says why an id cannot name a thing upstream: it becomes part of
// sensusIDs ("{deviceId}@{customerId}"), URLs and file names on the other
// side, so control characters, invalid UTF-8, '@' and very long ids are
// refused (the frame goes to the dead letters) rather than sent.
func badID(id string) string {
	switch {
	case id == "":
		return "is empty"
	case len(id) > 128:
		return "is longer than 128 bytes"
	case !utf8.ValidString(id):
		return "is not valid UTF-8"
	case strings.ContainsRune(id, '@'):
		return "contains '@' (the sensusID separator)"
	}
	for _, r := range id {
		if unicode.IsControl(r) || unicode.IsSpace(r) && r != ' ' {
			return "contains control characters"
		}
	}
	if strings.TrimSpace(id) != id {
		return "starts or ends with a space"
	}
	return ""
}

// safeDecode runs a decoder and turns a panic — a bug in the engine or a
// library it uses, met by some hostile frame — into a decode error, so the
// frame goes to the dead letters with the reason and the daemon (whose
// adapter goroutine called Emit) keeps running.
func safeDecode(dec *decoders.Decoder, f *adapters.Frame, env decoders.Env) (res *decoders.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			decoderPanics.Inc()
			res, err = nil, fmt.Errorf("decoder %s failed on this frame (internal error, please report it with the frame): %v", dec.Name(), r)
		}
	}()
	return dec.Decode(f, env)
}
