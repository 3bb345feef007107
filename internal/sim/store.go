package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Record is one accepted record as stored (one JSON line in
// DATA/<kind>.jsonl) and as GET /_sim/records serves it back.
type Record struct {
	Kind        string    `json:"kind"`
	Seq         int64     `json:"seq"` // 1-based, per kind, in arrival order
	BatchID     string    `json:"batchId,omitempty"`
	DeviceID    string    `json:"deviceId,omitempty"`   // the batch's, or from the sensusID
	CustomerID  string    `json:"customerId,omitempty"` // the batch's, or from the sensusID
	ServiceID   string    `json:"serviceId,omitempty"`
	ReceivedAt  time.Time `json:"receivedAt"`
	RecordIndex int       `json:"recordIndex"` // position in the posted list
	// Things and datastreams: the sensusID and the @iot.id it has now.
	SensusID string `json:"sensusID,omitempty"`
	IotID    int64  `json:"iotId,omitempty"`
	// Datastreams: the thing it belongs to and its observation type.
	ThingID         int64  `json:"thingId,omitempty"`
	ObservationType string `json:"observationType,omitempty"`
	// Observations: the datastream the reference resolved to.
	Datastream   string `json:"datastream,omitempty"`
	DatastreamID int64  `json:"datastreamId,omitempty"`
	// Alarms: the alarmId.
	AlarmID string `json:"alarmId,omitempty"`
	// Record is the record as posted (compacted JSON).
	Record json.RawMessage `json:"record"`
}

type batchLine struct {
	Kind    string `json:"kind"`
	BatchID string `json:"batchId,omitempty"`
	Records int    `json:"records"`
	At      string `json:"at"`
}

type entity struct {
	SensusID        string
	IotID           int64
	DeviceID        string
	CustomerID      string
	ThingID         int64
	ObservationType string
}

type entities struct {
	bySensus map[string]*entity
	byID     map[int64]*entity
	last     int64
}

func newEntities() *entities {
	return &entities{bySensus: map[string]*entity{}, byID: map[int64]*entity{}}
}

// resolve looks a reference up by @iot.id first, then by sensusID.
func (es *entities) resolve(id int64, sensusID string) *entity {
	if id != 0 {
		if e := es.byID[id]; e != nil {
			return e
		}
	}
	if sensusID != "" {
		return es.bySensus[sensusID]
	}
	return nil
}

// upsert stores e by its sensusID. e.IotID 0 keeps the existing id or
// assigns the next free one. The caller has checked that a given id does not
// belong to another sensusID.
func (es *entities) upsert(e entity) *entity {
	old := es.bySensus[e.SensusID]
	if e.IotID == 0 {
		if old != nil {
			e.IotID = old.IotID
		} else {
			e.IotID = es.last + 1
		}
	}
	if old != nil && old.IotID != e.IotID {
		delete(es.byID, old.IotID)
	}
	if e.IotID > es.last {
		es.last = e.IotID
	}
	p := &e
	es.bySensus[e.SensusID] = p
	es.byID[e.IotID] = p
	return p
}

type kindFile struct {
	path string
	f    *os.File
	w    *bufio.Writer
	enc  *json.Encoder
	size int64 // bytes written to the file (flushed)
}

func (k *kindFile) Write(p []byte) (int, error) {
	n, err := k.f.Write(p)
	k.size += int64(n)
	return n, err
}

func openKindFile(path string) (*kindFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	k := &kindFile{path: path, f: f, size: st.Size()}
	if k.size > 0 {
		// A crash can leave a partial last line; start the next one cleanly.
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, k.size-1); err == nil && last[0] != '\n' {
			if _, err := k.Write([]byte("\n")); err != nil {
				f.Close()
				return nil, err
			}
		}
	}
	k.w = bufio.NewWriterSize(k, 64<<10)
	k.enc = json.NewEncoder(k.w)
	k.enc.SetEscapeHTML(false)
	return k, nil
}

// store keeps accepted records on disk and the indexes that dedupe and
// integrity need in memory. mu is held for a whole ingest so that the
// duplicate check, the integrity check and the append are one step.
type store struct {
	dir string
	log *logrus.Entry

	mu          sync.Mutex
	files       map[string]*kindFile
	batchFile   *kindFile
	accepted    map[string]int64
	batches     map[string]int64
	seen        map[string]struct{} // kind + "\x00" + batchId
	things      *entities
	datastreams *entities
}

func openStore(dir string, log *logrus.Entry) (*store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sim: data dir: %w", err)
	}
	st := &store{dir: dir, log: log}
	if err := st.open(); err != nil {
		st.closeFiles()
		return nil, err
	}
	return st, nil
}

func (st *store) open() error {
	st.files = map[string]*kindFile{}
	st.accepted = map[string]int64{}
	st.batches = map[string]int64{}
	st.seen = map[string]struct{}{}
	st.things = newEntities()
	st.datastreams = newEntities()
	if err := st.reload(); err != nil {
		return err
	}
	for _, k := range Kinds {
		kf, err := openKindFile(filepath.Join(st.dir, k+".jsonl"))
		if err != nil {
			return fmt.Errorf("sim: %w", err)
		}
		st.files[k] = kf
	}
	kf, err := openKindFile(filepath.Join(st.dir, "batches.jsonl"))
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	st.batchFile = kf
	return nil
}

// reload rebuilds counts and batch ids from batches.jsonl and the entity
// tables by replaying things.jsonl and datastreams.jsonl; the large files of
// observations, alarms and raw records are only read when queried.
func (st *store) reload() error {
	err := eachLine(filepath.Join(st.dir, "batches.jsonl"), -1, func(line []byte) error {
		var b batchLine
		if err := json.Unmarshal(line, &b); err != nil || kindPaths[b.Kind] == "" {
			st.log.WithField("file", "batches.jsonl").Warn("skipping unreadable line")
			return nil
		}
		st.accepted[b.Kind] += int64(b.Records)
		st.batches[b.Kind]++
		if b.BatchID != "" {
			st.seen[b.Kind+"\x00"+b.BatchID] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range []string{Things, Datastreams} {
		es := st.entitiesOf(k)
		err := eachLine(filepath.Join(st.dir, k+".jsonl"), -1, func(line []byte) error {
			var r Record
			if err := json.Unmarshal(line, &r); err != nil || r.SensusID == "" || r.IotID == 0 {
				st.log.WithField("file", k+".jsonl").Warn("skipping unreadable line")
				return nil
			}
			es.upsert(entity{SensusID: r.SensusID, IotID: r.IotID, DeviceID: r.DeviceID,
				CustomerID: r.CustomerID, ThingID: r.ThingID, ObservationType: r.ObservationType})
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (st *store) entitiesOf(kind string) *entities {
	if kind == Things {
		return st.things
	}
	return st.datastreams
}

// eachLine calls fn for each complete non-empty line of the first limit
// bytes of path (limit < 0: all); the line is only valid during the call.
// A missing file has no lines.
func eachLine(path string, limit int64, fn func([]byte) error) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if limit >= 0 {
		r = io.LimitReader(f, limit)
	}
	br := bufio.NewReaderSize(r, 256<<10)
	var long []byte // a line longer than the buffer, assembled
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if l := bytes.TrimSpace(line); len(l) > 0 {
				if ferr := fn(l); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sim: read %s: %w", path, err)
		}
	}
}

// duplicate reports whether batchID was already accepted for kind; callers
// hold mu.
func (st *store) duplicate(kind, batchID string) bool {
	if batchID == "" {
		return false
	}
	_, ok := st.seen[kind+"\x00"+batchID]
	return ok
}

// appendBatch writes the accepted records of one request and its batch
// line, and flushes both; callers hold mu. It fills in Seq.
func (st *store) appendBatch(kind, batchID string, recs []Record, at time.Time) error {
	kf := st.files[kind]
	for i := range recs {
		recs[i].Seq = st.accepted[kind] + int64(i) + 1
		if err := kf.enc.Encode(&recs[i]); err != nil {
			return fmt.Errorf("sim: write %s: %w", kf.path, err)
		}
	}
	if err := st.batchFile.enc.Encode(batchLine{Kind: kind, BatchID: batchID, Records: len(recs),
		At: at.UTC().Format(TimeFormat)}); err != nil {
		return fmt.Errorf("sim: write batches: %w", err)
	}
	if err := kf.w.Flush(); err != nil {
		return fmt.Errorf("sim: write %s: %w", kf.path, err)
	}
	if err := st.batchFile.w.Flush(); err != nil {
		return fmt.Errorf("sim: write batches: %w", err)
	}
	st.accepted[kind] += int64(len(recs))
	st.batches[kind]++
	if batchID != "" {
		st.seen[kind+"\x00"+batchID] = struct{}{}
	}
	return nil
}

func (st *store) counts() Counts {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := Counts{Accepted: map[string]int64{}, Batches: map[string]int64{}, Entities: map[string]int64{}}
	for _, k := range Kinds {
		c.Accepted[k] = st.accepted[k]
		c.Batches[k] = st.batches[k]
	}
	c.Entities[Things] = int64(len(st.things.bySensus))
	c.Entities[Datastreams] = int64(len(st.datastreams.bySensus))
	return c
}

// Query selects stored records; empty fields match everything.
type Query struct {
	Kind       string
	DeviceID   string
	CustomerID string
	// Datastream matches an observation's resolved datastream by sensusID
	// or @iot.id (as a decimal string), or a datastream's own sensusID.
	Datastream string
	BatchID    string
	// AfterSeq skips records with Seq <= AfterSeq; Limit > 0 caps the count.
	AfterSeq int64
	Limit    int
}

// lineMatcher selects stored lines by byte checks on the envelope, without
// decoding: a million-record drain leaves hundreds of MB to look through.
// It relies on how the store writes a line: the envelope fields come first,
// each followed by a comma, then `"record":` last; and `,"record":` or a
// field name cannot occur inside an encoded string (its quotes would be
// escaped), so the first `,"record":` ends the envelope and a needle like
// `"deviceId":"X",` found before it is that field with exactly that value.
type lineMatcher struct {
	all     [][]byte // every one must be in the envelope
	any     [][]byte // one of them must be (when not empty)
	after   int64
	disable bool // the query can match nothing
}

// field is the bytes the store writes for a field and a value, comma included.
func field(name string, value any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(value)
	return append(append([]byte(`"`+name+`":`), bytes.TrimSuffix(b.Bytes(), []byte("\n"))...), ',')
}

func newLineMatcher(q Query) *lineMatcher {
	m := &lineMatcher{after: q.AfterSeq}
	for _, f := range []struct{ name, v string }{{"batchId", q.BatchID}, {"deviceId", q.DeviceID}, {"customerId", q.CustomerID}} {
		if f.v != "" {
			m.all = append(m.all, field(f.name, f.v))
		}
	}
	if q.Datastream != "" {
		byName, byID := "datastream", "datastreamId"
		switch q.Kind {
		case Observations:
		case Datastreams:
			byName, byID = "sensusID", "iotId"
		default:
			m.disable = true
		}
		m.any = append(m.any, field(byName, q.Datastream))
		if id, err := strconv.ParseInt(q.Datastream, 10, 64); err == nil && id > 0 {
			m.any = append(m.any, field(byID, id))
		}
	}
	return m
}

var recordKey = []byte(`,"record":`)

func (m *lineMatcher) match(line []byte) bool {
	if m.disable {
		return false
	}
	i := bytes.Index(line, recordKey)
	if i < 0 {
		return false
	}
	head := line[:i+1]
	if m.after > 0 && lineSeq(head) <= m.after {
		return false
	}
	for _, nd := range m.all {
		if !bytes.Contains(head, nd) {
			return false
		}
	}
	if len(m.any) == 0 {
		return true
	}
	for _, nd := range m.any {
		if bytes.Contains(head, nd) {
			return true
		}
	}
	return false
}

// lineSeq reads "seq":N from a stored envelope; -1 if absent.
func lineSeq(head []byte) int64 {
	k := []byte(`"seq":`)
	i := bytes.Index(head, k)
	if i < 0 {
		return -1
	}
	var n int64
	for j := i + len(k); j < len(head) && head[j] >= '0' && head[j] <= '9'; j++ {
		n = n*10 + int64(head[j]-'0')
	}
	return n
}

// scan calls fn with each stored line of q.Kind that matches q, oldest
// first, reading the file outside the lock up to what was flushed.
func (st *store) scan(q Query, fn func(line []byte) error) error {
	st.mu.Lock()
	kf := st.files[q.Kind]
	if kf == nil {
		st.mu.Unlock()
		return fmt.Errorf("sim: kind %q: unknown", q.Kind)
	}
	path, size := kf.path, kf.size
	st.mu.Unlock()
	m := newLineMatcher(q)
	n := 0
	errStop := errors.New("stop")
	err := eachLine(path, size, func(line []byte) error {
		if !m.match(line) {
			return nil
		}
		if err := fn(line); err != nil {
			return err
		}
		n++
		if q.Limit > 0 && n >= q.Limit {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

func (st *store) closeFiles() error {
	var errs []error
	for _, kf := range st.files {
		errs = append(errs, kf.w.Flush(), kf.f.Close())
	}
	if st.batchFile != nil {
		errs = append(errs, st.batchFile.w.Flush(), st.batchFile.f.Close())
	}
	st.files, st.batchFile = nil, nil
	return errors.Join(errs...)
}

func (st *store) close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.closeFiles()
}

// wipe deletes every stored record, batch id and entity.
func (st *store) wipe() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.closeFiles(); err != nil {
		return err
	}
	for _, k := range append([]string{"batches"}, Kinds...) {
		if err := os.Remove(filepath.Join(st.dir, k+".jsonl")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sim: %w", err)
		}
	}
	return st.open()
}
