//go:build linux

package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ackDevice behaves like a field device with a store-and-forward buffer:
// it sends one line, waits for "ACK\n", and only then moves to the next
// line. When the connection breaks (or no ACK comes), it reconnects and
// sends the same line again: the line may then be queued twice at the
// gateway if the first copy was queued and only the ACK was lost.
type ackDevice struct {
	name  string
	addr  string
	pace  time.Duration // pause between lines
	pause *atomic.Bool  // when set, the device holds its next line

	mu         sync.Mutex
	acked      int         // lines 1..acked have their ACK
	sent       int         // highest line written at least once
	resent     map[int]int // line → times written, for lines written more than once
	naks       int
	reconnects int
}

func newAckDevice(name, addr string, pace time.Duration, pause *atomic.Bool) *ackDevice {
	return &ackDevice{name: name, addr: addr, pace: pace, pause: pause, resent: map[int]int{}}
}

// run sends lines until ctx ends.
func (d *ackDevice) run(ctx context.Context) {
	var c net.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	buf := make([]byte, 4)
	tries := 0
	for ctx.Err() == nil {
		if d.pause != nil && d.pause.Load() {
			sleepCtx(ctx, 10*time.Millisecond)
			continue
		}
		if c == nil {
			var err error
			dl := net.Dialer{Timeout: time.Second}
			if c, err = dl.DialContext(ctx, "tcp", d.addr); err != nil {
				c = nil
				sleepCtx(ctx, 20*time.Millisecond)
				continue
			}
			d.mu.Lock()
			d.reconnects++
			d.mu.Unlock()
		}
		d.mu.Lock()
		seq := d.acked + 1
		d.mu.Unlock()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.WriteString(c, line(d.name, seq))
		tries++
		d.mu.Lock()
		d.sent = max(d.sent, seq)
		if tries > 1 {
			d.resent[seq] = tries
		}
		d.mu.Unlock()
		if err == nil {
			_, err = io.ReadFull(c, buf)
		}
		if err != nil {
			// Connection lost before the ACK: reconnect, send it again.
			c.Close()
			c = nil
			continue
		}
		d.mu.Lock()
		switch {
		case bytes.Equal(buf, []byte("ACK\n")):
			d.acked = seq
			tries = 0
		case bytes.Equal(buf, []byte("NAK\n")):
			// Dead-lettered: kept by vigd, acknowledged; not expected in
			// these tests, counted.
			d.naks++
			d.acked = seq
			tries = 0
		default:
			d.mu.Unlock()
			c.Close()
			c = nil
			continue
		}
		d.mu.Unlock()
		if d.pace > 0 {
			sleepCtx(ctx, d.pace)
		}
	}
}

type deviceFigures struct {
	acked, sent, reconnects, naks int
	resent                        map[int]int
}

func (d *ackDevice) figures() deviceFigures {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := make(map[int]int, len(d.resent))
	for k, v := range d.resent {
		r[k] = v
	}
	return deviceFigures{acked: d.acked, sent: d.sent, reconnects: d.reconnects, naks: d.naks, resent: r}
}

// dial connects to the tcp adapter, retrying for a while: /healthz
// answers before the adapters listen.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return c, err
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// streamDevice sends lines 1..n as fast as the gateway takes them, chunk
// lines per write, and counts the ACKs on a second goroutine (no kill in
// the tests that use it: a broken connection is an error).
type streamDevice struct {
	name  string
	n     int
	chunk int
	acks  atomic.Int64

	mu  sync.Mutex
	err error // the first failure
}

func (d *streamDevice) fail(err error) {
	d.mu.Lock()
	if d.err == nil {
		d.err = err
	}
	d.mu.Unlock()
}

func (d *streamDevice) run(ctx context.Context, addr string) {
	c, err := dial(ctx, addr)
	if err != nil {
		d.fail(err)
		return
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 64<<10)
		var total int64
		for total < int64(d.n)*4 {
			// No ACK for two minutes is a failure, not a hang.
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
			m, err := c.Read(buf)
			if m > 0 {
				total += int64(m)
				d.acks.Store(total / 4)
			}
			if err != nil {
				if ctx.Err() == nil {
					d.fail(err)
				}
				return
			}
		}
	}()
	var b []byte
	for seq := 1; seq <= d.n; {
		b = b[:0]
		for k := 0; k < d.chunk && seq <= d.n; k++ {
			b = append(b, line(d.name, seq)...)
			seq++
		}
		if _, err := c.Write(b); err != nil {
			if ctx.Err() == nil {
				d.fail(err)
			}
			c.Close() // the reader stops too
			break
		}
	}
	<-readDone
}

func (d *streamDevice) failed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}
