// Package sbdmodemtest is an Iridium 9602-style modem emulator for tests:
// it speaks the AT dialogue of protocols.md §5 on one end of a serial line
// (a socat pseudo-terminal, a net.Pipe) with scripted outcomes — messages
// waiting at the gateway, failed sessions, damaged SBDRB reads, ring
// alerts — and records every command it was sent, so that a test can
// assert what the driver did and in which order.
package sbdmodemtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/vigd/vigd/adapters/serial/sbdmodem"
)

// Emulator is one scripted modem. Configure it before Serve; the
// scripting methods are safe to call while it serves.
type Emulator struct {
	// IMEI is answered to AT+CGSN.
	IMEI string

	mu        sync.Mutex
	w         io.Writer
	echo      bool
	ringAlert bool
	mailbox   [][]byte // SBDRB responses of the MT messages queued at the gateway
	mt        []byte   // the MT buffer (an SBDRB response); nil when empty
	momsn     int
	mtmsn     int
	failures  []int // MO status of the next sessions (failures)
	corrupt   int   // damage the checksum of this many next SBDRB reads
	cut       int   // cut this many next SBDRB reads short
	commands  []string
	muted     bool
	changed   chan struct{}
	lastMTMSN int
}

// New returns an emulator with echo on (as a modem is at power-up).
func New(imei string) *Emulator {
	return &Emulator{IMEI: imei, echo: true, momsn: 22, mtmsn: 236, changed: make(chan struct{})}
}

// Queue puts an MT message at the gateway; the next successful session
// moves it into the MT buffer.
func (e *Emulator) Queue(msg []byte) { e.QueueSBDRB(sbdmodem.EncodeSBDRB(msg)) }

// QueueSBDRB queues a message given as the exact SBDRB binary response
// the modem will send for it (u16 length, data, u16 checksum), such as
// the at_sbdrb_hello.hex sample.
func (e *Emulator) QueueSBDRB(raw []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mailbox = append(e.mailbox, append([]byte(nil), raw...))
}

// Fail makes the next sessions fail with these MO status codes (32 no
// network, 35 busy, ...), one per session.
func (e *Emulator) Fail(moStatus ...int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failures = append(e.failures, moStatus...)
}

// CorruptReads damages the checksum of the next n SBDRB responses.
func (e *Emulator) CorruptReads(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.corrupt += n
}

// CutReads sends only the first half of the next n SBDRB responses.
func (e *Emulator) CutReads(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cut += n
}

// Mute makes the modem record commands but answer nothing (a hung modem)
// until Mute(false).
func (e *Emulator) Mute(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.muted = on
}

// Ring sends an unsolicited ring alert (SBDRING), as the modem does when
// the gateway has a message and ring alerts are on (AT+SBDMTA=1).
func (e *Emulator) Ring() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.w == nil {
		return fmt.Errorf("sbdmodemtest: not serving")
	}
	_, err := e.w.Write([]byte("SBDRING\r\n"))
	return err
}

// RingAlerts reports whether the driver turned ring alerts on.
func (e *Emulator) RingAlerts() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ringAlert
}

// MTBuffer returns the MT buffer (an SBDRB response), nil when empty.
func (e *Emulator) MTBuffer() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]byte(nil), e.mt...)
}

// Mailbox is the number of messages still queued at the gateway.
func (e *Emulator) Mailbox() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.mailbox)
}

// Commands returns the commands received so far, upper-cased, in order.
func (e *Emulator) Commands() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.commands...)
}

// Count is the number of commands received equal to cmd.
func (e *Emulator) Count(cmd string) int {
	n := 0
	for _, c := range e.Commands() {
		if c == cmd {
			n++
		}
	}
	return n
}

// WaitFor blocks until cond(commands) holds or timeout passes; it reports
// whether cond held.
func (e *Emulator) WaitFor(timeout time.Duration, cond func(cmds []string) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		ok := cond(append([]string(nil), e.commands...))
		ch := e.changed
		e.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
}

// Serve answers commands read from rw until reading fails (the line was
// closed); it returns that error.
func (e *Emulator) Serve(rw io.ReadWriter) error {
	e.mu.Lock()
	e.w = rw
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.w == rw { // not yet replaced by a Serve on a new line
			e.w = nil
		}
		e.mu.Unlock()
	}()
	var line []byte
	buf := make([]byte, 256)
	for {
		n, err := rw.Read(buf)
		for _, b := range buf[:n] {
			switch b {
			case '\r':
				if len(line) > 0 {
					if werr := e.handle(string(line)); werr != nil {
						return werr
					}
				}
				line = line[:0]
			case '\n':
			default:
				line = append(line, b)
			}
		}
		if err != nil {
			return err
		}
	}
}

func (e *Emulator) handle(raw string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	cmd := strings.ToUpper(strings.TrimSpace(raw))
	e.commands = append(e.commands, cmd)
	close(e.changed)
	e.changed = make(chan struct{})
	if e.muted {
		return nil
	}

	var out bytes.Buffer
	if e.echo {
		out.WriteString(raw + "\r")
	}
	info := func(lines ...string) {
		for _, l := range lines {
			out.WriteString("\r\n" + l + "\r\n")
		}
	}
	ok := func() { out.WriteString("\r\nOK\r\n") }
	switch {
	case cmd == "AT", cmd == "AT&K0", cmd == "AT&K3":
		ok()
	case cmd == "ATE0", cmd == "ATE1":
		e.echo = cmd == "ATE1"
		ok()
	case strings.HasPrefix(cmd, "AT+SBDMTA="):
		e.ringAlert = strings.TrimPrefix(cmd, "AT+SBDMTA=") == "1"
		ok()
	case cmd == "AT+CGSN":
		info(e.IMEI)
		ok()
	case cmd == "AT+SBDIX", cmd == "AT+SBDIXA":
		info(e.session(cmd == "AT+SBDIXA"))
		ok()
	case cmd == "AT+SBDSX":
		flag := 0
		if e.mt != nil {
			flag = 1
		}
		info(fmt.Sprintf("+SBDSX: 0, %d, %d, %d, 0, %d", e.momsn, flag, e.lastMTMSN, len(e.mailbox)))
		ok()
	case cmd == "AT+SBDRB":
		resp := e.mt
		if resp == nil {
			resp = sbdmodem.EncodeSBDRB(nil)
		}
		resp = append([]byte(nil), resp...)
		if e.corrupt > 0 {
			e.corrupt--
			resp[len(resp)-1] ^= 0x5A
		}
		if e.cut > 0 {
			e.cut--
			resp = resp[:len(resp)/2]
			// A real line that drops bytes goes quiet; so do we.
			_, err := e.w.Write(append(out.Bytes(), resp...))
			return err
		}
		out.Write(resp)
		ok()
	case cmd == "AT+SBDD0":
		info("0")
		ok()
	case cmd == "AT+SBDD1", cmd == "AT+SBDD2":
		e.mt = nil
		info("0")
		ok()
	default:
		out.WriteString("\r\nERROR\r\n")
	}
	_, err := e.w.Write(out.Bytes())
	return err
}

// session plays one SBDIX(A) and returns its result line. Like a real
// modem, a received message overwrites the MT buffer.
func (e *Emulator) session(alert bool) string {
	prefix := "+SBDIX: %d, %d, %d, %d, %d, %d"
	if alert {
		prefix = "+SBDIXA:%d,%d,%d,%d,%d,%d" // the guide's spacing
	}
	if len(e.failures) > 0 {
		mo := e.failures[0]
		e.failures = e.failures[1:]
		return fmt.Sprintf(prefix, mo, e.momsn, 2, 0, 0, 0)
	}
	if len(e.mailbox) == 0 {
		return fmt.Sprintf(prefix, 0, e.momsn, 0, 0, 0, 0)
	}
	e.mt = e.mailbox[0]
	e.mailbox = e.mailbox[1:]
	e.mtmsn++
	e.lastMTMSN = e.mtmsn
	length := 0
	if len(e.mt) >= 2 {
		length = int(binary.BigEndian.Uint16(e.mt))
	}
	return fmt.Sprintf(prefix, 0, e.momsn, 1, e.mtmsn, length, len(e.mailbox))
}

// The Conn under test and the emulator meet over anything a serial line
// looks like: a pty, a net.Pipe.
var _ sbdmodem.Port = net.Conn(nil)
