package tcp

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/netguard"
	"github.com/vigd/vigd/internal/tlsconf"
	"github.com/vigd/vigd/internal/tlsconf/tlstest"
)

// dialFrom connects from a given loopback address (Linux routes all of
// 127/8 to lo), so tests can play several remote hosts.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTLSClientCertificates(t *testing.T) {
	pki := tlstest.New(t)
	sink := newSink()
	l, addr := start(t, sink, func(c *Config) {
		c.TLS = tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile}
		c.Identity = IdentityClientCert
		c.Reply = "ACK\n"
	})

	// With a certificate: delivered, identified by its common name.
	c, err := tls.Dial("tcp", addr, pki.ClientConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	write(t, c, "level,12.5\n")
	if got := readN(t, c, 4); got != "ACK\n" {
		t.Fatalf("reply %q", got)
	}
	fs := sink.all()
	if len(fs) != 1 || string(fs[0].Payload) != "level,12.5" || fs[0].Identity != tlstest.ClientCN ||
		fs[0].Meta["tls_client_cn"] != tlstest.ClientCN {
		t.Fatalf("frames %+v", fs)
	}

	// Without one: the handshake fails, nothing is read.
	refused := value(adapters.ConnectionsRefusedTotal.WithLabelValues(l.name, "tls"))
	nc, err := tls.Dial("tcp", addr, pki.ClientConfig(false))
	if err == nil {
		// TLS 1.3: the client learns of the refusal at its first read.
		_, _ = nc.Write([]byte("sneaky\n"))
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = nc.Read(make([]byte, 1))
		nc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client without a certificate: %v", err)
	}
	// A plain-TCP client talking the line protocol is refused too.
	plain := dial(t, addr)
	write(t, plain, "plain,1\n")
	_ = plain.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(plain)
	if strings.Contains(string(b), "ACK") {
		t.Fatalf("plain client got %q", b)
	}
	waitFor(t, func() bool { return value(adapters.ConnectionsRefusedTotal.WithLabelValues(l.name, "tls"))-refused >= 2 })
	if n := len(sink.all()); n != 1 {
		t.Fatalf("%d frames; refused clients must deliver none", n)
	}
}

func TestTLSWithoutClientCertificates(t *testing.T) {
	pki := tlstest.New(t)
	sink := newSink()
	_, addr := start(t, sink, func(c *Config) {
		c.TLS = tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}
		c.Reply = "K"
	})
	c, err := tls.Dial("tcp", addr, pki.ClientConfig(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v := c.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Fatalf("version %x", v)
	}
	write(t, c, "a\n")
	readN(t, c, 1)
	if f := sink.all()[0]; f.Identity != "127.0.0.1" || f.Meta["tls_client_cn"] != "" {
		t.Fatalf("frame %+v", f)
	}
	// TLS 1.1 is refused.
	old := pki.ClientConfig(false)
	old.MaxVersion = tls.VersionTLS11
	if c, err := tls.Dial("tcp", addr, old); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 accepted")
	}
}

func TestTLSBadFilesFailRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS = tlsconf.Server{CertFile: t.TempDir() + "/missing.pem", KeyFile: t.TempDir() + "/missing-key.pem"}
	l, err := New("badtls", cfg, envDiscard())
	if err != nil {
		t.Fatal(err) // New does no I/O
	}
	err = l.Run(t.Context(), newSink())
	if err == nil || !strings.Contains(err.Error(), "tls: cert_file") {
		t.Fatalf("Run: %v", err)
	}
}

// A client that connects to a TLS listener and says nothing is dropped
// after handshake_timeout; others are served meanwhile.
func TestTLSHandshakeTimeout(t *testing.T) {
	pki := tlstest.New(t)
	sink := newSink()
	_, addr := start(t, sink, func(c *Config) {
		c.TLS = tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}
		c.HandshakeTimeout = 300 * time.Millisecond
		c.Reply = "K"
	})
	silent := dial(t, addr)
	began := time.Now()
	c, err := tls.Dial("tcp", addr, pki.ClientConfig(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	write(t, c, "x\n")
	readN(t, c, 1)
	expectClosed(t, silent)
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Fatalf("closed after %v, before handshake_timeout", d)
	}
}

func TestMaxConnectionsPerIP(t *testing.T) {
	sink := newSink()
	l, addr := start(t, sink, func(c *Config) {
		c.MaxConnections = 10
		c.MaxConnectionsPerIP = 2
		c.Reply = "K"
	})
	a1, a2 := dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.2", addr)
	for _, c := range []net.Conn{a1, a2} {
		write(t, c, "hi\n")
		readN(t, c, 1)
	}
	before := value(adapters.ConnectionsRefusedTotal.WithLabelValues(l.name, netguard.RefusedPerIP))
	a3 := dialFrom(t, "127.0.0.2", addr)
	write(t, a3, "third\n")
	expectClosed(t, a3)
	if d := value(adapters.ConnectionsRefusedTotal.WithLabelValues(l.name, netguard.RefusedPerIP)) - before; d != 1 {
		t.Fatalf("per-ip refusals counted %v", d)
	}
	// Another host is served.
	b := dialFrom(t, "127.0.0.1", addr)
	write(t, b, "other host\n")
	readN(t, b, 1)
	// A slot freed is taken again.
	a1.Close()
	waitFor(t, func() bool { _, n := l.limiter.Count(a2.LocalAddr()); return n == 1 })
	a4 := dialFrom(t, "127.0.0.2", addr)
	write(t, a4, "fourth\n")
	readN(t, a4, 1)
	for _, f := range sink.all() {
		if string(f.Payload) == "third" {
			t.Fatal("a refused connection's frame was read")
		}
	}
}

func TestAllowedSources(t *testing.T) {
	sink := newSink()
	l, addr := start(t, sink, func(c *Config) {
		c.AllowedSources = []string{"127.0.0.1/32", "10.0.0.0/8"}
		c.Reply = "K"
	})
	before := value(adapters.ConnectionsRefusedTotal.WithLabelValues(l.name, netguard.RefusedNotAllowed))
	bad := dialFrom(t, "127.0.0.3", addr)
	write(t, bad, "intruder\n")
	expectClosed(t, bad)
	if d := value(adapters.ConnectionsRefusedTotal.WithLabelValues(l.name, netguard.RefusedNotAllowed)) - before; d != 1 {
		t.Fatalf("not_allowed counted %v", d)
	}
	good := dialFrom(t, "127.0.0.1", addr)
	write(t, good, "friend\n")
	readN(t, good, 1)
	if fs := sink.all(); len(fs) != 1 || string(fs[0].Payload) != "friend" {
		t.Fatalf("frames %v", frames(fs))
	}
}

// A client trickling bytes of a frame that never ends is closed after
// frame_timeout, though it is never idle for idle_timeout; a client
// sending whole frames is not affected.
func TestFrameTimeout(t *testing.T) {
	sink := newSink()
	l, addr := start(t, sink, func(c *Config) {
		c.FrameTimeout = 400 * time.Millisecond
		c.IdleTimeout = 5 * time.Second
		c.Reply = "K"
	})
	before := value(adapters.FrameErrorsTotal.WithLabelValues(l.name, Kind, "frame_timeout"))
	slow := dial(t, addr)
	good := dial(t, addr)
	began := time.Now()
	closedAt := time.Duration(0)
	for i := 0; i < 40 && closedAt == 0; i++ {
		if _, err := slow.Write([]byte("x")); err != nil {
			closedAt = time.Since(began)
			break
		}
		write(t, good, "tick\n")
		readN(t, good, 1)
		time.Sleep(50 * time.Millisecond)
		_ = slow.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := slow.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			closedAt = time.Since(began)
		}
	}
	if closedAt == 0 {
		t.Fatal("trickling client never closed")
	}
	if closedAt < 350*time.Millisecond || closedAt > 3*time.Second {
		t.Fatalf("closed after %v, want about frame_timeout 400ms", closedAt)
	}
	if d := value(adapters.FrameErrorsTotal.WithLabelValues(l.name, Kind, "frame_timeout")) - before; d != 1 {
		t.Fatalf("frame_timeout counted %v", d)
	}
	// Frames in a steady stream each get their own clock: 1s of ticks
	// (more than frame_timeout) on one connection.
	for range 20 {
		write(t, good, "tick\n")
		readN(t, good, 1)
		time.Sleep(50 * time.Millisecond)
	}
	for _, f := range sink.all() {
		if strings.Contains(string(f.Payload), "x") {
			t.Fatalf("partial frame delivered: %q", f.Payload)
		}
	}
}

// One byte and a stall from many connections of one host do not keep a
// device on another host out.
func TestStalledConnectionsDoNotBlockOthers(t *testing.T) {
	sink := newSink()
	l, addr := start(t, sink, func(c *Config) {
		c.MaxConnections = 64
		c.MaxConnectionsPerIP = 8
		c.Reply = "K"
	})
	var stalled []net.Conn
	for range 100 {
		c := dialFrom(t, "127.0.0.2", addr)
		_, _ = c.Write([]byte("x"))
		stalled = append(stalled, c)
	}
	waitFor(t, func() bool {
		n, _ := l.limiter.Count(stalled[0].LocalAddr())
		return n == 8
	})
	dev := dialFrom(t, "127.0.0.1", addr)
	write(t, dev, "reading,1\n")
	readN(t, dev, 1)
	if fs := sink.all(); len(fs) != 1 || string(fs[0].Payload) != "reading,1" {
		t.Fatalf("frames %v", frames(fs))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func envDiscard() adapters.Env {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return adapters.Env{Log: logrus.NewEntry(log)}
}
