package netguard

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func tcp(s string) net.Addr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s))
}

type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

func TestAllowList(t *testing.T) {
	al, err := ParseAllowList([]string{"192.0.2.7", " 10.0.0.0/8 ", "2001:db8::/32", "::ffff:198.51.100.0/120"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{tcp("192.0.2.7:1000"), true},
		{tcp("192.0.2.8:1000"), false},
		{tcp("10.200.3.4:1"), true},
		{tcp("[::ffff:10.1.2.3]:1"), true}, // v4-mapped from a dual-stack socket
		{tcp("[2001:db8:1::5]:1"), true},
		{tcp("[2001:db9::5]:1"), false},
		{tcp("198.51.100.77:1"), true}, // written as a mapped prefix
		{tcp("198.51.101.1:1"), false},
		{strAddr("192.0.2.7:5"), true},
		{strAddr("not an address"), false},
		{nil, false},
	} {
		if got := al.Allows(tc.addr); got != tc.want {
			t.Errorf("Allows(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	var empty AllowList
	if !empty.Empty() || !empty.Allows(tcp("203.0.113.1:1")) || !empty.Allows(nil) {
		t.Fatal("the empty list must allow everything")
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "", "fe80::1%eth0"} {
		if _, err := ParseAllowList([]string{"10.0.0.1", bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(4, 2)
	a1, a2 := tcp("192.0.2.1:1000"), tcp("192.0.2.1:1001")
	r1, why := l.Acquire(a1)
	if why != "" {
		t.Fatal(why)
	}
	r2, _ := l.Acquire(a2)
	if _, why := l.Acquire(tcp("192.0.2.1:1002")); why != RefusedPerIP {
		t.Fatalf("third from one address: %q", why)
	}
	// IPv6: one /64 is one source.
	r3, _ := l.Acquire(tcp("[2001:db8::1]:1"))
	if _, why := l.Acquire(tcp("[2001:db8::2]:1")); why != "" {
		t.Fatalf("second from a /64: %q", why)
	}
	if _, why := l.Acquire(tcp("[2001:db8::ffff:3]:1")); why != RefusedTotal {
		t.Fatalf("fifth in all: %q", why)
	}
	if tot, from := l.Count(a1); tot != 4 || from != 2 {
		t.Fatalf("Count = %d, %d", tot, from)
	}
	r1()
	r1() // twice is harmless
	if tot, from := l.Count(a1); tot != 3 || from != 1 {
		t.Fatalf("after release Count = %d, %d", tot, from)
	}
	if _, why := l.Acquire(tcp("[2001:db8::4]:1")); why != RefusedPerIP {
		t.Fatalf("third from a /64: %q", why)
	}
	r2()
	r3()
	if tot, _ := l.Count(a1); tot != 1 {
		t.Fatalf("total %d", tot)
	}
	if len(l.byIP) != 1 {
		t.Fatalf("per-address map keeps %d entries", len(l.byIP))
	}
	// No limits.
	nl := NewLimiter(0, 0)
	for range 1000 {
		if _, why := nl.Acquire(a1); why != "" {
			t.Fatal(why)
		}
	}
}

func TestListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, _ := ParseAllowList([]string{"127.0.0.1"})
	var mu sync.Mutex
	refused := map[string]int{}
	ln := &Listener{Listener: inner, Allow: al, Limiter: NewLimiter(0, 1), OnRefuse: func(_ net.Addr, why string) {
		mu.Lock()
		refused[why]++
		mu.Unlock()
	}}
	accepted := make(chan net.Conn, 10)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Error(err)
				}
				close(accepted)
				return
			}
			accepted <- c
		}
	})
	dial := func(local string) net.Conn {
		d := net.Dialer{Timeout: 2 * time.Second}
		if local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	closedByPeer := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
	}

	c1 := dial("127.0.0.1")
	first := <-accepted
	c2 := dial("127.0.0.1") // over per-IP
	if !closedByPeer(c2) {
		t.Fatal("second connection from one address not closed")
	}
	c3 := dial("127.0.0.2") // not allowed
	if !closedByPeer(c3) {
		t.Fatal("connection from a source not allowed not closed")
	}
	// Closing the first frees its slot.
	first.Close()
	c4 := dial("127.0.0.1")
	fourth := <-accepted
	_ = c4.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c4.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("admitted connection: %v", err)
	}
	if nc, ok := fourth.(interface{ NetConn() net.Conn }); !ok || nc.NetConn() == nil {
		t.Fatal("wrapped conn has no NetConn")
	}
	fourth.Close()
	for _, c := range []net.Conn{c1, c2, c3, c4} {
		c.Close()
	}
	inner.Close()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if refused[RefusedPerIP] != 1 || refused[RefusedNotAllowed] != 1 || len(refused) != 2 {
		t.Fatalf("refused %v", refused)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}
