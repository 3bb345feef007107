package sim

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/forwarder/signer"
)

// reply is one answer before it is written.
type reply struct {
	status     int
	body       any    // encoded as JSON
	raw        []byte // sent as is instead of body (injected faults)
	retryAfter string
	closeConn  bool
	code       string // error code for the request log
	fault      string
	accepted   int
	rejected   int
}

// ErrorBody is the JSON of every 4xx/5xx answer the simulator makes itself.
type ErrorBody struct {
	Status    string        `json:"status"` // REJECTED (4xx) or ERROR (5xx)
	Error     string        `json:"error"`  // an ErrCode* value
	Message   string        `json:"message"`
	BatchID   string        `json:"batchId,omitempty"`
	Errors    []RecordError `json:"errors,omitempty"`
	Timestamp string        `json:"timestamp"`
}

// BatchResult is the JSON of 201 (alarms) and 202 (partial) answers.
type BatchResult struct {
	BatchID          string        `json:"batchId,omitempty"`
	Status           string        `json:"status"` // PROCESSED or PARTIALLY_PROCESSED
	RecordsProcessed int           `json:"recordsProcessed"`
	RecordsAccepted  int           `json:"recordsAccepted"`
	RecordsRejected  int           `json:"recordsRejected"`
	ProcessedAt      string        `json:"processedAt"`
	Errors           []RecordError `json:"errors,omitempty"`
}

func (s *Server) stamp() string { return s.cfg.Now().UTC().Format(time.RFC3339) }

func (s *Server) fail(status int, code, msg string) reply {
	st := "REJECTED"
	if status >= 500 {
		st = "ERROR"
	}
	return reply{status: status, code: code,
		body: ErrorBody{Status: st, Error: code, Message: msg, Timestamp: s.stamp()}}
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	kind := pathKinds[r.URL.Path]
	le := RequestLog{
		Time:     s.cfg.Now().UTC().Format(TimeFormat),
		Method:   r.Method,
		Path:     r.URL.RequestURI(),
		Endpoint: kind,
		Gzip:     r.Header.Get("Content-Encoding") == "gzip",
	}
	rep := s.handle(r, kind, &le)
	le.Error, le.Fault, le.RetryAfter = rep.code, rep.fault, rep.retryAfter
	le.Accepted, le.Rejected = rep.accepted, rep.rejected
	if rep.closeConn {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		} else {
			rep.closeConn = false
			rep = s.fail(http.StatusServiceUnavailable, ErrCodeUnavailable, "simulator is down")
		}
	}
	if !rep.closeConn {
		le.Status = rep.status
		if rep.retryAfter != "" {
			w.Header().Set("Retry-After", rep.retryAfter)
		}
		b := rep.raw
		if b == nil {
			b, _ = json.Marshal(rep.body)
		}
		if json.Valid(b) {
			w.Header().Set("Content-Type", "application/json")
		} else {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		w.WriteHeader(rep.status)
		_, _ = w.Write(b)
	}
	le.DurationMS = time.Since(start).Milliseconds()
	s.stats.record(le)
	s.log.WithFields(logrus.Fields{"endpoint": kind, "path": le.Path, "status": le.Status,
		"batch_id": le.BatchID, "count": le.Records, "service": le.ServiceID, "error": le.Error}).Debug("request")
}

// handle runs the checks in the order a real server would: faults, route,
// signature, rate, body (size, MD5, encoding, JSON), count, duplicates,
// integrity, records.
func (s *Server) handle(r *http.Request, kind string, le *RequestLog) reply {
	rf := s.faults.onRequest(kind)
	if rf.latency > 0 && !rf.down {
		t := time.NewTimer(rf.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	if a := rf.answer; a != nil {
		rep := reply{fault: a.Kind, retryAfter: a.RetryAfter, code: ErrCodeInjected}
		switch {
		case a.Mode == "close":
			rep.closeConn = true
		case a.Kind == FaultDown:
			rep.status, rep.code = http.StatusServiceUnavailable, ErrCodeUnavailable
			rep.body = ErrorBody{Status: "ERROR", Error: ErrCodeUnavailable, Message: "simulator is down", Timestamp: s.stamp()}
		default:
			rep.status = a.Status
			if a.Body != "" {
				rep.raw = []byte(a.Body)
			} else {
				st := "REJECTED"
				if a.Status >= 500 {
					st = "ERROR"
				}
				rep.body = ErrorBody{Status: st, Error: ErrCodeInjected, Message: "injected fault", Timestamp: s.stamp()}
			}
		}
		return rep
	}
	if kind == "" {
		return s.fail(http.StatusNotFound, ErrCodeNotFound, "no endpoint at "+r.URL.Path)
	}
	if r.Method != http.MethodPost {
		return s.fail(http.StatusMethodNotAllowed, ErrCodeMethod, "use POST")
	}
	svc, err := s.verifier.VerifyRequest(r)
	le.ServiceID = svc
	if err != nil {
		code := ErrCodeMalformedAuth
		switch {
		case errors.Is(err, signer.ErrBadSignature):
			code = ErrCodeBadSignature
		case errors.Is(err, signer.ErrUnknownService):
			code = ErrCodeUnknownService
		case errors.Is(err, signer.ErrStaleDate):
			code = ErrCodeStaleDate
		}
		return s.fail(http.StatusUnauthorized, code, err.Error())
	}
	if ok, wait := s.allow(svc); !ok {
		rep := s.fail(http.StatusTooManyRequests, ErrCodeRateLimited,
			fmt.Sprintf("more than %g requests a second for service %q", s.cfg.Rate, svc))
		rep.retryAfter = strconv.Itoa(int(math.Max(1, math.Ceil(wait.Seconds()))))
		return rep
	}
	wire, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBytes+1))
	if err != nil {
		return s.fail(http.StatusBadRequest, ErrCodeInvalidJSON, "reading body: "+err.Error())
	}
	if int64(len(wire)) > s.cfg.MaxBytes {
		return s.fail(http.StatusRequestEntityTooLarge, ErrCodeTooLarge,
			fmt.Sprintf("body over %d bytes", s.cfg.MaxBytes))
	}
	got := r.Header.Get("Content-MD5")
	if got == "" {
		return s.fail(http.StatusBadRequest, ErrCodeMD5Mismatch, "Content-MD5 header missing")
	}
	if want := signer.BodyMD5(wire); got != want {
		return s.fail(http.StatusBadRequest, ErrCodeMD5Mismatch,
			fmt.Sprintf("Content-MD5 %q does not match the body (%q)", got, want))
	}
	body := wire
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(wire))
		if err != nil {
			return s.fail(http.StatusBadRequest, ErrCodeEncoding, "gzip: "+err.Error())
		}
		body, err = io.ReadAll(io.LimitReader(zr, s.cfg.MaxBytes+1))
		if err != nil {
			return s.fail(http.StatusBadRequest, ErrCodeEncoding, "gzip: "+err.Error())
		}
		if int64(len(body)) > s.cfg.MaxBytes {
			return s.fail(http.StatusRequestEntityTooLarge, ErrCodeTooLarge,
				fmt.Sprintf("body over %d bytes before compression", s.cfg.MaxBytes))
		}
	default:
		return s.fail(http.StatusBadRequest, ErrCodeEncoding, "Content-Encoding "+strconv.Quote(enc)+" not supported")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return s.fail(http.StatusBadRequest, ErrCodeContentType, "Content-Type must be application/json")
	}
	b, rep := s.parse(kind, body)
	if b == nil {
		return rep
	}
	le.BatchID, le.Records = b.batchID, len(b.list)
	if len(b.list) > s.cfg.MaxRecords {
		rep := s.fail(http.StatusRequestEntityTooLarge, ErrCodeTooManyRecords,
			fmt.Sprintf("%d records, at most %d per request", len(b.list), s.cfg.MaxRecords))
		return rep
	}
	return s.process(kind, svc, b)
}

// batch is a parsed request body.
type batch struct {
	batchID, deviceID, customerID string
	list                          []json.RawMessage
}

// parse checks the top-level shape; a wrong one is a 400 for the whole body.
func (s *Server) parse(kind string, body []byte) (*batch, reply) {
	bad := func(format string, a ...any) (*batch, reply) {
		return nil, s.fail(http.StatusBadRequest, ErrCodeValidation, fmt.Sprintf(format, a...))
	}
	if !json.Valid(body) {
		return nil, s.fail(http.StatusBadRequest, ErrCodeInvalidJSON, "body is not valid JSON")
	}
	top, err := decodeObject(body)
	if err != nil {
		return bad("body must be a JSON object")
	}
	b := &batch{}
	if b.batchID, err = str(top, "batchId", false); err != nil {
		return bad("%v", err)
	}
	if kind == Raw {
		b.list = []json.RawMessage{body}
		return b, reply{}
	}
	var rawTop map[string]json.RawMessage
	_ = json.Unmarshal(body, &rawTop)
	lr, ok := rawTop[kind]
	if !ok {
		return bad("%s: required", kind)
	}
	if err := json.Unmarshal(lr, &b.list); err != nil || b.list == nil {
		return bad("%s: must be an array", kind)
	}
	if len(b.list) == 0 {
		return bad("%s: empty", kind)
	}
	switch kind {
	case Observations, Alarms:
		if b.deviceID, err = str(top, "deviceId", true); err != nil {
			return bad("%v", err)
		}
		if b.customerID, err = str(top, "customerId", true); err != nil {
			return bad("%v", err)
		}
	}
	switch kind {
	case Observations:
		bt, err := str(top, "batchType", true)
		if err != nil {
			return bad("%v", err)
		}
		if bt != "OBSERVATIONS" {
			return bad("batchType: %q: must be OBSERVATIONS", bt)
		}
	case Alarms:
		if b.batchID == "" {
			return bad("batchId: required")
		}
		if err := timeField(top, "timestamp", true); err != nil {
			return bad("%v", err)
		}
	}
	return b, reply{}
}

// item is one record that passed validation.
type item struct {
	idx   int
	raw   []byte
	thing thingIn
	ds    dsIn
	obs   obsIn
	alarm string
	rawr  rawIn
}

// process validates records, checks references and stores what is accepted,
// all under the store lock so that dedupe and integrity see one state.
func (s *Server) process(kind, svc string, b *batch) reply {
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.files == nil {
		return s.fail(http.StatusServiceUnavailable, ErrCodeUnavailable, "simulator is stopping")
	}
	if st.duplicate(kind, b.batchID) {
		rep := s.fail(http.StatusConflict, ErrCodeDuplicate, "batch "+strconv.Quote(b.batchID)+" was already received")
		rep.body = withBatch(rep.body, b.batchID)
		return rep
	}
	now := s.cfg.Now().UTC()
	var errs []RecordError
	recErr := func(id string, i int, code, msg string) {
		errs = append(errs, RecordError{RecordID: id, RecordIndex: i, Error: code, Message: msg})
	}
	var items []item
	for i, raw := range b.list {
		o, err := decodeObject(raw)
		if err != nil {
			recErr("", i, ErrCodeValidation, err.Error())
			continue
		}
		if rule := s.faults.rejectRule(kind, o); rule != nil {
			if rule.Action == "batch" {
				rep := s.fail(http.StatusBadRequest, ErrCodeValidation, rule.Message)
				rep.fault = FaultReject
				eb := rep.body.(ErrorBody)
				eb.BatchID = b.batchID
				eb.Errors = []RecordError{{RecordID: recordID(kind, o), RecordIndex: i, Error: ErrCodeValidation, Message: rule.Message}}
				rep.body = eb
				return rep
			}
			recErr(recordID(kind, o), i, ErrCodeValidation, rule.Message)
			continue
		}
		it := item{idx: i, raw: raw}
		switch kind {
		case Things:
			it.thing, err = checkThing(o)
		case Datastreams:
			it.ds, err = checkDatastream(o)
		case Observations:
			it.obs, err = checkObservation(o)
		case Alarms:
			it.alarm, err = checkAlarm(o)
		case Raw:
			it.rawr, err = checkRaw(o)
		}
		if err != nil {
			if kind == Raw {
				rep := s.fail(http.StatusBadRequest, ErrCodeValidation, err.Error())
				return rep
			}
			recErr(recordID(kind, o), i, ErrCodeValidation, err.Error())
			continue
		}
		items = append(items, it)
	}

	// Integrity: any unknown reference refuses the whole request.
	var unknown []RecordError
	unknownCode := ErrCodeUnknownThing
	switch kind {
	case Datastreams:
		for _, it := range items {
			if st.things.resolve(it.ds.thing.id, it.ds.thing.sensusID) == nil {
				unknown = append(unknown, RecordError{RecordID: it.ds.thing.String(), RecordIndex: it.idx,
					Error: ErrCodeUnknownThing, Message: "thing " + it.ds.thing.String() + " is unknown"})
			}
		}
	case Observations:
		unknownCode = ErrCodeUnknownDS
		for _, it := range items {
			if st.datastreams.resolve(it.obs.ds.id, it.obs.ds.sensusID) == nil {
				unknown = append(unknown, RecordError{RecordID: it.obs.ds.String(), RecordIndex: it.idx,
					Error: ErrCodeUnknownDS, Message: "datastream " + it.obs.ds.String() + " is unknown"})
			}
		}
	case Alarms:
		thing := b.deviceID + "@" + b.customerID
		if st.things.resolve(0, thing) == nil {
			for i := range b.list {
				unknown = append(unknown, RecordError{RecordID: thing, RecordIndex: i,
					Error: ErrCodeUnknownThing, Message: "thing " + thing + " is unknown"})
			}
		}
	}
	if len(unknown) > 0 {
		rep := s.fail(http.StatusUnprocessableEntity, unknownCode,
			fmt.Sprintf("%d references to unknown entities; nothing stored", len(unknown)))
		eb := rep.body.(ErrorBody)
		eb.BatchID, eb.Errors = b.batchID, unknown
		rep.body = eb
		return rep
	}

	// Apply: checks that need the resolved entities, then upserts.
	recs := make([]Record, 0, len(items))
	for _, it := range items {
		rec := Record{Kind: kind, BatchID: b.batchID, DeviceID: b.deviceID, CustomerID: b.customerID,
			ServiceID: svc, ReceivedAt: now, RecordIndex: it.idx, Record: it.raw}
		switch kind {
		case Things:
			t := it.thing
			if owner := st.things.byID[t.id]; t.id != 0 && owner != nil && owner.SensusID != t.sensusID {
				recErr(t.sensusID, it.idx, ErrCodeValidation,
					fmt.Sprintf("@iot.id %d belongs to thing %s", t.id, owner.SensusID))
				continue
			}
			e := st.things.upsert(entity{SensusID: t.sensusID, IotID: t.id, DeviceID: t.deviceID, CustomerID: t.customerID})
			rec.DeviceID, rec.CustomerID, rec.SensusID, rec.IotID = t.deviceID, t.customerID, t.sensusID, e.IotID
		case Datastreams:
			d := it.ds
			th := st.things.resolve(d.thing.id, d.thing.sensusID)
			if want := d.deviceID + "@" + d.customerID; th.SensusID != want {
				recErr(d.sensusID, it.idx, ErrCodeValidation,
					fmt.Sprintf("thing %s is %s, the datastream's sensusID says %s", d.thing, th.SensusID, want))
				continue
			}
			if owner := st.datastreams.byID[d.id]; d.id != 0 && owner != nil && owner.SensusID != d.sensusID {
				recErr(d.sensusID, it.idx, ErrCodeValidation,
					fmt.Sprintf("@iot.id %d belongs to datastream %s", d.id, owner.SensusID))
				continue
			}
			e := st.datastreams.upsert(entity{SensusID: d.sensusID, IotID: d.id, DeviceID: d.deviceID,
				CustomerID: d.customerID, ThingID: th.IotID, ObservationType: d.obsType})
			rec.DeviceID, rec.CustomerID, rec.SensusID, rec.IotID = d.deviceID, d.customerID, d.sensusID, e.IotID
			rec.ThingID, rec.ObservationType = th.IotID, d.obsType
		case Observations:
			ds := st.datastreams.resolve(it.obs.ds.id, it.obs.ds.sensusID)
			if ds.DeviceID != b.deviceID || ds.CustomerID != b.customerID {
				recErr("", it.idx, ErrCodeValidation, fmt.Sprintf("datastream %s belongs to %s@%s, not this batch's %s@%s",
					ds.SensusID, ds.DeviceID, ds.CustomerID, b.deviceID, b.customerID))
				continue
			}
			if err := checkResult(ds.ObservationType, it.obs.result); err != nil {
				recErr("", it.idx, ErrCodeValidation, err.Error())
				continue
			}
			rec.Datastream, rec.DatastreamID = ds.SensusID, ds.IotID
		case Alarms:
			rec.AlarmID = it.alarm
		case Raw:
			rec.DeviceID, rec.CustomerID = it.rawr.deviceID, it.rawr.customerID
		}
		recs = append(recs, rec)
	}
	if err := st.appendBatch(kind, b.batchID, recs, now); err != nil {
		s.log.WithError(err).Error("store failed")
		return s.fail(http.StatusInternalServerError, ErrCodeInternal, "store failed")
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].RecordIndex < errs[j].RecordIndex })
	ts := now.Format(time.RFC3339)
	rep := reply{accepted: len(recs), rejected: len(errs)}
	switch {
	case len(errs) > 0:
		rep.status = http.StatusAccepted
		rep.body = BatchResult{BatchID: b.batchID, Status: "PARTIALLY_PROCESSED", RecordsProcessed: len(b.list),
			RecordsAccepted: len(recs), RecordsRejected: len(errs), ProcessedAt: ts, Errors: errs}
	case kind == Alarms:
		rep.status = http.StatusCreated
		rep.body = BatchResult{BatchID: b.batchID, Status: "PROCESSED", RecordsProcessed: len(b.list),
			RecordsAccepted: len(recs), ProcessedAt: ts}
	case kind == Raw:
		rep.status = http.StatusOK
		rep.body = map[string]any{"status": "ACCEPTED", "rawDataId": fmt.Sprintf("raw-%d", recs[0].Seq), "timestamp": ts}
	default:
		rep.status = http.StatusOK
		rep.body = map[string]any{"status": "ACCEPTED", kind + "Processed": len(recs), "timestamp": ts}
	}
	return rep
}

func withBatch(body any, batchID string) any {
	if eb, ok := body.(ErrorBody); ok {
		eb.BatchID = batchID
		return eb
	}
	return body
}
