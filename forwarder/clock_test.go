package forwarder

import (
	"net/http"
	"sync"
	"time"

	"github.com/vigd/vigd/forwarder/signer"
)

type signerSecret = signer.Secret

var signerNewSecret = signer.NewSecret

const httpTimeFormat = http.TimeFormat

// fakeClock jumps: After(d) advances the time by d at once and records d,
// so a test sees every wait the forwarder decided.
type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	slep []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slep = append(c.slep, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.slep...)
}
