// Package deadletter keeps what vigd could not deliver or decode: a record
// the server rejected, or a frame no decoder could read, with the reason.
//
// The store is a plain folder with one JSON file per entry, so that the CLI
// (`vigd deadletters list|show|replay|purge`) can read and change it while
// the daemon runs, without a lock or an RPC. Every write is atomic (temporary
// file, fsync, rename, fsync of the folder): a crash leaves either the old or
// the new state, never a torn file. Replay is a hand-off through the replay/
// subfolder: MarkReplay moves an entry there (the CLI can do this with the
// daemon stopped), and the daemon's TakeReplays lists them, re-injects each
// one and Deletes it.
//
// The store is bounded by bytes; past the bound the oldest entries are
// evicted, counted in vigd_deadletters_evicted_total and logged at error
// (data is dropped: an operator must act).
package deadletter

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sirupsen/logrus"
)

// Classes of entries.
const (
	// ClassRecord is an encoded record the server rejected (or that could
	// not be sent); Data is a forwarder record.
	ClassRecord = "record"
	// ClassFrame is a received frame that could not be decoded or placed;
	// Data is the frame as the pipeline gives it.
	ClassFrame = "frame"
)

// DefaultMaxBytes bounds the store when Options.MaxBytes is zero.
const DefaultMaxBytes = 256 << 20

const (
	replayDir = "replay"
	suffix    = ".json"
	tmpPrefix = ".tmp-"
)

// Errors callers classify with errors.Is.
var (
	ErrNotFound = errors.New("dead letter not found")
	ErrBadID    = errors.New("dead letter id is not valid")
)

var (
	putTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_deadletters_total",
		Help: "Entries put into the dead-letter store, by class.",
	}, []string{"class"})
	bytesGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "vigd_deadletters_bytes",
		Help: "Bytes held by the dead-letter store.",
	})
	evictedTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "vigd_deadletters_evicted_total",
		Help: "Entries dropped (oldest first) because the dead-letter store was over its size bound.",
	})
)

// Entry is one dead letter. ID and Time are set by Put when empty.
type Entry struct {
	// ID sorts by time: "20060102T150405.000000000Z-<random>".
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	Class string    `json:"class"`
	// Reason is why: the server's error and message, or the decoder's.
	Reason string `json:"reason"`
	// Where it happened: "observations/400" or "adapter/source@offset".
	Where string          `json:"where"`
	Data  json.RawMessage `json:"data"`
	// Replay is true for an entry waiting in replay/ (not stored in the
	// file; set when read).
	Replay bool `json:"replay,omitempty"`
}

// Filter selects entries; the zero value selects all.
type Filter struct {
	Class  string    // exact class, "" for any
	Reason string    // substring of Reason (case-insensitive), "" for any
	Since  time.Time // entries at or after, zero for any
}

func (f Filter) match(e *Entry) bool {
	if f.Class != "" && e.Class != f.Class {
		return false
	}
	if f.Reason != "" && !strings.Contains(strings.ToLower(e.Reason), strings.ToLower(f.Reason)) {
		return false
	}
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	return true
}

// Options of Open.
type Options struct {
	// MaxBytes bounds the sum of the entry files; 0 means DefaultMaxBytes.
	MaxBytes int64
	// Log receives evictions; nil discards.
	Log *logrus.Entry
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is a dead-letter folder. Its methods are safe for concurrent use;
// several processes may use one folder (the daemon and the CLI).
type Store struct {
	dir  string
	max  int64
	log  *logrus.Entry
	now  func() time.Time
	mu   sync.Mutex // serialises this process's writes and size accounting
	size int64
}

// Open opens (creating) the store in dir.
func Open(dir string, o Options) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, replayDir), 0o750); err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	s := &Store{dir: dir, max: o.MaxBytes, log: o.Log, now: o.Now}
	if s.max <= 0 {
		s.max = DefaultMaxBytes
	}
	if s.log == nil {
		l := logrus.New()
		l.Out = discard{}
		s.log = logrus.NewEntry(l)
	}
	if s.now == nil {
		s.now = time.Now
	}
	// Leftovers of a crash in the middle of a write are not entries.
	for _, d := range []string{dir, filepath.Join(dir, replayDir)} {
		tmps, _ := filepath.Glob(filepath.Join(d, tmpPrefix+"*"))
		for _, t := range tmps {
			_ = os.Remove(t)
		}
	}
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		s.size += f.size
	}
	bytesGauge.Set(float64(s.size))
	return s, nil
}

// Dir is the store's folder.
func (s *Store) Dir() string { return s.dir }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (s *Store) newID(t time.Time) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return t.UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(r[:])
}

// validID refuses anything that could name a file outside the store.
func validID(id string) bool {
	if id == "" || len(id) > 128 || strings.HasPrefix(id, ".") {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// Put stores e durably (it is on disk when Put returns) and returns it with
// its ID and Time. When the store goes over its bound the oldest entries
// are evicted.
func (s *Store) Put(e Entry) (Entry, error) {
	if e.Time.IsZero() {
		e.Time = s.now().UTC()
	}
	if e.ID == "" {
		e.ID = s.newID(e.Time)
	}
	if !validID(e.ID) {
		return e, fmt.Errorf("%w: %q", ErrBadID, e.ID)
	}
	if len(e.Data) == 0 {
		e.Data = json.RawMessage("null")
	}
	e.Replay = false
	b, err := json.Marshal(e)
	if err != nil {
		return e, fmt.Errorf("deadletter: encode: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := writeAtomic(s.dir, e.ID+suffix, b); err != nil {
		return e, err
	}
	putTotal.WithLabelValues(e.Class).Inc()
	s.size += int64(len(b))
	if s.size > s.max {
		s.evictLocked()
	}
	bytesGauge.Set(float64(s.size))
	return e, nil
}

// writeAtomic writes name in dir so that a crash leaves the old content or
// the new one: temporary file, fsync, rename, fsync of the folder.
func writeAtomic(dir, name string, b []byte) error {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("deadletter: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, name))
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("deadletter: write %s: %w", name, werr)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("deadletter: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("deadletter: sync %s: %w", dir, err)
	}
	return nil
}

type file struct {
	id     string
	path   string
	size   int64
	replay bool
}

// files lists every entry file of both folders, oldest first (IDs sort by
// time).
func (s *Store) files() ([]file, error) {
	var out []file
	for _, sub := range []string{"", replayDir} {
		d := filepath.Join(s.dir, sub)
		des, err := os.ReadDir(d)
		if err != nil {
			return nil, fmt.Errorf("deadletter: %w", err)
		}
		for _, de := range des {
			n := de.Name()
			if de.IsDir() || !strings.HasSuffix(n, suffix) || strings.HasPrefix(n, ".") {
				continue
			}
			info, err := de.Info()
			if err != nil {
				continue // removed meanwhile by another process
			}
			out = append(out, file{id: strings.TrimSuffix(n, suffix), path: filepath.Join(d, n), size: info.Size(), replay: sub != ""})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// evictLocked deletes the oldest entries until the store is within its
// bound. It rescans the folders because another process may have changed
// them.
func (s *Store) evictLocked() {
	files, err := s.files()
	if err != nil {
		s.log.WithError(err).Error("dead letter eviction failed")
		return
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	// Down to 90% of the bound, so that a store at its bound does not
	// rescan the folder on every Put.
	target := s.max - s.max/10
	var n int
	var freed int64
	for _, f := range files {
		if total <= target {
			break
		}
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		total -= f.size
		freed += f.size
		n++
		evictedTotal.Inc()
	}
	s.size = total
	if n > 0 {
		s.log.WithFields(logrus.Fields{"count": n, "bytes": freed, "max_bytes": s.max}).
			Error("dead letters evicted, store over its size bound")
	}
}

func readEntry(f file) (Entry, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Entry{}, fmt.Errorf("%w: %s", ErrNotFound, f.id)
		}
		return Entry{}, fmt.Errorf("deadletter: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{}, fmt.Errorf("deadletter: %s: %w", f.id, err)
	}
	e.Replay = f.replay
	return e, nil
}

// List returns the entries that match f, oldest first, including those
// waiting in replay/ (Replay set). Unreadable files are skipped.
func (s *Store) List(f Filter) ([]Entry, error) {
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, fl := range files {
		e, err := readEntry(fl)
		if err != nil {
			continue
		}
		if f.match(&e) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *Store) locate(id string) (file, error) {
	if !validID(id) {
		return file{}, fmt.Errorf("%w: %q", ErrBadID, id)
	}
	for _, sub := range []string{"", replayDir} {
		p := filepath.Join(s.dir, sub, id+suffix)
		if st, err := os.Stat(p); err == nil {
			return file{id: id, path: p, size: st.Size(), replay: sub != ""}, nil
		}
	}
	return file{}, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// Get reads one entry.
func (s *Store) Get(id string) (Entry, error) {
	f, err := s.locate(id)
	if err != nil {
		return Entry{}, err
	}
	return readEntry(f)
}

// Delete removes an entry (from the store or replay/).
func (s *Store) Delete(id string) error {
	f, err := s.locate(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(f.path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return fmt.Errorf("deadletter: %w", err)
	}
	s.size -= f.size
	if s.size < 0 {
		s.size = 0
	}
	bytesGauge.Set(float64(s.size))
	return syncDir(filepath.Dir(f.path))
}

// Purge deletes every entry that matches f and returns how many.
func (s *Store) Purge(f Filter) (int, error) {
	es, err := s.List(f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range es {
		if err := s.Delete(e.ID); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return n, err
		}
		n++
	}
	return n, nil
}

// MarkReplay moves an entry into replay/, where the daemon picks it up.
// Marking an entry that is already there is not an error.
func (s *Store) MarkReplay(id string) error {
	f, err := s.locate(id)
	if err != nil {
		return err
	}
	if f.replay {
		return nil
	}
	dst := filepath.Join(s.dir, replayDir, id+suffix)
	if err := os.Rename(f.path, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return fmt.Errorf("deadletter: %w", err)
	}
	if err := syncDir(filepath.Join(s.dir, replayDir)); err != nil {
		return err
	}
	return syncDir(s.dir)
}

// TakeReplays lists the entries waiting in replay/, oldest first. They stay
// there until Deleted, so a crash while replaying replays them again.
func (s *Store) TakeReplays() ([]Entry, error) {
	es, err := s.List(Filter{})
	if err != nil {
		return nil, err
	}
	out := es[:0]
	for _, e := range es {
		if e.Replay {
			out = append(out, e)
		}
	}
	return out, nil
}

// Size is the bytes the store holds as this process last counted them.
func (s *Store) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}
