package orbcomm

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// StateFile is the file name of the adapter's state in its StateDir.
const StateFile = "orbcomm.db"

// Mark is the high-water mark: where the next get_return_messages call
// starts. FromID wins when it is positive.
type Mark struct {
	FromID   int64  `json:"from_id,omitempty"`
	StartUTC string `json:"start_utc,omitempty"`
}

// query is the mark as the call's query parameter.
func (m Mark) String() string {
	if m.FromID > 0 {
		return fmt.Sprintf("from_id=%d", m.FromID)
	}
	return "start_utc=" + m.StartUTC
}

var (
	bucketState = []byte("state")
	bucketSeen  = []byte("seen")  // dedup key -> sequence
	bucketOrder = []byte("order") // sequence (u64 BE) -> dedup key, oldest first
	keyMark     = []byte("mark")
)

// store keeps the mark and a bounded set of message keys already queued,
// in one bbolt file: a page's keys and its new mark are written in one
// transaction (one fsync), so they can never disagree after a crash.
type store struct {
	db  *bolt.DB
	max int
	mu  sync.Mutex
	n   int
}

func openStore(path string, max int) (*store, error) {
	// The timeout turns a second instance polling the same mailbox from
	// the same state folder into an error instead of a hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s := &store{db: db, max: max}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketState, bucketOrder} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		seen, err := tx.CreateBucketIfNotExists(bucketSeen)
		if err != nil {
			return err
		}
		s.n = seen.Stats().KeyN
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return s, nil
}

func (s *store) Close() error { return s.db.Close() }

// Mark returns the saved mark; ok is false before the first save.
func (s *store) Mark() (m Mark, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketState).Get(keyMark)
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		return Mark{}, false, fmt.Errorf("read mark: %w", err)
	}
	return m, ok, nil
}

// Seen reports whether key was recorded.
func (s *store) Seen(key string) (bool, error) {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketSeen).Get([]byte(key)) != nil
		return nil
	})
	return found, err
}

// Len is the number of keys held.
func (s *store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Commit records keys (dropping the oldest beyond the bound) and, when mark
// is not nil, the new mark, in one durable transaction.
func (s *store) Commit(keys []string, mark *Mark) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.n
	err := s.db.Update(func(tx *bolt.Tx) error {
		seen, order := tx.Bucket(bucketSeen), tx.Bucket(bucketOrder)
		for _, k := range keys {
			if seen.Get([]byte(k)) != nil {
				continue
			}
			seq, err := order.NextSequence()
			if err != nil {
				return err
			}
			var sk [8]byte
			binary.BigEndian.PutUint64(sk[:], seq)
			if err := seen.Put([]byte(k), sk[:]); err != nil {
				return err
			}
			if err := order.Put(sk[:], []byte(k)); err != nil {
				return err
			}
			n++
		}
		c := order.Cursor()
		for k, v := c.First(); k != nil && n > s.max; k, v = c.First() {
			if err := seen.Delete(v); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n--
		}
		if mark != nil {
			b, err := json.Marshal(mark)
			if err != nil {
				return err
			}
			return tx.Bucket(bucketState).Put(keyMark, b)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	s.n = n
	return nil
}
