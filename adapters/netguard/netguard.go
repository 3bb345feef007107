// Package netguard holds what the listening adapters (tcp, directip,
// rockblock) and the local HTTP endpoint share against the open network:
// an allow-list of source addresses and networks, and a connection limiter
// that bounds connections in total and per remote address.
//
// Per remote address means per IPv4 address and per IPv6 /64 (one host
// usually holds a whole /64, so counting single IPv6 addresses would let it
// take every slot).
package netguard

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
)

// AllowList is a set of addresses and networks; the zero value allows
// every source.
type AllowList struct {
	prefixes []netip.Prefix
}

// ParseAllowList reads entries such as "192.0.2.7", "10.0.0.0/8",
// "2001:db8::/32". The error names the first bad entry.
func ParseAllowList(entries []string) (AllowList, error) {
	var out []netip.Prefix
	for _, s := range entries {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return AllowList{}, fmt.Errorf("%q is neither an IP address nor a CIDR prefix", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return AllowList{prefixes: out}, nil
}

// Empty reports whether the list allows every source.
func (a AllowList) Empty() bool { return len(a.prefixes) == 0 }

// Allows reports whether addr (a *net.TCPAddr, or any net.Addr whose
// String is host:port) may connect.
func (a AllowList) Allows(addr net.Addr) bool {
	if len(a.prefixes) == 0 {
		return true
	}
	ip, ok := AddrOf(addr)
	if !ok {
		return false
	}
	return a.Contains(ip)
}

// Contains reports whether ip is in the list (an empty list holds all).
func (a AllowList) Contains(ip netip.Addr) bool {
	if len(a.prefixes) == 0 {
		return true
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// AddrOf is the IP address of a connection's remote address.
func AddrOf(addr net.Addr) (netip.Addr, bool) {
	if addr == nil {
		return netip.Addr{}, false
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		ip, ok := netip.AddrFromSlice(ta.IP)
		return ip.Unmap(), ok
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// Reasons a Limiter refuses a connection (metric labels and log fields).
const (
	RefusedTotal = "max_connections"
	RefusedPerIP = "max_connections_per_ip"
)

// Limiter bounds concurrent connections in total and per remote address.
// It is safe for concurrent use.
type Limiter struct {
	max, perIP int

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

// NewLimiter allows max connections in all and perIP from one address
// (IPv6: one /64); 0 means no limit of that sort.
func NewLimiter(max, perIP int) *Limiter {
	return &Limiter{max: max, perIP: perIP, byIP: map[netip.Addr]int{}}
}

// Key is the address a per-address limit counts: the IPv4 address, or
// the IPv6 /64.
func Key(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// Acquire takes a slot for a connection from addr. It returns a release
// function (call it once, when the connection ends) or, when a limit is
// reached, nil and the reason (RefusedTotal or RefusedPerIP).
func (l *Limiter) Acquire(addr net.Addr) (release func(), refused string) {
	ip, ok := AddrOf(addr)
	key := Key(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return nil, RefusedTotal
	}
	if ok && l.perIP > 0 && l.byIP[key] >= l.perIP {
		return nil, RefusedPerIP
	}
	l.total++
	if ok {
		l.byIP[key]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if ok {
				if l.byIP[key]--; l.byIP[key] <= 0 {
					delete(l.byIP, key)
				}
			}
		})
	}, ""
}

// Count is the number of connections holding a slot, and the number from
// addr's address.
func (l *Limiter) Count(addr net.Addr) (total, fromAddr int) {
	ip, ok := AddrOf(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if ok {
		fromAddr = l.byIP[Key(ip)]
	}
	return l.total, fromAddr
}

// Listener wraps a net.Listener for servers that accept by themselves
// (net/http): a connection from a source the allow-list does not hold, or
// beyond the limiter's limits, is closed at once and reported to
// OnRefuse; the others hold their slot until they are closed.
type Listener struct {
	net.Listener
	Allow   AllowList
	Limiter *Limiter // nil: no limit
	// OnRefuse is told each refused connection's remote address and the
	// reason: "not_allowed", RefusedTotal or RefusedPerIP. Nil: ignored.
	OnRefuse func(remote net.Addr, reason string)
}

// RefusedNotAllowed is the reason for a source outside the allow-list.
const RefusedNotAllowed = "not_allowed"

// Accept returns the next admitted connection.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		reason := ""
		var release func()
		if !l.Allow.Allows(c.RemoteAddr()) {
			reason = RefusedNotAllowed
		} else if l.Limiter != nil {
			release, reason = l.Limiter.Acquire(c.RemoteAddr())
		}
		if reason != "" {
			_ = c.Close()
			if l.OnRefuse != nil {
				l.OnRefuse(c.RemoteAddr(), reason)
			}
			continue
		}
		if release == nil {
			return c, nil
		}
		return &conn{Conn: c, release: release}, nil
	}
}

// conn gives its slot back when closed.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// NetConn is the wrapped connection (crypto/tls and net/http look for it).
func (c *conn) NetConn() net.Conn { return c.Conn }

var (
	_ net.Listener = (*Listener)(nil)
	_ net.Conn     = (*conn)(nil)
)
