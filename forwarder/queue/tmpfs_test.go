//go:build linux

package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of size on a temporary folder until the test
// ends; it skips, saying why, when mount is refused (not root, no
// CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	})
	return mnt
}

// device appends numbered records one at a time, resending a refused one
// (as a device does when it gets no ACK), and counts what happened.
type device struct {
	id                string
	acked, refused    atomic.Int64
	refusedSinceAcked atomic.Int64
}

func (v *device) run(ctx context.Context, t *testing.T, d *Disk, body []byte) {
	for ctx.Err() == nil {
		seq := v.acked.Load() + 1
		err := d.Append(ctx, Record{Kind: Observation, DeviceID: v.id, Ref: strconv.FormatInt(seq, 10), Body: body})
		switch {
		case err == nil:
			v.acked.Add(1)
			v.refusedSinceAcked.Store(0)
		case errors.Is(err, syscall.ENOSPC):
			v.refused.Add(1)
			v.refusedSinceAcked.Add(1)
			time.Sleep(time.Millisecond)
		case ctx.Err() != nil || errors.Is(err, ErrClosed):
			return
		default:
			t.Errorf("%s append: %v", v.id, err)
			return
		}
	}
}

func segBytes(t *testing.T, dir string) (n int64) {
	for _, p := range segFiles(t, dir) {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestFullDiskRecoversTmpfs reproduces the field report on a real 4 MiB
// tmpfs with default options: two devices stream until appends are
// refused; they keep trying and must keep being refused without eating the
// reserve; the queue reopens on the full disk; then the forwarder drains
// (Read+Commit) while the devices go on: commits succeed on the full disk,
// segments are freed, appends resume by themselves, Health turns green,
// nothing acknowledged is lost, and the drained queue holds no segment
// bytes.
func TestFullDiskRecoversTmpfs(t *testing.T) {
	mnt := mountTmpfs(t, "4m")
	dir := filepath.Join(mnt, "queue")
	d := openDisk(t, dir, Options{})
	t.Logf("4 MiB tmpfs: floor %d bytes, segments of %d bytes", d.floor, d.opts.SegmentSize)
	if d.floor <= 0 || d.opts.SegmentSize > 256<<10 {
		t.Fatalf("floor %d, segment size %d on a 4 MiB filesystem", d.floor, d.opts.SegmentSize)
	}
	body := make([]byte, 700)
	devs := []*device{{id: "dev1"}, {id: "dev2"}}
	start := func(d *Disk) func() {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, v := range devs {
			wg.Go(func() { v.run(ctx, t, d, body) })
		}
		return func() { cancel(); wg.Wait() }
	}
	refusing := func() bool {
		for _, v := range devs {
			if v.refusedSinceAcked.Load() < 50 {
				return false
			}
		}
		return true
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	total := func() (n int64) {
		for _, v := range devs {
			n += v.acked.Load()
		}
		return n
	}

	// Fill.
	stop := start(d)
	waitUntil("appends to be refused", refusing)
	time.Sleep(100 * time.Millisecond)
	filled := total()
	// The devices keep trying for a while: nothing more is taken.
	time.Sleep(300 * time.Millisecond)
	if n := total(); n != filled {
		t.Fatalf("%d more records taken while below the floor", n-filled)
	}
	avail, _, err := statFS(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if avail < d.floor-spacePageSlack {
		t.Fatalf("free space %d: the devices ate the %d-byte reserve", avail, d.floor)
	}
	herr := d.Health()
	if !errors.Is(herr, syscall.ENOSPC) {
		t.Fatalf("Health() = %v on a full disk", herr)
	}
	stop()
	// The reserve is there for the forwarder's state and dead letters.
	if err := os.WriteFile(filepath.Join(mnt, "state.db"), make([]byte, 64<<10), 0o640); err != nil {
		t.Fatalf("the reserve does not hold a 64 KiB state file: %v", err)
	}
	var refusedFull int64
	for _, v := range devs {
		refusedFull += v.refused.Load()
	}
	t.Logf("full after %d records (%d segment bytes), %d appends refused, %d bytes free; Health: %v",
		filled, segBytes(t, dir), refusedFull, avail, herr)

	// Reopen on the full disk.
	d.Close()
	d = openDisk(t, dir, Options{})
	if st := d.Stats(); st.Records != filled || st.Corrupted != 0 {
		t.Fatalf("reopened on a full disk: %+v, want %d records", st, filled)
	}

	// Drain while the devices go on.
	stop = start(d)
	delivered := map[string]int{}
	var commits int
	drain := func() {
		t.Helper()
		for {
			es, err := d.Read(d.Cursor(), 100, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) == 0 {
				return
			}
			for _, e := range es {
				delivered[e.Rec.DeviceID+"/"+e.Rec.Ref]++
			}
			if err := d.Commit(es[len(es)-1].Next); err != nil {
				t.Fatalf("commit after %d commits: %v", commits, err)
			}
			commits++
		}
	}
	var resumed bool
	for range 2000 {
		drain()
		if total() > filled+200 {
			resumed = true
			break
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if !resumed {
		t.Fatalf("appends did not resume while draining: %d records taken after the drain started", total()-filled)
	}
	drain()
	if err := d.Health(); err != nil {
		t.Fatalf("Health() = %v after the drain", err)
	}
	acked := total()
	var lost, dups int
	for _, v := range devs {
		for seq := int64(1); seq <= v.acked.Load(); seq++ {
			switch delivered[v.id+"/"+strconv.FormatInt(seq, 10)] {
			case 0:
				lost++
			case 1:
			default:
				dups++
			}
		}
	}
	if lost > 0 || dups > 0 || int64(len(delivered)) != acked {
		t.Fatalf("%d acked, %d delivered: %d lost, %d duplicated", acked, len(delivered), lost, dups)
	}
	left := segBytes(t, dir)
	st := d.Stats()
	if left != 0 || st.Segments != 0 || st.Records != 0 {
		t.Fatalf("drained queue holds %d segment bytes, stats %+v", left, st)
	}
	avail, _, _ = statFS(mnt)
	var refused int64
	for _, v := range devs {
		refused += v.refused.Load()
	}
	t.Log(fmt.Sprintf("appended (acked) %d, refused %d, delivered %d in %d commits, lost %d; after the drain %d segment bytes, %d bytes free",
		acked, refused, len(delivered), commits, lost, left, avail))
	d.Close()
	d = openDisk(t, dir, Options{})
	if st := d.Stats(); st.Records != 0 {
		t.Fatalf("reopened drained queue: %+v", st)
	}
}
