package adapters

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the one reconnect helper every adapter uses: exponential from
// Min to Max with full jitter on the upper half, reset after a success.
// The zero value uses 500ms..1m.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Next returns the delay before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	if hi <= 0 {
		hi = time.Minute
	}
	d := lo
	for i := 0; i < b.attempt && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	b.attempt++
	// jitter: a random point in [d/2, d]
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// Attempt is the number of failures since the last Reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts over after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Wait sleeps for Next() or until ctx is done; it reports false when ctx
// ended the wait.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
