package forwarder

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func TestAliveIdleWedgedStopped(t *testing.T) {
	e := newEnv(t)
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	// A server that accepts and never answers (until the test ends).
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(hang.Close)
	t.Cleanup(unblock) // runs before hang.Close
	e.cfg.URL = hang.URL
	e.cfg.Timeout = Duration(time.Hour)

	idleFwd, err := New(e.cfg, Deps{Data: e.data, Alarms: e.alarms, State: e.state, DeadLetters: e.dl, Log: e.log})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := idleFwd.Alive(time.Hour); ok {
		t.Fatal("alive before Run began")
	}
	e.start()
	// Idle with nothing to send: alive however long it waits.
	e.waitFor("idle", func() bool { return e.fwd.Status().State == "idle" })
	time.Sleep(60 * time.Millisecond)
	if ok, since := e.fwd.Alive(10 * time.Millisecond); !ok {
		t.Fatalf("idle forwarder not alive (last progress %s ago)", since)
	}

	// A request that never ends: not alive once stall has passed.
	e.obs("dev1", 1, 2, 3)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the server")
	}
	time.Sleep(60 * time.Millisecond)
	ok, since := e.fwd.Alive(30 * time.Millisecond)
	if ok || since < 30*time.Millisecond {
		t.Fatalf("wedged forwarder: Alive = %v, since %s; want false, >= 30ms", ok, since)
	}
	if ok, _ := e.fwd.Alive(time.Minute); !ok {
		t.Fatal("a request in flight for less than stall must count as alive")
	}
	// Let the request end (as its timeout would) so that stopping does not
	// wait for the stop grace.
	unblock()
	e.stop()
	if ok, _ := e.fwd.Alive(time.Hour); ok {
		t.Fatal("alive after Run returned")
	}
}

func TestAliveDuringBackoff(t *testing.T) {
	e := newEnv(t)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	e.cfg.URL = down.URL
	e.cfg.Retry = Retry{Min: Duration(2 * time.Second), Max: Duration(2 * time.Second)}
	e.start()
	e.obs("dev1", 1)
	e.waitFor("retrying", func() bool { return e.fwd.Status().State == "retrying" })
	time.Sleep(100 * time.Millisecond)
	// A backoff longer than stall is a wait on purpose, not a wedge.
	if ok, since := e.fwd.Alive(20 * time.Millisecond); !ok {
		t.Fatalf("forwarder in backoff not alive (last progress %s ago)", since)
	}
}
