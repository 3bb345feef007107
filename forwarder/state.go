package forwarder

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/vigd/vigd/forwarder/queue"
)

// EntityKind is a thing or a datastream, the two entities the forwarder
// keeps in its state store rather than in a queue.
type EntityKind uint8

// Entity kinds.
const (
	Thing      EntityKind = 1
	Datastream EntityKind = 2
)

func (k EntityKind) String() string {
	if k == Thing {
		return "thing"
	}
	return "datastream"
}

// Entity statuses.
const (
	statusUnsent   = 0
	statusSent     = 1
	statusRejected = 2
)

// Bucket names. User buckets of the generic KV are prefixed so that they
// never collide with the forwarder's own.
var (
	bucketThings      = []byte("things")
	bucketDatastreams = []byte("datastreams")
	bucketUnsentT     = []byte("unsent_things")
	bucketUnsentD     = []byte("unsent_datastreams")
	bucketIDsT        = []byte("ids_things")
	bucketIDsD        = []byte("ids_datastreams")
	bucketMeta        = []byte("meta")
	bucketWindows     = []byte("windows")
	bucketResolved    = []byte("resolved")
	kvPrefix          = "kv/"
)

// storedEntity is an entity's record in the store.
type storedEntity struct {
	Hash   string          `json:"h"`
	Status int             `json:"s"`
	Thing  string          `json:"t,omitempty"` // a datastream's thing sensusID
	IotID  string          `json:"i,omitempty"` // "@iot.id" when the body has one
	Reason string          `json:"r,omitempty"` // why the server rejected it
	Body   json.RawMessage `json:"b"`
}

// State is the forwarder's small durable store (one bbolt file): the
// definitions of things and datastreams with whether the server has the
// current one, the in-flight window of each queue, and a generic key/value
// space for other small daemon state. Safe for concurrent use.
type State struct {
	db     *bolt.DB
	epoch  string
	notify chan struct{}

	// known caches the stored hash of each entity (this process is the
	// only writer), so that the pipeline's upsert of an unchanged
	// definition, once per frame, touches no page of the file.
	mu    sync.Mutex
	known map[string]string // kind+sensusID -> hash+"\x00"+thing
	// wmu orders entity writes with the cache: the cache changes only
	// after the commit, so "unchanged" always means "durably stored".
	wmu sync.Mutex
}

// OpenState opens (creating) the state file at path.
func OpenState(path string) (*State, error) {
	db, err := bolt.Open(path, 0o640, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	s := &State{db: db, notify: make(chan struct{}, 1), known: map[string]string{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketThings, bucketDatastreams, bucketUnsentT, bucketUnsentD,
			bucketIDsT, bucketIDsD, bucketMeta, bucketWindows, bucketResolved} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if e := m.Get([]byte("epoch")); e != nil {
			s.epoch = string(e)
			return nil
		}
		// The epoch goes into every batchId: a queue that is wiped and
		// restarts at position 0, or another gateway posting under the same
		// service id, must never produce a batchId the server has seen (it
		// would drop the batch as a duplicate).
		var r [5]byte
		if _, err := rand.Read(r[:]); err != nil {
			return err
		}
		s.epoch = hex.EncodeToString(r[:])
		return m.Put([]byte("epoch"), []byte(s.epoch))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state: init %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file.
func (s *State) Close() error { return s.db.Close() }

// Epoch is a random token made when the file was created; it makes batch
// ids unique to this store.
func (s *State) Epoch() string { return s.epoch }

// Notify is signalled (coalesced) when an entity becomes "not sent".
func (s *State) Notify() <-chan struct{} { return s.notify }

func (s *State) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func buckets(k EntityKind) (ents, unsent, ids []byte) {
	if k == Thing {
		return bucketThings, bucketUnsentT, bucketIDsT
	}
	return bucketDatastreams, bucketUnsentD, bucketIDsD
}

func hashOf(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:16])
}

// UpsertThing stores a thing's definition. When it differs from the stored
// one (or is new) it is marked "not sent", durably, and changed is true; an
// unchanged definition writes nothing.
func (s *State) UpsertThing(sensusID string, body []byte) (changed bool, err error) {
	return s.upsert(Thing, sensusID, "", body)
}

// UpsertDatastream is UpsertThing for a datastream of the given thing.
func (s *State) UpsertDatastream(sensusID, thingSensusID string, body []byte) (changed bool, err error) {
	return s.upsert(Datastream, sensusID, thingSensusID, body)
}

func (s *State) upsert(k EntityKind, sid, thing string, body []byte) (bool, error) {
	n, err := s.UpsertAll([]Upsert{{Kind: k, SensusID: sid, Thing: thing, Body: body}})
	return n > 0, err
}

// Upsert is one entity definition for UpsertAll: a thing (Thing empty) or
// a datastream of the thing Thing.
type Upsert struct {
	Kind     EntityKind
	SensusID string
	Thing    string
	Body     []byte
}

// UpsertAll is UpsertThing and UpsertDatastream for several definitions:
// those that changed are written with one durable transaction (one fsync
// for a batch of new devices instead of one per entity). It returns how
// many changed.
func (s *State) UpsertAll(us []Upsert) (int, error) {
	type write struct {
		u      *Upsert
		ck, cv string
		v      []byte
		iotID  string
	}
	var ws []write
	check := func(u *Upsert) (write, bool, error) {
		if u.SensusID == "" {
			return write{}, false, fmt.Errorf("state: %s without sensusID", u.Kind)
		}
		if !json.Valid(u.Body) {
			return write{}, false, fmt.Errorf("state: %s %s: body is not JSON", u.Kind, u.SensusID)
		}
		h := hashOf(u.Body)
		w := write{u: u, ck: u.Kind.String() + "\x00" + u.SensusID, cv: h + "\x00" + u.Thing}
		s.mu.Lock()
		prev, cached := s.known[w.ck]
		s.mu.Unlock()
		return w, !(cached && prev == w.cv), nil
	}
	for i := range us {
		w, changed, err := check(&us[i])
		if err != nil {
			return 0, err
		}
		if changed {
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// Known to the store already (another process wrote it, or the cache
	// is cold after a start)?
	keep := ws[:0]
	_ = s.db.View(func(tx *bolt.Tx) error {
		for _, w := range ws {
			s.mu.Lock()
			prev, cached := s.known[w.ck]
			s.mu.Unlock()
			if !cached {
				ents, _, _ := buckets(w.u.Kind)
				if v := tx.Bucket(ents).Get([]byte(w.u.SensusID)); v != nil {
					var e storedEntity
					if json.Unmarshal(v, &e) == nil {
						prev, cached = e.Hash+"\x00"+e.Thing, true
					}
				}
			}
			if cached && prev == w.cv {
				s.remember(w.ck, w.cv)
				continue
			}
			keep = append(keep, w)
		}
		return nil
	})
	ws = keep
	if len(ws) == 0 {
		return 0, nil
	}
	for i := range ws {
		w := &ws[i]
		h, _, _ := strings.Cut(w.cv, "\x00")
		e := storedEntity{Hash: h, Status: statusUnsent, Thing: w.u.Thing, IotID: iotID(w.u.Body), Body: append(json.RawMessage(nil), w.u.Body...)}
		v, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		w.v, w.iotID = v, e.IotID
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, w := range ws {
			ents, unsent, ids := buckets(w.u.Kind)
			sid := []byte(w.u.SensusID)
			if err := tx.Bucket(ents).Put(sid, w.v); err != nil {
				return err
			}
			if w.iotID != "" {
				if err := tx.Bucket(ids).Put([]byte(w.iotID), sid); err != nil {
					return err
				}
			}
			if err := tx.Bucket(unsent).Put(sid, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if len(ws) == 1 {
			return 0, fmt.Errorf("state: upsert %s %s: %w", ws[0].u.Kind, ws[0].u.SensusID, err)
		}
		return 0, fmt.Errorf("state: upsert %d entities: %w", len(ws), err)
	}
	for _, w := range ws {
		s.remember(w.ck, w.cv)
	}
	s.signal()
	return len(ws), nil
}

func (s *State) remember(k, v string) {
	s.mu.Lock()
	s.known[k] = v
	s.mu.Unlock()
}

// iotID is the body's numeric "@iot.id" as text, or "".
func iotID(body []byte) string {
	var v struct {
		ID json.Number `json:"@iot.id"`
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if d.Decode(&v) != nil {
		return ""
	}
	return v.ID.String()
}

// pendingEntity is an entity waiting to be posted.
type pendingEntity struct {
	Kind     EntityKind
	SensusID string
	Hash     string
	Thing    string
	IotID    string
	Body     []byte
}

// unsent returns up to max entities of kind k that are not sent.
func (s *State) unsent(k EntityKind, max int) ([]pendingEntity, error) {
	ents, unsent, _ := buckets(k)
	var out []pendingEntity
	err := s.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(ents)
		c := tx.Bucket(unsent).Cursor()
		for key, _ := c.First(); key != nil && len(out) < max; key, _ = c.Next() {
			v := eb.Get(key)
			if v == nil {
				continue
			}
			var e storedEntity
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("%s %s: %w", k, key, err)
			}
			out = append(out, pendingEntity{Kind: k, SensusID: string(key), Hash: e.Hash, Thing: e.Thing,
				IotID: e.IotID, Body: append([]byte(nil), e.Body...)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return out, nil
}

// setStatus marks entities sent or rejected, but only those whose stored
// definition is still the one that was posted (hash): a definition changed
// meanwhile stays "not sent".
func (s *State) setStatus(ps []pendingEntity, status int, reason string) error {
	if len(ps) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, p := range ps {
			ents, unsent, _ := buckets(p.Kind)
			eb := tx.Bucket(ents)
			v := eb.Get([]byte(p.SensusID))
			if v == nil {
				continue
			}
			var e storedEntity
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.Hash != p.Hash {
				continue
			}
			e.Status, e.Reason = status, reason
			nv, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := eb.Put([]byte(p.SensusID), nv); err != nil {
				return err
			}
			if err := tx.Bucket(unsent).Delete([]byte(p.SensusID)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: mark entities: %w", err)
	}
	return nil
}

// resolveEntity finds an entity by sensusID or @iot.id. It reports its
// sensusID, status and rejection reason.
func (s *State) resolveEntity(k EntityKind, id string) (sid string, status int, reason string, ok bool) {
	ents, _, ids := buckets(k)
	_ = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(ents).Get([]byte(id))
		if v == nil {
			if alt := tx.Bucket(ids).Get([]byte(id)); alt != nil {
				id = string(alt)
				v = tx.Bucket(ents).Get(alt)
			}
		}
		if v == nil {
			return nil
		}
		var e storedEntity
		if json.Unmarshal(v, &e) != nil {
			return nil
		}
		sid, status, reason, ok = id, e.Status, e.Reason, true
		return nil
	})
	return
}

// MarkUnsent marks entities "not sent" so that the forwarder posts them
// again (after a 422 from the server, or by an operator). Unknown ids are
// ignored; it returns how many it marked.
func (s *State) MarkUnsent(k EntityKind, sensusIDs ...string) (int, error) {
	ents, unsent, _ := buckets(k)
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, id := range sensusIDs {
			if tx.Bucket(ents).Get([]byte(id)) == nil {
				continue
			}
			if err := tx.Bucket(unsent).Put([]byte(id), nil); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("state: %w", err)
	}
	if n > 0 {
		s.signal()
	}
	return n, nil
}

// MarkAllUnsent marks every known thing and datastream "not sent" (an
// operator's "post everything again").
func (s *State) MarkAllUnsent() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range []EntityKind{Thing, Datastream} {
			ents, unsent, _ := buckets(k)
			ub := tx.Bucket(unsent)
			if err := tx.Bucket(ents).ForEach(func(key, _ []byte) error { return ub.Put(key, nil) }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	s.signal()
	return nil
}

// EntityCounts reports how many entities of kind k are known and how many
// wait to be posted.
func (s *State) EntityCounts(k EntityKind) (known, unsent int) {
	ents, ub, _ := buckets(k)
	_ = s.db.View(func(tx *bolt.Tx) error {
		known = tx.Bucket(ents).Stats().KeyN
		unsent = tx.Bucket(ub).Stats().KeyN
		return nil
	})
	return
}

// Get reads key from the named bucket of the generic store; nil when
// missing.
func (s *State) Get(bucket, key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(kvPrefix + bucket))
		if b == nil {
			return nil
		}
		if v := b.Get([]byte(key)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: get %s/%s: %w", bucket, key, err)
	}
	return out, nil
}

// Put writes key durably into the named bucket of the generic store; a nil
// value deletes the key.
func (s *State) Put(bucket, key string, val []byte) error {
	if bucket == "" || key == "" {
		return errors.New("state: put: empty bucket or key")
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(kvPrefix + bucket))
		if err != nil {
			return err
		}
		if val == nil {
			return b.Delete([]byte(key))
		}
		return b.Put([]byte(key), val)
	})
	if err != nil {
		return fmt.Errorf("state: put %s/%s: %w", bucket, key, err)
	}
	return nil
}

// ForEach calls fn for every key of the named bucket of the generic store,
// in key order.
func (s *State) ForEach(bucket string, fn func(key string, val []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(kvPrefix + bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// window is the span of a queue that the forwarder is delivering: it is
// saved before the first request so that after a restart the same records
// form the same batches with the same ids.
type window struct {
	Start, End queue.Position // End is the Next of the last record
	N          int
}

func encodePos(b []byte, p queue.Position) []byte {
	b = binary.BigEndian.AppendUint64(b, p.Segment)
	return binary.BigEndian.AppendUint64(b, uint64(p.Offset))
}

func decodePos(b []byte) queue.Position {
	return queue.Position{Segment: binary.BigEndian.Uint64(b), Offset: int64(binary.BigEndian.Uint64(b[8:]))}
}

func (s *State) loadWindow(name string) (window, bool, error) {
	var w window
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketWindows).Get([]byte(name))
		if len(v) != 40 {
			return nil
		}
		w = window{Start: decodePos(v), End: decodePos(v[16:]), N: int(binary.BigEndian.Uint64(v[32:]))}
		ok = true
		return nil
	})
	return w, ok, err
}

func (s *State) saveWindow(name string, w window) error {
	v := encodePos(nil, w.Start)
	v = encodePos(v, w.End)
	v = binary.BigEndian.AppendUint64(v, uint64(w.N))
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWindows).Put([]byte(name), v)
	})
}

// clearWindow forgets a queue's window and its resolved batches (after the
// queue cursor was committed past it).
func (s *State) clearWindow(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketWindows).Delete([]byte(name)); err != nil {
			return err
		}
		r := tx.Bucket(bucketResolved)
		if r.Bucket([]byte(name)) != nil {
			return r.DeleteBucket([]byte(name))
		}
		return nil
	})
}

// markResolved records that batches of the current window are done, so
// that a restart in the middle of the window does not post them again.
func (s *State) markResolved(name string, batchIDs ...string) error {
	now := []byte(strconv.FormatInt(time.Now().Unix(), 10))
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketResolved).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		for _, id := range batchIDs {
			if err := b.Put([]byte(id), now); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *State) resolved(name string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketResolved).Bucket([]byte(name))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error { out[string(k)] = true; return nil })
	})
	return out, err
}
