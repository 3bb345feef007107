// Command load is the load generator of `make bench`: it connects to a tcp
// adapter and writes newline CSV telemetry,
//
//	deviceId,time,temperature,pressure,flow
//
// over several connections. Device d always goes over connection d % conns
// (a device has one connection, as in the field). The time column is the
// wall-clock time the line was written (RFC 3339, nanoseconds): in rate
// mode per line, so that the sink can measure frame-to-accept latency; at
// full speed per 64 KiB chunk.
//
//	load -addr 127.0.0.1:5000 -lines 1000000 -conns 4 -devices 100
//	load -addr 127.0.0.1:5000 -lines 10000 -rate 1000
//
// It prints one JSON object: the time of the first byte written, the time
// the last write returned, lines and bytes.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// Result is what load prints.
type Result struct {
	StartNS int64 `json:"startNs"`
	EndNS   int64 `json:"endNs"`
	// ClosedNS is when the adapter had closed every connection after the
	// last line: it reads a connection to its end and closes it only
	// after the last frame is durably queued.
	ClosedNS int64 `json:"closedNs"`
	Lines    int64 `json:"lines"`
	Bytes    int64 `json:"bytes"`
}

func main() {
	addr := flag.String("addr", "", "the tcp adapter's address")
	lines := flag.Int64("lines", 1_000_000, "lines to send in all")
	conns := flag.Int("conns", 4, "connections")
	devices := flag.Int("devices", 100, "devices (deviceId BENCH0000…)")
	rate := flag.Float64("rate", 0, "lines per second in all; 0 = as fast as the connections take them")
	prefix := flag.String("prefix", "BENCH", "deviceId prefix")
	flag.Parse()
	if *addr == "" || *conns < 1 || *devices < 1 || *lines < 1 {
		flag.Usage()
		os.Exit(2)
	}
	cs := make([]net.Conn, *conns)
	for i := range cs {
		c, err := net.Dial("tcp", *addr)
		if err != nil {
			log.Fatal(err)
		}
		cs[i] = c
	}
	per := make([]int64, *conns)
	for i := range per {
		per[i] = *lines / int64(*conns)
		if int64(i) < *lines%int64(*conns) {
			per[i]++
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	for i, c := range cs {
		wg.Go(func() {
			g := newGen(*prefix, i, *conns, *devices)
			var n int64
			var err error
			if *rate > 0 {
				interval := time.Duration(float64(time.Second) * float64(*conns) / *rate)
				// Connections take turns: the lines are evenly spread.
				n, err = g.paced(c, per[i], interval, start.Add(interval*time.Duration(i)/time.Duration(*conns)))
			} else {
				n, err = g.full(c, per[i])
			}
			if err != nil {
				log.Fatalf("connection %d: %v", i, err)
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	end := time.Now()
	// Wait for the adapter to close its side, so that every byte is read.
	for _, c := range cs {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Minute))
		var b [64]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				break
			}
		}
		c.Close()
	}
	closed := time.Now()
	_ = json.NewEncoder(os.Stdout).Encode(Result{StartNS: start.UnixNano(), EndNS: end.UnixNano(), ClosedNS: closed.UnixNano(), Lines: *lines, Bytes: total})
}

// gen writes the lines of one connection.
type gen struct {
	ids  [][]byte // deviceIds of this connection
	next int
	i    int
	buf  []byte
}

func newGen(prefix string, conn, conns, devices int) *gen {
	g := &gen{}
	for d := conn; d < devices; d += conns {
		g.ids = append(g.ids, fmt.Appendf(nil, "%s%04d", prefix, d))
	}
	if len(g.ids) == 0 {
		g.ids = append(g.ids, fmt.Appendf(nil, "%s%04d", prefix, conn))
	}
	return g
}

// line appends one line with time ts (already formatted).
func (g *gen) line(dst, ts []byte) []byte {
	id := g.ids[g.next]
	g.next = (g.next + 1) % len(g.ids)
	k := g.i
	g.i++
	dst = append(dst, id...)
	dst = append(dst, ',')
	dst = append(dst, ts...)
	dst = append(dst, ',')
	// temperature 15.0..34.9, pressure 990.00..1029.99, flow 0.00..9.99
	dst = strconv.AppendFloat(dst, 15+float64(k%200)/10, 'f', 1, 64)
	dst = append(dst, ',')
	dst = strconv.AppendFloat(dst, 990+float64(k%4000)/100, 'f', 2, 64)
	dst = append(dst, ',')
	dst = strconv.AppendFloat(dst, float64(k%1000)/100, 'f', 2, 64)
	return append(dst, '\n')
}

func stamp(t time.Time) []byte {
	return t.UTC().AppendFormat(nil, time.RFC3339Nano)
}

// full writes n lines as fast as the connection takes them, in 64 KiB
// writes.
func (g *gen) full(c net.Conn, n int64) (int64, error) {
	var total int64
	for n > 0 {
		g.buf = g.buf[:0]
		ts := stamp(time.Now())
		for n > 0 && len(g.buf) < 64<<10 {
			g.buf = g.line(g.buf, ts)
			n--
		}
		m, err := c.Write(g.buf)
		total += int64(m)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// paced writes n lines, one every interval, each stamped when written.
func (g *gen) paced(c net.Conn, n int64, interval time.Duration, start time.Time) (int64, error) {
	var total int64
	for i := int64(0); i < n; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		g.buf = g.line(g.buf[:0], stamp(time.Now()))
		m, err := c.Write(g.buf)
		total += int64(m)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
