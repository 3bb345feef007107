package main

import (
	"os"
	"runtime/debug"
)

// defaultMemoryLimit is the Go runtime's soft memory limit for `vigd run`
// unless GOMEMLIMIT is set. The daemon's live heap is small (a delivery
// window of at most 8 MiB of records, the frames in flight), but it
// allocates fast while a stream of frames comes in, and with the default
// GOGC alone the heap — and the RSS a small gateway sees — grows to
// several times the live data before the collector catches up. Near the
// limit the collector runs more often instead; it never fails an
// allocation, and the runtime caps the CPU it spends on that.
const defaultMemoryLimit = 40 << 20

// defaultGCPercent lets the heap grow further between collections while
// the memory limit above is what bounds it: fewer collections of a small
// live heap.
const defaultGCPercent = 200

// setMemoryLimit applies defaultMemoryLimit when the operator has not
// chosen one (GOMEMLIMIT in the unit's Environment=).
func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(defaultGCPercent)
		}
	}
}
