package queue

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

func TestFloorFor(t *testing.T) {
	cases := []struct {
		name       string
		opt, total int64
		want       int64
	}{
		{"4 MiB tmpfs", 0, 4 << 20, (4 << 20) / 20},
		{"2 MiB tmpfs", 0, 2 << 20, (2 << 20) / 20},
		{"large disk", 0, 100 << 30, 64 << 20},
		{"tiny: at least 64 KiB", 0, 512 << 10, 64 << 10},
		{"tinier: never above half", 0, 96 << 10, 48 << 10},
		{"explicit", 1 << 20, 4 << 20, 1 << 20},
		{"explicit above half", 10 << 20, 4 << 20, 2 << 20},
		{"disabled", -1, 4 << 20, 0},
		{"size unknown", 0, 0, 0},
	}
	for _, c := range cases {
		if got := floorFor(c.opt, c.total); got != c.want {
			t.Errorf("%s: floorFor(%d, %d) = %d, want %d", c.name, c.opt, c.total, got, c.want)
		}
	}
	if got := segmentSizeFor(DefaultSegmentSize, 4<<20); got != 256<<10 {
		t.Errorf("segment size on a 4 MiB filesystem %d", got)
	}
	if got := segmentSizeFor(DefaultSegmentSize, 1<<30); got != DefaultSegmentSize {
		t.Errorf("segment size on a 1 GiB filesystem %d", got)
	}
}

// TestFreeSpaceFloor fakes statfs: below the floor every append is
// refused with ENOSPC (however many retry), Health names the floor, and
// it clears by itself once space is back, with no append.
func TestFreeSpaceFloor(t *testing.T) {
	var avail atomic.Int64
	avail.Store(10 << 20)
	opts := Options{MinFreeBytes: 1 << 20, statfs: func(string) (int64, int64, error) {
		return avail.Load(), 100 << 20, nil
	}}
	d := openDisk(t, t.TempDir(), opts)
	want := testRecs(0, 10)
	mustAppend(t, d, want...)
	avail.Store(512 << 10)
	d.spaceChanged()
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			err := d.Append(context.Background(), testRecs(100+10*i, 3)...)
			var se *spaceError
			if !errors.Is(err, syscall.ENOSPC) || !errors.As(err, &se) {
				t.Errorf("append below the floor: %v, want a floor refusal wrapping ENOSPC", err)
			}
		})
	}
	wg.Wait()
	err := d.Health()
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "free space 512.0 KiB below the 1.0 MiB floor") {
		t.Fatalf("Health() = %v", err)
	}
	if st := d.Stats(); st.Records != 10 {
		t.Fatalf("stats while refused %+v", st)
	}
	avail.Store(10 << 20)
	d.spaceChanged()
	if err := d.Health(); err != nil {
		t.Fatalf("Health() = %v once space is back, before any append", err)
	}
	more := testRecs(10, 3)
	mustAppend(t, d, more...)
	checkEntries(t, readAll(t, d, Position{}), append(want, more...))
}

// TestCursorWriteFault: a failed cursor write fails Commit, keeps the
// cursor where it was (in memory and on disk), and the next commit after
// the fault works.
func TestCursorWriteFault(t *testing.T) {
	dir := t.TempDir()
	var f faults
	opts := Options{wrapCursor: func(s segFile) segFile { return faultFile{s, &f} }}
	d := openDisk(t, dir, opts)
	recs := testRecs(0, 10)
	mustAppend(t, d, recs...)
	es := readAll(t, d, Position{})
	if err := d.Commit(es[2].Next); err != nil {
		t.Fatal(err)
	}
	f.set(&f.write, syscall.EIO)
	if err := d.Commit(es[5].Next); !errors.Is(err, syscall.EIO) {
		t.Fatalf("commit during a fault: %v", err)
	}
	if d.Cursor() != es[2].Next {
		t.Fatalf("cursor moved to %v on a failed commit", d.Cursor())
	}
	d.Close()
	d2 := openDisk(t, dir, Options{})
	if d2.Cursor() != es[2].Next {
		t.Fatalf("reopened cursor %v, want %v (the torn slot must not win)", d2.Cursor(), es[2].Next)
	}
	d2.Close()
	f.set(&f.write, nil)
	d3 := openDisk(t, dir, opts)
	if err := d3.Commit(es[7].Next); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, readAll(t, d3, d3.Cursor()), recs[8:])
	if _, err := os.Stat(dir + "/cursor.tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cursor.tmp left: %v", err)
	}
}
