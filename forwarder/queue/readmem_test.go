package queue

import (
	"context"
	"runtime"
	"testing"
)

// A large Read holds about its bodies in memory, not every size its body
// buffer went through: the forwarder reads windows of up to 4 MiB of
// bodies on a gateway that gives vigd 64 MB. (Bodies were appended to one
// growing slab; each earlier, smaller slab stayed alive through the bodies
// that pointed into it: 4 MiB of bodies held 22 MiB of heap.)
func TestReadHeapBoundedByBodies(t *testing.T) {
	d, err := Open(t.TempDir(), Options{noSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	body := make([]byte, 250)
	recs := make([]Record, 1000)
	for i := range recs {
		recs[i] = Record{Kind: Observation, DeviceID: "dev", CustomerID: "c", Ref: "r", Body: body}
	}
	for range 20 {
		if err := d.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
	}
	const maxBytes = 4 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	es, err := d.Read(Position{}, 20000, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	var bodies int
	for _, e := range es {
		bodies += len(e.Rec.Body)
	}
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	entries := int64(len(es)) * 128 // an Entry and its share of the rest
	t.Logf("%d records, %d KiB of bodies, %d KiB of heap held", len(es), bodies>>10, held>>10)
	if bodies < maxBytes-len(body) {
		t.Fatalf("read %d bytes of bodies, want about %d", bodies, maxBytes)
	}
	if limit := int64(bodies)*3/2 + entries; held > limit {
		t.Errorf("a read of %d KiB of bodies holds %d KiB of heap, want at most %d KiB", bodies>>10, held>>10, limit>>10)
	}
	runtime.KeepAlive(es)
}
