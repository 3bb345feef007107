package iridium

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DedupFile is the file name of the de-duplication set in an adapter's
// StateDir.
const DedupFile = "dedup.db"

// DefaultDedupSize bounds the set: the Iridium gateway keeps at most 10,000
// undelivered messages per destination, so a redelivery is never older than
// that many messages.
const DefaultDedupSize = 10000

var (
	bucketKeys  = []byte("keys")  // key -> sequence
	bucketOrder = []byte("order") // sequence (u64 BE) -> key, oldest first
)

// Dedup is a bounded set of message keys kept on disk (bbolt, one fsync per
// Add), so redeliveries are recognised across restarts. When it holds more
// than its size the oldest keys are dropped.
//
// Use: Claim the key (this serialises concurrent deliveries of the same
// message), skip the emit when it was seen, else emit, then Add once the
// frame is durable, then acknowledge upstream, then release the claim. A
// crash between emit and Add re-emits a message (at-least-once); a crash
// between Add and the acknowledgement only re-acknowledges it.
type Dedup struct {
	db   *bolt.DB
	max  int
	mu   sync.Mutex
	n    int
	busy map[string]chan struct{}
}

// OpenDedup opens (creating) the set at path, holding at most max keys.
func OpenDedup(path string, max int) (*Dedup, error) {
	if max <= 0 {
		max = DefaultDedupSize
	}
	// The timeout turns a second instance on the same state folder into an
	// error instead of a hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open de-duplication set %s: %w", path, err)
	}
	d := &Dedup{db: db, max: max, busy: map[string]chan struct{}{}}
	err = db.Update(func(tx *bolt.Tx) error {
		k, err := tx.CreateBucketIfNotExists(bucketKeys)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketOrder); err != nil {
			return err
		}
		d.n = k.Stats().KeyN
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open de-duplication set %s: %w", path, err)
	}
	return d, nil
}

// Close closes the file.
func (d *Dedup) Close() error { return d.db.Close() }

// Len is the number of keys held.
func (d *Dedup) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// Claim waits until no other caller holds key, takes it and reports whether
// key is already in the set. release must be called exactly once (when err
// is nil).
func (d *Dedup) Claim(ctx context.Context, key string) (seen bool, release func(), err error) {
	for {
		d.mu.Lock()
		ch, held := d.busy[key]
		if !held {
			ch = make(chan struct{})
			d.busy[key] = ch
			d.mu.Unlock()
			break
		}
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false, nil, ctx.Err()
		}
	}
	release = func() {
		d.mu.Lock()
		close(d.busy[key])
		delete(d.busy, key)
		d.mu.Unlock()
	}
	seen, err = d.Contains(key)
	if err != nil {
		release()
		return false, nil, err
	}
	return seen, release, nil
}

// Contains reports whether key is in the set.
func (d *Dedup) Contains(key string) (bool, error) {
	var found bool
	err := d.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketKeys).Get([]byte(key)) != nil
		return nil
	})
	return found, err
}

// Add records key durably, dropping the oldest keys beyond the bound.
func (d *Dedup) Add(key string) error {
	if key == "" {
		return errors.New("de-duplication key is empty")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.n
	err := d.db.Update(func(tx *bolt.Tx) error {
		keys, order := tx.Bucket(bucketKeys), tx.Bucket(bucketOrder)
		if keys.Get([]byte(key)) != nil {
			return nil
		}
		seq, err := order.NextSequence()
		if err != nil {
			return err
		}
		var sk [8]byte
		binary.BigEndian.PutUint64(sk[:], seq)
		if err := keys.Put([]byte(key), sk[:]); err != nil {
			return err
		}
		if err := order.Put(sk[:], []byte(key)); err != nil {
			return err
		}
		n = d.n + 1
		c := order.Cursor()
		for k, v := c.First(); k != nil && n > d.max; k, v = c.First() {
			if err := keys.Delete(v); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n--
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record de-duplication key: %w", err)
	}
	d.n = n
	return nil
}
