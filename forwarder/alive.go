package forwarder

import (
	"net/http"
	"sync/atomic"
	"time"
)

// liveness is the delivery loop's heartbeat, for systemd's watchdog: the
// daemon pings only while the loop shows progress or waits on purpose, so
// that a loop wedged in a request that never ends (a server that accepts and
// never answers, with forwarder.timeout above WatchdogSec) or in a deadlock
// gets the process restarted. "Not stopped" is not enough: a wedged loop is
// not stopped either.
//
// It runs on real time, not on the injected Clock: the watchdog that reads
// it counts real seconds.
type liveness struct {
	last    atomic.Int64 // time.Now().UnixNano() of the last sign of progress; 0 before Run
	waiting atomic.Int32 // > 0 while the loop waits by choice
}

// beat records progress: a loop turn, an answer from the server, the end of
// a wait.
func (f *Forwarder) beat() { f.live.last.Store(time.Now().UnixNano()) }

// waiting marks the loop as waiting on purpose (idle with nothing to send, a
// retry backoff, the rate limit) until the returned func is called. Such a
// wait can be longer than the watchdog interval (retry.max is 5m by
// default) without the loop being stuck.
func (f *Forwarder) waiting() (done func()) {
	f.beat()
	f.live.waiting.Add(1)
	return func() {
		f.live.waiting.Add(-1)
		f.beat()
	}
}

// Alive reports whether the delivery loop moves: it is waiting on purpose,
// or it showed progress within stall. It is false before Run, after Run
// returned, and while a request or a store operation has held the loop for
// longer than stall. since is the time from the last sign of progress.
//
// The daemon passes its watchdog interval as stall, so forwarder.timeout
// must be shorter than WatchdogSec for a slow but answering server not to
// count as stuck.
func (f *Forwarder) Alive(stall time.Duration) (ok bool, since time.Duration) {
	last := f.live.last.Load()
	if last == 0 || f.Status().State == "stopped" {
		return false, 0
	}
	since = time.Since(time.Unix(0, last))
	return f.live.waiting.Load() > 0 || since <= stall, since
}

// watchRequests makes every answer (or transport error) a beat, so that a
// window of many requests is progress while each one is answered. Run
// calls it once; calling it again does not wrap twice.
func (f *Forwarder) watchRequests() {
	if _, ok := f.client.Transport.(*beatTransport); ok {
		return
	}
	c := *f.client
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &beatTransport{base: base, f: f}
	f.client = &c
}

// beatTransport beats when a round trip ends, however it ends.
type beatTransport struct {
	base http.RoundTripper
	f    *Forwarder
}

func (t *beatTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	t.f.beat()
	return resp, err
}

// CloseIdleConnections passes through, so that http.Client's
// CloseIdleConnections still reaches the real transport.
func (t *beatTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

var _ http.RoundTripper = (*beatTransport)(nil)
