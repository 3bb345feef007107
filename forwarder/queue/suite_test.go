package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// impl is one Queue implementation under the suite. reopen is nil when it
// does not persist.
type impl struct {
	open   func(t *testing.T) Queue
	reopen func(t *testing.T, q Queue) Queue
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}

func diskImpl(opts Options) impl {
	return impl{
		open: func(t *testing.T) Queue {
			t.Helper()
			dir := t.TempDir()
			o := opts
			o.Name = t.Name()
			o.Log = quietLog()
			d, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			return d
		},
		reopen: func(t *testing.T, q Queue) Queue {
			t.Helper()
			d := q.(*Disk)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			n, err := Open(d.Dir(), d.opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			return n
		},
	}
}

func memoryImpl() impl {
	return impl{open: func(t *testing.T) Queue {
		m := NewMemory(Options{})
		t.Cleanup(func() { m.Close() })
		return m
	}}
}

func TestSuiteDisk(t *testing.T) { runSuite(t, diskImpl(Options{})) }

// Small segments make every test cross segment boundaries.
func TestSuiteDiskSmallSegments(t *testing.T) {
	runSuite(t, diskImpl(Options{SegmentSize: minSegmentSize}))
}

func TestSuiteMemory(t *testing.T) { runSuite(t, memoryImpl()) }

// testRec is record i of a deterministic sequence: bodies of varying
// length, a few devices, every field set.
func testRec(i int) Record {
	return Record{
		Kind:       Kind(1 + i%3),
		DeviceID:   fmt.Sprintf("dev-%d", i%7),
		CustomerID: "cust-1",
		Ref:        fmt.Sprintf("ds-%d", i%11),
		Time:       1_700_000_000_000_000_000 + int64(i)*1000,
		Body:       []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", i%37))),
	}
}

func testRecs(from, n int) []Record {
	out := make([]Record, n)
	for i := range out {
		out[i] = testRec(from + i)
	}
	return out
}

func mustAppend(t testing.TB, q Queue, recs ...Record) {
	t.Helper()
	if err := q.Append(context.Background(), recs...); err != nil {
		t.Fatalf("append: %v", err)
	}
}

// readAll reads everything from pos in batches of 64.
func readAll(t testing.TB, q Queue, from Position) []Entry {
	t.Helper()
	var out []Entry
	for {
		es, err := q.Read(from, 64, 0)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if len(es) == 0 {
			return out
		}
		out = append(out, es...)
		from = es[len(es)-1].Next
	}
}

func sameRecord(a, b Record) bool {
	return a.Kind == b.Kind && a.DeviceID == b.DeviceID && a.CustomerID == b.CustomerID &&
		a.Ref == b.Ref && a.Time == b.Time && bytes.Equal(a.Body, b.Body)
}

// checkEntries asserts the entries hold exactly want, in order, as one
// contiguous run of the log.
func checkEntries(t testing.TB, got []Entry, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if !sameRecord(got[i].Rec, want[i]) {
			t.Fatalf("record %d: got %+v, want %+v", i, got[i].Rec, want[i])
		}
		if !got[i].Pos.Less(got[i].Next) {
			t.Fatalf("record %d: Next %v not after Pos %v", i, got[i].Next, got[i].Pos)
		}
		if i > 0 && !got[i-1].Pos.Less(got[i].Pos) {
			t.Fatalf("record %d: Pos %v not after the previous %v", i, got[i].Pos, got[i-1].Pos)
		}
	}
}

func runSuite(t *testing.T, im impl) {
	t.Run("OrderAndFields", func(t *testing.T) {
		q := im.open(t)
		want := testRecs(0, 50)
		for i := 0; i < 20; i++ {
			mustAppend(t, q, want[i])
		}
		mustAppend(t, q, want[20:]...)
		checkEntries(t, readAll(t, q, Position{}), want)
	})

	t.Run("EmptyAndZeroTime", func(t *testing.T) {
		q := im.open(t)
		if es, err := q.Read(Position{}, 10, 0); err != nil || len(es) != 0 {
			t.Fatalf("empty queue read %v, %v", es, err)
		}
		if st := q.Stats(); st.Records != 0 || st.Bytes != 0 || !st.Oldest.IsZero() {
			t.Fatalf("empty stats %+v", st)
		}
		mustAppend(t, q) // no records: no-op
		before := time.Now().UnixNano()
		mustAppend(t, q, Record{Kind: Raw, Body: nil}, Record{Kind: Alarm, Body: []byte{}})
		after := time.Now().UnixNano()
		es := readAll(t, q, Position{})
		if len(es) != 2 {
			t.Fatalf("read %d records, want 2", len(es))
		}
		for _, e := range es {
			if e.Rec.Time < before || e.Rec.Time > after || len(e.Rec.Body) != 0 || e.Rec.DeviceID != "" {
				t.Fatalf("zero-time record came back as %+v (window %d..%d)", e.Rec, before, after)
			}
		}
		if es[0].Rec.Kind != Raw || es[1].Rec.Kind != Alarm {
			t.Fatalf("kinds %v %v", es[0].Rec.Kind, es[1].Rec.Kind)
		}
	})

	t.Run("ReadLimits", func(t *testing.T) {
		q := im.open(t)
		want := make([]Record, 10)
		for i := range want {
			want[i] = testRec(i)
			want[i].Body = bytes.Repeat([]byte{'a' + byte(i)}, 10)
		}
		mustAppend(t, q, want...)
		cases := []struct {
			name          string
			max, maxBytes int
			want          int
		}{
			{"max", 3, 0, 3},
			{"max one", 1, 1000, 1},
			{"max zero means one", 0, 0, 1},
			{"bytes", 100, 25, 2},
			{"bytes exact", 100, 30, 3},
			{"at least one", 100, 5, 1},
			{"all", 100, 1000, 10},
			{"more than there is", 1000, 0, 10},
		}
		for _, c := range cases {
			es, err := q.Read(Position{}, c.max, c.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != c.want {
				t.Fatalf("%s: read %d, want %d", c.name, len(es), c.want)
			}
			checkEntries(t, es, want[:c.want])
		}
		// Reading on from Next continues exactly where a batch ended.
		es, _ := q.Read(Position{}, 4, 0)
		rest, _ := q.Read(es[3].Next, 100, 0)
		checkEntries(t, rest, want[4:])
		if es, _ := q.Read(rest[len(rest)-1].Next, 10, 0); len(es) != 0 {
			t.Fatalf("read past the end returned %d records", len(es))
		}
	})

	t.Run("CommitAndCursor", func(t *testing.T) {
		q := im.open(t)
		want := testRecs(0, 30)
		mustAppend(t, q, want...)
		all := readAll(t, q, Position{})
		start := q.Cursor()
		if st := q.Stats(); st.Records != 30 || st.Bytes <= 0 || st.Oldest.UnixNano() != want[0].Time {
			t.Fatalf("stats before commit %+v", st)
		}
		if err := q.Commit(all[9].Next); err != nil {
			t.Fatal(err)
		}
		if q.Cursor() != all[9].Next {
			t.Fatalf("cursor %v, want %v", q.Cursor(), all[9].Next)
		}
		st := q.Stats()
		if st.Records != 20 || st.Oldest.UnixNano() != want[10].Time {
			t.Fatalf("stats after commit %+v, want 20 records, oldest %d", st, want[10].Time)
		}
		// From before the cursor reads from the cursor.
		checkEntries(t, readAll(t, q, Position{}), want[10:])
		checkEntries(t, readAll(t, q, start), want[10:])
		// A commit backwards changes nothing.
		if err := q.Commit(all[2].Next); err != nil {
			t.Fatal(err)
		}
		if q.Cursor() != all[9].Next || q.Stats().Records != 20 {
			t.Fatalf("commit backwards moved the cursor to %v", q.Cursor())
		}
		if err := q.Commit(all[29].Next); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.Records != 0 || st.Bytes != 0 || !st.Oldest.IsZero() {
			t.Fatalf("stats after committing all %+v", st)
		}
		if es := readAll(t, q, Position{}); len(es) != 0 {
			t.Fatalf("read %d records after committing all", len(es))
		}
		// Appends after everything was consumed are read and counted.
		mustAppend(t, q, testRecs(30, 3)...)
		checkEntries(t, readAll(t, q, Position{}), testRecs(30, 3))
		if st := q.Stats(); st.Records != 3 || st.Oldest.UnixNano() != testRec(30).Time {
			t.Fatalf("stats after new appends %+v", st)
		}
	})

	if im.reopen != nil {
		t.Run("Reopen", func(t *testing.T) {
			q := im.open(t)
			want := testRecs(0, 40)
			mustAppend(t, q, want[:25]...)
			all := readAll(t, q, Position{})
			if err := q.Commit(all[14].Next); err != nil {
				t.Fatal(err)
			}
			cur := q.Cursor()
			q = im.reopen(t, q)
			if q.Cursor() != cur {
				t.Fatalf("cursor after reopen %v, want %v", q.Cursor(), cur)
			}
			if st := q.Stats(); st.Records != 10 || st.Oldest.UnixNano() != want[15].Time {
				t.Fatalf("stats after reopen %+v", st)
			}
			checkEntries(t, readAll(t, q, q.Cursor()), want[15:25])
			mustAppend(t, q, want[25:]...)
			checkEntries(t, readAll(t, q, Position{}), want[15:])
			q = im.reopen(t, q)
			checkEntries(t, readAll(t, q, Position{}), want[15:])
			if st := q.Stats(); st.Records != 25 || st.Corrupted != 0 {
				t.Fatalf("stats after second reopen %+v", st)
			}
		})
	}

	t.Run("Notify", func(t *testing.T) {
		q := im.open(t)
		select {
		case <-q.Notify():
			t.Fatal("notified before any append")
		default:
		}
		mustAppend(t, q, testRec(0))
		select {
		case <-q.Notify():
		case <-time.After(5 * time.Second):
			t.Fatal("no notification after append")
		}
		// Coalesced: three appends nobody waited for leave one signal.
		mustAppend(t, q, testRec(1))
		mustAppend(t, q, testRec(2))
		mustAppend(t, q, testRec(3))
		<-q.Notify()
		select {
		case <-q.Notify():
			t.Fatal("notifications not coalesced")
		default:
		}
	})

	t.Run("ConcurrentAppends", func(t *testing.T) {
		q := im.open(t)
		const workers, each, batch = 8, 40, 3
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					recs := make([]Record, batch)
					for j := range recs {
						recs[j] = Record{Kind: Observation, DeviceID: fmt.Sprint(w),
							Body: []byte(fmt.Sprintf("%d/%d/%d", w, i, j))}
					}
					if err := q.Append(context.Background(), recs...); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		es := readAll(t, q, Position{})
		if len(es) != workers*each*batch {
			t.Fatalf("read %d records, want %d", len(es), workers*each*batch)
		}
		next := make([]int, workers)
		for k := 0; k < len(es); k += batch {
			// The records of one call are contiguous and in order.
			var w, i, j int
			fmt.Sscanf(string(es[k].Rec.Body), "%d/%d/%d", &w, &i, &j)
			if j != 0 || i != next[w] {
				t.Fatalf("record %d is %s, want %d/%d/0", k, es[k].Rec.Body, w, next[w])
			}
			for j := 1; j < batch; j++ {
				if want := fmt.Sprintf("%d/%d/%d", w, i, j); string(es[k+j].Rec.Body) != want {
					t.Fatalf("record %d is %s, want %s", k+j, es[k+j].Rec.Body, want)
				}
			}
			next[w]++
		}
		if st := q.Stats(); st.Records != int64(len(es)) || st.Appended != int64(len(es)) {
			t.Fatalf("stats %+v, want %d records", st, len(es))
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		q := im.open(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		// An already cancelled context may or may not win over a free
		// queue; either way the result is consistent with what is read.
		err := q.Append(ctx, testRec(0))
		n := len(readAll(t, q, Position{}))
		if (err == nil) != (n == 1) || (err != nil && !errors.Is(err, context.Canceled)) {
			t.Fatalf("append returned %v and %d records are in the queue", err, n)
		}
	})

	t.Run("Closed", func(t *testing.T) {
		q := im.open(t)
		mustAppend(t, q, testRec(0))
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		if err := q.Append(context.Background(), testRec(1)); !errors.Is(err, ErrClosed) {
			t.Fatalf("append after close: %v", err)
		}
		if _, err := q.Read(Position{}, 1, 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		if err := q.Commit(Position{Segment: 99}); !errors.Is(err, ErrClosed) {
			t.Fatalf("commit after close: %v", err)
		}
		if err := q.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	})
}
