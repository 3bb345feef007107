package directip

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
)

func pushFrom(t *testing.T, local, addr string, msg []byte) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	return c
}

// One byte and a stall holds a connection slot for read_timeout at most,
// and a second connection from the same address beyond
// max_connections_per_ip is closed at once; the gateway's messages from
// another address go through meanwhile.
func TestPerIPLimitAndStalledClients(t *testing.T) {
	h := start(t, t.TempDir(), func(c *Config) {
		c.MaxConnections = 8
		c.MaxConnectionsPerIP = 1
		c.ReadTimeout = 500 * time.Millisecond
	})
	sample := hexSample(t, "directip_mo_basic.hex")
	stalled := pushFrom(t, "127.0.0.2", h.addr, sample[:1])
	time.Sleep(50 * time.Millisecond) // let it take its slot
	extra := pushFrom(t, "127.0.0.2", h.addr, sample)
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(extra); len(got) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second connection from one address: % x, %v", got, err)
	}

	gw := pushFrom(t, "127.0.0.1", h.addr, sample)
	e := h.next(t)
	if e.frame.Identity != "300234010000010" {
		t.Fatalf("frame %+v", e.frame)
	}
	e.reply <- nil
	if got := readAll(t, gw); !bytes.Equal(got, confirmation) {
		t.Fatalf("confirmation % x", got)
	}

	began := time.Now()
	stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(stalled); len(got) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled connection: % x, %v", got, err)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("stalled connection held %v (read_timeout 500ms)", d)
	}
	h.noEmit(t, 50*time.Millisecond)

	// The slot is free again: the same address may send now (another
	// message: the first is a duplicate by now).
	again := pushFrom(t, "127.0.0.2", h.addr, hexSample(t, "directip_mo_location_south.hex"))
	e = h.next(t)
	e.reply <- nil
	if got := readAll(t, again); !bytes.Equal(got, confirmation) {
		t.Fatalf("confirmation % x", got)
	}
}

func TestPerIPConfig(t *testing.T) {
	c := DefaultConfig()
	if c.MaxConnectionsPerIP != 0 {
		t.Fatalf("default max_connections_per_ip %d, want 0 (the gateway uses few addresses)", c.MaxConnectionsPerIP)
	}
	c.MaxConnectionsPerIP = -1
	err := c.Validate()
	var fe *adapters.FieldError
	if !errors.As(err, &fe) || fe.Field != "max_connections_per_ip" {
		t.Fatalf("Validate: %v", err)
	}
}
