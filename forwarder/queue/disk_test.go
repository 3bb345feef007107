package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func openDisk(t testing.TB, dir string, opts Options) *Disk {
	t.Helper()
	if opts.Name == "" {
		opts.Name = t.Name()
	}
	if opts.Log == nil {
		opts.Log = quietLog()
	}
	d, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openDisk(t, dir, Options{})
	if _, err := Open(dir, Options{Log: quietLog()}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open of one folder: %v, want ErrLocked", err)
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"": Block, "block": Block, "drop-oldest": DropOldest,
		"drop-newest": DropNewest, "reject": DropNewest} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParsePolicy("drop-all"); err == nil {
		t.Error("ParsePolicy accepted drop-all")
	}
}

// writeDamaged writes a single-segment queue with recs, one append each,
// and returns its folder, the segment path, the pristine bytes and the
// end offset of each record.
func writeSegment(t *testing.T, recs []Record) (string, string, []byte, []int64) {
	t.Helper()
	dir := t.TempDir()
	d := openDisk(t, dir, Options{})
	mustAppend(t, d, recs...)
	es := readAll(t, d, Position{})
	checkEntries(t, es, recs)
	d.Close()
	ends := make([]int64, len(es))
	for i, e := range es {
		ends[i] = e.Next.Offset
	}
	seg := filepath.Join(dir, segName(es[0].Pos.Segment))
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != ends[len(ends)-1] {
		t.Fatalf("segment is %d bytes, records end at %d", len(b), ends[len(ends)-1])
	}
	return dir, seg, b, ends
}

// damageCase is one way to damage the newest segment: the file content to
// write, which records must come back, and how many damaged regions Open
// must count.
type damageCase struct {
	name      string
	data      []byte
	want      []int // indexes of records that must be read back, in order
	corrupted int64
	// middle: the damage is followed by valid records, so the file is
	// kept as is (and found again by the next Open) rather than cut.
	middle bool
}

// TestTornTail damages the newest segment in many ways (truncation at
// every byte of the last records, garbage over every byte of the last
// records, random truncations and garbage spans), reopens, and checks that
// exactly the undamaged records come back, the damage is counted, and the
// queue takes new records after the repair.
func TestTornTail(t *testing.T) {
	const n = 60
	recs := testRecs(0, n)
	dir, seg, pristine, ends := writeSegment(t, recs)
	rng := rand.New(rand.NewPCG(1, 2))
	startOf := func(i int) int64 {
		if i == 0 {
			return 0
		}
		return ends[i-1]
	}
	truncCase := func(x int64) damageCase {
		c := damageCase{name: fmt.Sprintf("truncate@%d", x), data: pristine[:x]}
		boundary := x == 0
		for i := range ends {
			if ends[i] <= x {
				c.want = append(c.want, i)
			}
			boundary = boundary || ends[i] == x
		}
		if !boundary {
			c.corrupted = 1
		}
		return c
	}
	garbleCase := func(a, b int64) damageCase {
		data := slices.Clone(pristine)
		for i := a; i < b; i++ {
			data[i] ^= byte(1 + rng.IntN(255)) // every byte changes
		}
		c := damageCase{name: fmt.Sprintf("garble@%d-%d", a, b), data: data, corrupted: 1}
		for i := range ends {
			if ends[i] <= a || startOf(i) >= b {
				c.want = append(c.want, i)
			}
			c.middle = c.middle || startOf(i) >= b
		}
		return c
	}
	var cases []damageCase
	// Every byte offset of the last three records, and random ones.
	for x := startOf(n - 3); x < int64(len(pristine)); x++ {
		cases = append(cases, truncCase(x))
	}
	for range 40 {
		cases = append(cases, truncCase(rng.Int64N(int64(len(pristine)))))
	}
	// One garbled byte at every offset of the last two records, then
	// random spans anywhere (records after the span are recovered).
	for x := startOf(n - 2); x < int64(len(pristine)); x++ {
		cases = append(cases, garbleCase(x, x+1))
	}
	for range 40 {
		a := rng.Int64N(int64(len(pristine)))
		cases = append(cases, garbleCase(a, min(a+1+rng.Int64N(64), int64(len(pristine)))))
	}
	// Garbage appended after the last record (a write of which only a
	// few sectors landed), and a truncation inside garbage.
	tail := append(slices.Clone(pristine), bytes.Repeat([]byte{0xA7, 0x13, 0, 0, 0}, 9)...)
	cases = append(cases, damageCase{name: "garbage after last", data: tail, want: seq(0, n), corrupted: 1})
	zeros := append(slices.Clone(pristine), make([]byte, 4096)...)
	cases = append(cases, damageCase{name: "zeros after last", data: zeros, want: seq(0, n), corrupted: 1})

	for k, c := range cases {
		if err := os.WriteFile(seg, c.data, 0o640); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(filepath.Join(dir, "quarantine"))
		logger, hook := logtest.NewNullLogger()
		d, err := Open(dir, Options{Name: "torn", Log: logrus.NewEntry(logger)})
		if err != nil {
			t.Fatalf("%s: open refused: %v", c.name, err)
		}
		want := make([]Record, len(c.want))
		for i, idx := range c.want {
			want[i] = recs[idx]
		}
		got := readAll(t, d, Position{})
		if len(got) != len(want) {
			d.Close()
			t.Fatalf("%s: read %d records, want %d", c.name, len(got), len(want))
		}
		checkEntries(t, got, want)
		if st := d.Stats(); st.Corrupted != c.corrupted || st.Records != int64(len(want)) {
			d.Close()
			t.Fatalf("%s: stats %+v, want corrupted %d, records %d", c.name, st, c.corrupted, len(want))
		}
		if c.corrupted > 0 && len(hook.AllEntries()) == 0 {
			t.Fatalf("%s: damage not logged", c.name)
		}
		for _, e := range hook.AllEntries() {
			if e.Level <= logrus.WarnLevel && e.Data["segment"] == nil {
				t.Fatalf("%s: warning without segment field: %v", c.name, e.Message)
			}
		}
		// The repaired queue takes new records, and the repair holds.
		if k%8 == 0 || c.corrupted == 0 {
			extra := testRec(1000 + k)
			mustAppend(t, d, extra)
			d.Close()
			d2, err := Open(dir, Options{Name: "torn", Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			checkEntries(t, readAll(t, d2, Position{}), append(want, extra))
			st := d2.Stats()
			if !c.middle && st.Corrupted != 0 {
				t.Fatalf("%s: second open still finds damage: %+v", c.name, st)
			}
			if c.middle && (st.Corrupted != 1 || st.Quarantined != 0) {
				t.Fatalf("%s: second open: %+v, want the damage found, not quarantined again", c.name, st)
			}
			d2.Close()
		}
		d.Close()
	}
	t.Logf("%d damage cases over a %d-byte segment of %d records", len(cases), len(pristine), n)
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// multiSegment writes n records in appends of 10 into 4 KiB segments and
// returns the folder, the records and their entries.
func multiSegment(t *testing.T, n int) (string, []Record, []Entry) {
	t.Helper()
	dir := t.TempDir()
	d := openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	recs := testRecs(0, n)
	for i := 0; i < n; i += 10 {
		mustAppend(t, d, recs[i:min(i+10, n)]...)
	}
	es := readAll(t, d, Position{})
	checkEntries(t, es, recs)
	d.Close()
	return dir, recs, es
}

// bySegment groups entry indexes by segment number.
func bySegment(es []Entry) ([]uint64, map[uint64][]int) {
	m := map[uint64][]int{}
	var nums []uint64
	for i, e := range es {
		if _, ok := m[e.Pos.Segment]; !ok {
			nums = append(nums, e.Pos.Segment)
		}
		m[e.Pos.Segment] = append(m[e.Pos.Segment], i)
	}
	return nums, m
}

func without(recs []Record, skip ...int) []Record {
	var out []Record
	for i, r := range recs {
		if !slices.Contains(skip, i) {
			out = append(out, r)
		}
	}
	return out
}

func TestQuarantineGarbledMiddleSegment(t *testing.T) {
	dir, recs, es := multiSegment(t, 400)
	nums, idx := bySegment(es)
	if len(nums) < 5 {
		t.Fatalf("only %d segments", len(nums))
	}
	victim := nums[2]
	bad := idx[victim][len(idx[victim])/2] // a record in the middle of it
	path := filepath.Join(dir, segName(victim))
	data, _ := os.ReadFile(path)
	data[es[bad].Pos.Offset+headerSize+3] ^= 0x55
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}

	logger, hook := logtest.NewNullLogger()
	name := "quarantine-" + t.Name()
	d := openDisk(t, dir, Options{Name: name, SegmentSize: minSegmentSize, Log: logrus.NewEntry(logger)})
	q, err := os.ReadFile(filepath.Join(dir, "quarantine", segName(victim)))
	if err != nil || !bytes.Equal(q, data) {
		t.Fatalf("quarantine copy missing or different: %v", err)
	}
	// Every other record comes back, those after the damage in the same
	// segment included.
	checkEntries(t, readAll(t, d, Position{}), without(recs, bad))
	st := d.Stats()
	if st.Corrupted != 1 || st.Quarantined != 1 || st.Records != int64(len(recs)-1) {
		t.Fatalf("stats %+v", st)
	}
	if v := counterValue(t, d.m.quarantined); v != 1 {
		t.Fatalf("vigd_queue_quarantined_segments_total = %v", v)
	}
	var logged bool
	for _, e := range hook.AllEntries() {
		logged = logged || (e.Level == logrus.ErrorLevel && e.Data["segment"] == segName(victim))
	}
	if !logged {
		t.Fatal("no error log naming the segment")
	}
	// Consuming it deletes it from the queue; the quarantined copy stays.
	if err := d.Commit(es[len(es)-1].Next); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("committed segment still there: %v", err)
	}
	if q2, err := os.ReadFile(filepath.Join(dir, "quarantine", segName(victim))); err != nil || !bytes.Equal(q2, data) {
		t.Fatalf("quarantine copy lost after commit: %v", err)
	}
}

func TestQuarantineUnreadableSegments(t *testing.T) {
	dir, recs, es := multiSegment(t, 400)
	nums, idx := bySegment(es)
	// Segment 1: pure garbage, no valid frame. Segment 3: replaced by a
	// folder, which cannot be read as a file.
	garbage := make([]byte, 3000)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(dir, segName(nums[1])), garbage, 0o640); err != nil {
		t.Fatal(err)
	}
	p3 := filepath.Join(dir, segName(nums[3]))
	if err := os.Remove(p3); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p3, 0o750); err != nil {
		t.Fatal(err)
	}
	d := openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	for _, n := range []uint64{nums[1], nums[3]} {
		if _, err := os.Stat(filepath.Join(dir, segName(n))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("segment %d still in the queue folder: %v", n, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "quarantine", segName(n))); err != nil {
			t.Errorf("segment %d not in quarantine: %v", n, err)
		}
	}
	gone := append(slices.Clone(idx[nums[1]]), idx[nums[3]]...)
	checkEntries(t, readAll(t, d, Position{}), without(recs, gone...))
	if st := d.Stats(); st.Quarantined != 2 || st.Corrupted != 2 || st.Records != int64(len(recs)-len(gone)) {
		t.Fatalf("stats %+v", st)
	}
}

// TestGarbledWhileOpen damages a sealed segment after Open scanned it (bit
// rot at run time): Read skips the damage, reports it once, and reads the
// rest.
func TestGarbledWhileOpen(t *testing.T) {
	dir, recs, es := multiSegment(t, 300)
	nums, idx := bySegment(es)
	d := openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	victim := nums[1]
	bad := idx[victim][3]
	f, err := os.OpenFile(filepath.Join(dir, segName(victim)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("rot"), es[bad].Pos.Offset+headerSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	checkEntries(t, readAll(t, d, Position{}), without(recs, bad))
	checkEntries(t, readAll(t, d, Position{}), without(recs, bad)) // reported once
	if st := d.Stats(); st.Corrupted != 1 || st.Quarantined != 1 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "quarantine", segName(victim))); err != nil {
		t.Fatal(err)
	}
}

func TestGroupCommit(t *testing.T) {
	d := openDisk(t, t.TempDir(), Options{})
	const n = 200
	before := d.Stats().Fsyncs
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := d.Append(context.Background(), testRec(i)); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	fsyncs := d.Stats().Fsyncs - before
	t.Logf("%d concurrent single-record appends used %d fsyncs", n, fsyncs)
	if fsyncs > n/4 {
		t.Fatalf("%d appends used %d fsyncs: no group commit", n, fsyncs)
	}
	if got := len(readAll(t, d, Position{})); got != n {
		t.Fatalf("read %d records, want %d", got, n)
	}
	if v := counterValue(t, d.m.fsyncs); v != float64(d.Stats().Fsyncs) {
		t.Fatalf("fsync metric %v, stats %d", v, d.Stats().Fsyncs)
	}
}

// fill appends records of a fixed size until the next would not fit
// under MaxBytes, and returns them.
func fill(t *testing.T, d *Disk, from int) []Record {
	t.Helper()
	var out []Record
	for i := from; ; i++ {
		r := Record{Kind: Observation, Body: bytes.Repeat([]byte{byte(i)}, 200)}
		size := int64(headerSize + len(appendPayload(nil, &r, 1_700_000_000_000_000_000)))
		if d.Stats().Bytes+size > d.opts.MaxBytes {
			return out
		}
		r.Time = 1_700_000_000_000_000_000
		mustAppend(t, d, r)
		out = append(out, r)
	}
}

func TestBlockPolicy(t *testing.T) {
	d := openDisk(t, t.TempDir(), Options{MaxBytes: 8 << 10, Policy: Block})
	first := fill(t, d, 0)
	extra := first[0] // same size: cannot fit
	done := make(chan error, 1)
	go func() { done <- d.Append(context.Background(), extra) }()
	select {
	case err := <-done:
		t.Fatalf("append on a full queue returned %v instead of blocking", err)
	case <-time.After(100 * time.Millisecond):
	}
	es, _ := d.Read(Position{}, 5, 0)
	if err := d.Commit(es[4].Next); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("append still blocked after commit freed space")
	}
	want := append(slices.Clone(first[5:]), extra)
	checkEntries(t, readAll(t, d, Position{}), want)

	// Full again: a cancelled context ends the wait, and the record is not
	// written.
	want = append(want, fill(t, d, 100)...)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	if err := d.Append(ctx, first[1]); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with cancelled context: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel2()
	if err := d.Append(ctx2, first[2], first[3]); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append past deadline: %v", err)
	}
	checkEntries(t, readAll(t, d, Position{}), want)
	if st := d.Stats(); st.Evicted != 0 || st.Bytes > d.opts.MaxBytes {
		t.Fatalf("stats %+v", st)
	}
	// Too large for the queue at all: refused, not blocked for ever.
	big := Record{Body: make([]byte, 9<<10)}
	if err := d.Append(context.Background(), big); !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrFull) {
		t.Fatalf("oversized append: %v", err)
	}
}

func TestDropOldestPolicy(t *testing.T) {
	name := "dropoldest-" + t.Name()
	d := openDisk(t, t.TempDir(), Options{Name: name, MaxBytes: 16 << 10, Policy: DropOldest})
	recs := testRecs(0, 500)
	mustAppend(t, d, recs[:10]...)
	es := readAll(t, d, Position{})
	if err := d.Commit(es[9].Next); err != nil { // committed: not counted when evicted
		t.Fatal(err)
	}
	for i := 10; i < len(recs); i += 5 {
		mustAppend(t, d, recs[i:i+5]...)
	}
	got := readAll(t, d, Position{})
	st := d.Stats()
	kept := len(got)
	if kept == 0 || kept > 490 {
		t.Fatalf("kept %d records", kept)
	}
	checkEntries(t, got, recs[500-kept:]) // the newest survive, in order
	if st.Evicted != int64(490-kept) || st.Records != int64(kept) || st.Bytes > 16<<10 {
		t.Fatalf("stats %+v, kept %d: want %d evicted", st, kept, 490-kept)
	}
	if v := counterValue(t, d.m.evicted); v != float64(st.Evicted) {
		t.Fatalf("evicted metric %v, stats %d", v, st.Evicted)
	}
	t.Logf("kept %d of 490 uncommitted records in %d bytes, evicted %d", kept, st.Bytes, st.Evicted)
}

func TestDropNewestPolicy(t *testing.T) {
	d := openDisk(t, t.TempDir(), Options{MaxBytes: 8 << 10, Policy: DropNewest})
	var accepted []Record
	var err error
	for i := 0; i < 1000; i++ {
		if err = d.Append(context.Background(), testRec(i)); err != nil {
			break
		}
		accepted = append(accepted, testRec(i))
	}
	if !errors.Is(err, ErrFull) || errors.Is(err, ErrTooLarge) {
		t.Fatalf("append on a full queue: %v, want ErrFull", err)
	}
	es := readAll(t, d, Position{})
	checkEntries(t, es, accepted)
	if st := d.Stats(); st.Rejected != 1 || st.Evicted != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := d.Commit(es[len(es)-1].Next); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, d, testRec(5000))
	checkEntries(t, readAll(t, d, Position{}), []Record{testRec(5000)})
}

func TestAgeEviction(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	d := openDisk(t, t.TempDir(), Options{MaxAge: time.Hour, CheckInterval: 5 * time.Millisecond,
		SegmentSize: minSegmentSize, now: now})
	waitEvicted := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for d.Stats().Evicted < n {
			if time.Now().After(deadline) {
				t.Fatalf("evicted %d, want %d", d.Stats().Evicted, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	old := testRecs(0, 100)
	for i := range old {
		old[i].Time = clock.Load() - int64(2*time.Hour)
	}
	for i := 0; i < len(old); i += 10 {
		mustAppend(t, d, old[i:i+10]...)
	}
	waitEvicted(100)
	if st := d.Stats(); st.Records != 0 || st.Evicted != 100 {
		t.Fatalf("stats after age eviction %+v", st)
	}
	fresh := testRecs(100, 20)
	for i := range fresh {
		fresh[i].Time = 0 // stamped by the queue's clock
	}
	mustAppend(t, d, fresh...)
	es := readAll(t, d, Position{})
	if len(es) != 20 || es[0].Rec.Time != clock.Load() {
		t.Fatalf("read %d fresh records, first time %d", len(es), es[0].Rec.Time)
	}
	clock.Add(int64(61 * time.Minute))
	waitEvicted(120)
	if got := readAll(t, d, Position{}); len(got) != 0 {
		t.Fatalf("%d records older than MaxAge still readable", len(got))
	}
	last := testRec(7)
	last.Time = clock.Load()
	mustAppend(t, d, last)
	checkEntries(t, readAll(t, d, Position{}), []Record{last})
}

// faultFile fails writes (after writing half, like a disk filling up
// mid-write), syncs and truncates on demand.
type faultFile struct {
	segFile
	f *faults
}

type faults struct {
	write, sync, truncate atomic.Pointer[error]
}

func (f *faults) set(p *atomic.Pointer[error], err error) {
	if err == nil {
		p.Store(nil)
		return
	}
	p.Store(&err)
}

func (ff faultFile) WriteAt(p []byte, off int64) (int, error) {
	if e := ff.f.write.Load(); e != nil {
		n, _ := ff.segFile.WriteAt(p[:len(p)/2], off)
		return n, &os.PathError{Op: "write", Path: "segment", Err: *e}
	}
	return ff.segFile.WriteAt(p, off)
}

func (ff faultFile) Sync() error {
	if e := ff.f.sync.Load(); e != nil {
		return &os.PathError{Op: "sync", Path: "segment", Err: *e}
	}
	return ff.segFile.Sync()
}

func (ff faultFile) Truncate(n int64) error {
	if e := ff.f.truncate.Load(); e != nil {
		return &os.PathError{Op: "truncate", Path: "segment", Err: *e}
	}
	return ff.segFile.Truncate(n)
}

// TestWriteFaults injects a full disk, a read-only disk and a failing
// fsync into Append: each fails with the system error, leaves no half
// record, and the next append after the fault succeeds without reopening.
func TestWriteFaults(t *testing.T) {
	cases := []struct {
		name      string
		errno     syscall.Errno
		inject    func(f *faults, err error)
		truncFail bool
	}{
		{"disk full", syscall.ENOSPC, func(f *faults, err error) { f.set(&f.write, err) }, false},
		{"disk full, truncate fails too", syscall.ENOSPC, func(f *faults, err error) {
			f.set(&f.write, err)
			f.set(&f.truncate, err)
		}, true},
		{"read-only", syscall.EROFS, func(f *faults, err error) { f.set(&f.write, err) }, false},
		{"fsync fails", syscall.EIO, func(f *faults, err error) { f.set(&f.sync, err) }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			var f faults
			opts := Options{wrapFile: func(s segFile) segFile { return faultFile{s, &f} }}
			d := openDisk(t, dir, opts)
			want := testRecs(0, 10)
			for _, r := range want {
				mustAppend(t, d, r)
			}
			c.inject(&f, c.errno)
			var wg sync.WaitGroup
			for i := 0; i < 5; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := d.Append(context.Background(), testRecs(100+10*i, 3)...)
					if !errors.Is(err, c.errno) {
						t.Errorf("append during fault: %v, want %v", err, c.errno)
					}
				}()
			}
			wg.Wait()
			if err := d.Health(); !errors.Is(err, c.errno) {
				t.Fatalf("Health() = %v during fault", err)
			}
			if st := d.Stats(); st.Records != 10 {
				t.Fatalf("stats during fault %+v", st)
			}
			checkEntries(t, readAll(t, d, Position{}), want)
			c.inject(&f, nil)
			more := testRecs(10, 5)
			mustAppend(t, d, more...)
			want = append(want, more...)
			if err := d.Health(); err != nil {
				t.Fatalf("Health() = %v after recovery", err)
			}
			checkEntries(t, readAll(t, d, Position{}), want)
			d.Close()
			d2 := openDisk(t, dir, Options{})
			checkEntries(t, readAll(t, d2, Position{}), want)
			if st := d2.Stats(); st.Corrupted != 0 {
				t.Fatalf("reopen after fault found damage: %+v", st)
			}
		})
	}
}

// TestDiskFullTmpfs fills a real 1 MiB tmpfs. It needs root (mount); it is
// skipped otherwise, TestWriteFaults covers the same paths by injection.
func TestDiskFullTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	})
	dir := filepath.Join(mnt, "q")
	d := openDisk(t, dir, Options{SegmentSize: 64 << 10})
	var want []Record
	var err error
	for i := 0; i < 2000; i++ {
		r := testRec(i)
		r.Body = bytes.Repeat([]byte{byte(i)}, 3000)
		if err = d.Append(context.Background(), r); err != nil {
			break
		}
		want = append(want, r)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full tmpfs: %v, want ENOSPC", err)
	}
	if !errors.Is(d.Health(), syscall.ENOSPC) {
		t.Fatalf("Health() = %v", d.Health())
	}
	es := readAll(t, d, Position{})
	checkEntries(t, es, want)
	t.Logf("tmpfs full after %d records", len(want))
	// Space returns when the forwarder consumes records.
	half := len(es) / 2
	if err := d.Commit(es[half-1].Next); err != nil {
		t.Fatalf("commit on a full disk: %v", err)
	}
	after := testRec(9999)
	mustAppend(t, d, after)
	if d.Health() != nil {
		t.Fatalf("Health() = %v after recovery", d.Health())
	}
	want = append(want[half:], after)
	checkEntries(t, readAll(t, d, Position{}), want)
	d.Close()
	d2 := openDisk(t, dir, Options{SegmentSize: 64 << 10})
	checkEntries(t, readAll(t, d2, Position{}), want)
	if st := d2.Stats(); st.Corrupted != 0 {
		t.Fatalf("reopen found damage: %+v", st)
	}
}

// TestCursorGarbled: a torn or damaged newest cursor slot means the
// previous position (the other slot); both damaged means reading from the
// oldest record again (duplicates, not loss).
func TestCursorGarbled(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, Options{})
	recs := testRecs(0, 10)
	mustAppend(t, d, recs...)
	es := readAll(t, d, Position{})
	for _, i := range []int{1, 4} {
		if err := d.Commit(es[i].Next); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	path := filepath.Join(dir, "cursor")
	b, _ := os.ReadFile(path)
	if gen, p, err := decodeCursorFile(b); err != nil || p != es[4].Next || gen != 3 {
		t.Fatalf("cursor file holds %v gen %d, %v", p, gen, err)
	}
	// Generation 3 is in slot 1: garble it, as a torn write would.
	b[cursorSlot+7] ^= 1
	os.WriteFile(path, b, 0o640)
	d2 := openDisk(t, dir, Options{})
	if d2.Cursor() != es[1].Next {
		t.Fatalf("cursor %v after the newest slot was garbled, want the previous %v", d2.Cursor(), es[1].Next)
	}
	checkEntries(t, readAll(t, d2, d2.Cursor()), recs[2:])
	// A commit after that writes the garbled slot again, not the good one.
	if err := d2.Commit(es[6].Next); err != nil {
		t.Fatal(err)
	}
	d2.Close()
	b, _ = os.ReadFile(path)
	if _, p, err := decodeCursorFile(b); err != nil || p != es[6].Next {
		t.Fatalf("cursor file holds %v, %v", p, err)
	}
	b[3] ^= 1
	b[cursorSlot+3] ^= 1
	os.WriteFile(path, b, 0o640)
	d3 := openDisk(t, dir, Options{})
	checkEntries(t, readAll(t, d3, d3.Cursor()), recs)
	if d3.Stats().Corrupted != 1 {
		t.Fatalf("stats %+v", d3.Stats())
	}
}

// TestCursorMigration: a cursor file of the old single-record format is
// read and replaced by the two-slot file at open.
func TestCursorMigration(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, Options{})
	recs := testRecs(0, 10)
	mustAppend(t, d, recs...)
	es := readAll(t, d, Position{})
	d.Close()
	path := filepath.Join(dir, "cursor")
	if err := os.WriteFile(path, encodeCursor(es[3].Next), 0o640); err != nil {
		t.Fatal(err)
	}
	d2 := openDisk(t, dir, Options{})
	if d2.Cursor() != es[3].Next {
		t.Fatalf("cursor %v from the old file, want %v", d2.Cursor(), es[3].Next)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != cursorFileSize {
		t.Fatalf("cursor file not migrated: %v %v", fi, err)
	}
	checkEntries(t, readAll(t, d2, d2.Cursor()), recs[4:])
	if err := d2.Commit(es[5].Next); err != nil {
		t.Fatal(err)
	}
	d2.Close()
	d3 := openDisk(t, dir, Options{})
	checkEntries(t, readAll(t, d3, d3.Cursor()), recs[6:])
}

// TestCommitDeletesSegments: committed segments disappear from the folder,
// and a reopen after a crash between saving the cursor and deleting them
// deletes them.
func TestCommitDeletesSegments(t *testing.T) {
	dir, recs, es := multiSegment(t, 300)
	nums, _ := bySegment(es)
	d := openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	mid := len(es) / 2
	if err := d.Commit(es[mid].Next); err != nil {
		t.Fatal(err)
	}
	for _, p := range segFiles(t, dir) {
		n := segNum(t, p)
		if n < es[mid].Next.Segment {
			t.Fatalf("segment %d before the cursor %v still there", n, es[mid].Next)
		}
	}
	if st := d.Stats(); st.Records != int64(len(recs)-mid-1) || st.Segments != len(segFiles(t, dir)) {
		t.Fatalf("stats %+v", st)
	}
	d.Close()
	// Put a committed segment back as if the delete had not happened.
	if err := os.WriteFile(filepath.Join(dir, segName(nums[0])), []byte("left over"), 0o640); err != nil {
		t.Fatal(err)
	}
	d2 := openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	checkEntries(t, readAll(t, d2, d2.Cursor()), recs[mid+1:])
	if _, err := os.Stat(filepath.Join(dir, segName(nums[0]))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("left-over committed segment not deleted: %v", err)
	}
}

func segNum(t testing.TB, path string) uint64 {
	t.Helper()
	var n uint64
	if _, err := fmt.Sscanf(filepath.Base(path), "%020d.seg", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFaultOnNewSegment: the first write into a fresh segment fails,
// leaving an empty newest file; after a restart appends go into it with
// the right sequence numbers and everything reads back.
func TestFaultOnNewSegment(t *testing.T) {
	dir := t.TempDir()
	var f faults
	opts := Options{SegmentSize: minSegmentSize, wrapFile: func(s segFile) segFile { return faultFile{s, &f} }}
	d := openDisk(t, dir, opts)
	var want []Record
	for i := 0; len(segFiles(t, dir)) < 2; i++ {
		mustAppend(t, d, testRec(i))
		want = append(want, testRec(i))
	}
	// Fill the second segment up to where the next append rolls.
	for i := len(want); ; i++ {
		r := testRec(i)
		sz := int64(headerSize + len(appendPayload(nil, &r, r.Time)))
		if d.activeMeta.size+sz > minSegmentSize {
			break
		}
		mustAppend(t, d, r)
		want = append(want, r)
	}
	f.set(&f.write, syscall.ENOSPC)
	if err := d.Append(context.Background(), testRec(500)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append: %v", err)
	}
	files := segFiles(t, dir)
	if fi, err := os.Stat(files[len(files)-1]); len(files) != 3 || err != nil || fi.Size() != 0 {
		t.Fatalf("want an empty third segment, have %v (%v)", files, err)
	}
	d.Close()
	d = openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	more := testRecs(600, 3)
	mustAppend(t, d, more...)
	want = append(want, more...)
	d.Close()
	d = openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	checkEntries(t, readAll(t, d, Position{}), want)
	if st := d.Stats(); st.Corrupted != 0 || st.Records != int64(len(want)) {
		t.Fatalf("stats %+v", st)
	}
}

// TestNewestPutAside: when the newest segment is unreadable, the one
// before it (whose end is garbled) is kept as it is and appends start a
// new segment.
func TestNewestPutAside(t *testing.T) {
	dir, recs, es := multiSegment(t, 300)
	nums, idx := bySegment(es)
	n := len(nums)
	prev := nums[n-2]
	lastRec := idx[prev][len(idx[prev])-1]
	path := filepath.Join(dir, segName(prev))
	data, _ := os.ReadFile(path)
	data[len(data)-2] ^= 0xff // garble the end of the last record
	os.WriteFile(path, data, 0o640)
	newest := filepath.Join(dir, segName(nums[n-1]))
	os.Remove(newest)
	os.Mkdir(newest, 0o750)

	d := openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	want := recs[:lastRec]
	checkEntries(t, readAll(t, d, Position{}), want)
	extra := testRec(1000)
	mustAppend(t, d, extra)
	if b, _ := os.ReadFile(path); !bytes.Equal(b, data) {
		t.Fatal("the segment with the garbled end was written to")
	}
	want = append(slices.Clone(want), extra)
	checkEntries(t, readAll(t, d, Position{}), want)
	d.Close()
	d = openDisk(t, dir, Options{SegmentSize: minSegmentSize})
	checkEntries(t, readAll(t, d, Position{}), want)
}

// TestCloseWakesBlockedAppend: Close answers an Append waiting for space.
func TestCloseWakesBlockedAppend(t *testing.T) {
	d := openDisk(t, t.TempDir(), Options{MaxBytes: 8 << 10, Policy: Block})
	first := fill(t, d, 0)
	done := make(chan error, 1)
	go func() { done <- d.Append(context.Background(), first[0]) }()
	time.Sleep(50 * time.Millisecond)
	d.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked append after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close did not wake the blocked append")
	}
}
