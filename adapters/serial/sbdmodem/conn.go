package sbdmodem

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Port is what Conn needs of a serial port: reads that honour a deadline
// (a go.bug.st/serial port wrapped by framing.NewDeadlineReader) and
// writes.
type Port interface {
	io.Reader
	io.Writer
	SetReadDeadline(t time.Time) error
}

// maxLine bounds one text line from the modem; longer runs are noise.
const maxLine = 1024

// CommandError is an AT command the modem answered with ERROR.
type CommandError struct {
	Cmd   string
	Lines []string // information lines before ERROR
}

func (e *CommandError) Error() string { return "sbdmodem: " + e.Cmd + ": ERROR" }

// ProtocolError is an answer Conn could not make sense of (a garbled or
// out-of-step line, a binary response cut short).
type ProtocolError struct {
	Cmd    string
	Detail string
}

func (e *ProtocolError) Error() string { return "sbdmodem: " + e.Cmd + ": " + e.Detail }

// TimeoutError is a command the modem did not finish answering in time.
// It wraps os.ErrDeadlineExceeded.
type TimeoutError struct {
	Cmd     string
	Timeout time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("sbdmodem: %s: no answer within %s", e.Cmd, e.Timeout)
}

func (e *TimeoutError) Unwrap() error { return os.ErrDeadlineExceeded }

// ModemError reports whether err came from the modem's answer (ERROR, a
// timeout, garbled or damaged data) rather than from the port itself: the
// port is still usable after one of these.
func ModemError(err error) bool {
	var (
		ce *CommandError
		pe *ProtocolError
		te *TimeoutError
		ck *ChecksumError
		le *LengthError
	)
	return errors.As(err, &ce) || errors.As(err, &pe) || errors.As(err, &te) ||
		errors.As(err, &ck) || errors.As(err, &le)
}

// Conn is the AT dialogue with one modem. It is not safe for concurrent
// use: the adapter's single goroutine owns it.
//
// Lines are ended by CR or LF; empty lines are skipped. The echo of the
// command just sent (the modem echoes until ATE0) is dropped, and so are
// unsolicited ring alerts ("SBDRING", "+SBDRING"), which are counted for
// TakeRings wherever they turn up.
type Conn struct {
	p       Port
	buf     []byte
	scratch []byte
	rings   int
	// Trace, when set, sees every line read and command written (for
	// trace-level logs).
	Trace func(dir, text string)
}

// NewConn returns a Conn over p.
func NewConn(p Port) *Conn {
	return &Conn{p: p, scratch: make([]byte, 512)}
}

// TakeRings returns the number of ring alerts seen since the last call.
func (c *Conn) TakeRings() int {
	n := c.rings
	c.rings = 0
	return n
}

// fill reads at least one more byte before deadline.
func (c *Conn) fill(deadline time.Time) error {
	if err := c.p.SetReadDeadline(deadline); err != nil {
		return err
	}
	for {
		n, err := c.p.Read(c.scratch)
		if n > 0 {
			c.buf = append(c.buf, c.scratch[:n]...)
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func isRing(l string) bool {
	return strings.EqualFold(l, "SBDRING") || strings.EqualFold(l, "+SBDRING")
}

// readLine returns the next non-empty line, trimmed.
func (c *Conn) readLine(deadline time.Time) (string, error) {
	for {
		i := 0
		for i < len(c.buf) && (c.buf[i] == '\r' || c.buf[i] == '\n') {
			i++
		}
		c.buf = c.buf[i:]
		if j := bytes.IndexAny(c.buf, "\r\n"); j >= 0 {
			line := strings.TrimSpace(string(c.buf[:j]))
			c.buf = c.buf[j+1:]
			if c.Trace != nil {
				c.Trace("read", line)
			}
			if line == "" {
				continue
			}
			return line, nil
		}
		if len(c.buf) > maxLine {
			c.buf = c.buf[:0]
			return "", &ProtocolError{Cmd: "read", Detail: fmt.Sprintf("a line longer than %d bytes", maxLine)}
		}
		if err := c.fill(deadline); err != nil {
			return "", err
		}
	}
}

func (c *Conn) send(cmd string) error {
	if c.Trace != nil {
		c.Trace("write", cmd)
	}
	_, err := c.p.Write([]byte(cmd + "\r"))
	return err
}

// takeLines handles the complete lines already buffered: ring alerts are
// counted, anything else is a late answer to an earlier command and
// dropped. A partial line stays buffered.
func (c *Conn) takeLines() {
	for {
		j := bytes.IndexAny(c.buf, "\r\n")
		if j < 0 {
			return
		}
		l := strings.TrimSpace(string(c.buf[:j]))
		c.buf = c.buf[j+1:]
		switch {
		case isRing(l):
			c.rings++
		case l != "" && c.Trace != nil:
			c.Trace("drop", l)
		}
	}
}

// takeBuffered is takeLines before a new command: a partial line left
// over cannot belong to the new command's answer and is dropped too.
func (c *Conn) takeBuffered() {
	c.takeLines()
	c.buf = c.buf[:0]
}

// Command sends cmd (without the CR) and returns the information lines of
// its answer once the modem says OK. ERROR gives a *CommandError, no final
// result within timeout a *TimeoutError; any other error is the port's.
func (c *Conn) Command(cmd string, timeout time.Duration) ([]string, error) {
	c.takeBuffered()
	if err := c.send(cmd); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	var info []string
	for {
		l, err := c.readLine(deadline)
		if err != nil {
			if isTimeout(err) {
				return info, &TimeoutError{Cmd: cmd, Timeout: timeout}
			}
			var pe *ProtocolError
			if errors.As(err, &pe) {
				pe.Cmd = cmd
			}
			return info, err
		}
		switch {
		case strings.EqualFold(l, cmd):
			// echo
		case isRing(l):
			c.rings++
		case l == "OK":
			return info, nil
		case l == "ERROR":
			return info, &CommandError{Cmd: cmd, Lines: info}
		default:
			info = append(info, l)
		}
	}
}

// Session runs AT+SBDIX (or AT+SBDIXA when alert: answering a ring) and
// parses its result line.
func (c *Conn) Session(alert bool, timeout time.Duration) (SBDIX, error) {
	cmd := "AT+SBDIX"
	if alert {
		cmd = "AT+SBDIXA"
	}
	lines, err := c.Command(cmd, timeout)
	if err != nil {
		return SBDIX{}, err
	}
	for _, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "+SBDIX") {
			r, err := ParseSBDIX(l)
			if err != nil {
				return SBDIX{}, &ProtocolError{Cmd: cmd, Detail: err.Error()}
			}
			return r, nil
		}
	}
	return SBDIX{}, &ProtocolError{Cmd: cmd, Detail: fmt.Sprintf("no +SBDIX line in %q", lines)}
}

// Status runs AT+SBDSX.
func (c *Conn) Status(timeout time.Duration) (SBDSX, error) {
	const cmd = "AT+SBDSX"
	lines, err := c.Command(cmd, timeout)
	if err != nil {
		return SBDSX{}, err
	}
	for _, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "+SBDSX") {
			r, err := ParseSBDSX(l)
			if err != nil {
				return SBDSX{}, &ProtocolError{Cmd: cmd, Detail: err.Error()}
			}
			return r, nil
		}
	}
	return SBDSX{}, &ProtocolError{Cmd: cmd, Detail: fmt.Sprintf("no +SBDSX line in %q", lines)}
}

// IMEI runs AT+CGSN and returns the modem's serial number (its IMEI).
func (c *Conn) IMEI(timeout time.Duration) (string, error) {
	const cmd = "AT+CGSN"
	lines, err := c.Command(cmd, timeout)
	if err != nil {
		return "", err
	}
	for _, l := range lines {
		v := l
		if _, rest, ok := strings.Cut(l, ":"); ok { // "+CGSN: 300..." on some firmware
			v = rest
		}
		v = strings.TrimSpace(v)
		if len(v) >= 10 && len(v) <= 20 && strings.Trim(v, "0123456789") == "" {
			return v, nil
		}
	}
	return "", &ProtocolError{Cmd: cmd, Detail: fmt.Sprintf("no IMEI in %q", lines)}
}

// Clear runs AT+SBDD<which> (0 MO, 1 MT, 2 both) and checks the modem's
// "0" (cleared).
func (c *Conn) Clear(which int, timeout time.Duration) error {
	cmd := fmt.Sprintf("AT+SBDD%d", which)
	lines, err := c.Command(cmd, timeout)
	if err != nil {
		return err
	}
	for _, l := range lines {
		switch l {
		case "0":
			return nil
		case "1":
			return &CommandError{Cmd: cmd, Lines: lines}
		}
	}
	return &ProtocolError{Cmd: cmd, Detail: fmt.Sprintf("no 0/1 result in %q", lines)}
}

// ReadMT runs AT+SBDRB and returns the MT message after checking its
// checksum. A damaged response gives a *ChecksumError (or a
// *ProtocolError when it was cut short) and no message; Conn has then
// skipped past it (Flush), so the command can simply be sent again.
func (c *Conn) ReadMT(timeout time.Duration) ([]byte, error) {
	const cmd = "AT+SBDRB"
	c.takeBuffered()
	if err := c.send(cmd); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	timeoutErr := &TimeoutError{Cmd: cmd, Timeout: timeout}
	// Before the binary block there may be the echo, CR/LF and ring
	// alerts. The block's first byte is the length's high byte, at most
	// 0x07 (MaxMTBytes), so anything above that starts a text line.
	for {
		if len(c.buf) == 0 {
			if err := c.fill(deadline); err != nil {
				if isTimeout(err) {
					return nil, timeoutErr
				}
				return nil, err
			}
		}
		b := c.buf[0]
		if b == '\r' || b == '\n' {
			c.buf = c.buf[1:]
			continue
		}
		if b <= 0x07 {
			break
		}
		l, err := c.readLine(deadline)
		if err != nil {
			if isTimeout(err) {
				return nil, timeoutErr
			}
			return nil, err
		}
		switch {
		case strings.EqualFold(l, cmd):
		case isRing(l):
			c.rings++
		case l == "ERROR":
			return nil, &CommandError{Cmd: cmd}
		default:
			c.Flush(200 * time.Millisecond)
			return nil, &ProtocolError{Cmd: cmd, Detail: fmt.Sprintf("unexpected line %q before the binary response", clip(l))}
		}
	}
	var msg []byte
	for {
		m, n, err := ParseSBDRB(c.buf)
		if errors.Is(err, ErrShort) {
			if ferr := c.fill(deadline); ferr != nil {
				if isTimeout(ferr) {
					have := len(c.buf)
					c.Flush(200 * time.Millisecond)
					return nil, &ProtocolError{Cmd: cmd, Detail: fmt.Sprintf("binary response cut short after %d bytes", have)}
				}
				return nil, ferr
			}
			continue
		}
		var ck *ChecksumError
		if errors.As(err, &ck) {
			c.buf = c.buf[n:]
			c.Flush(200 * time.Millisecond) // the OK that follows
			return nil, err
		}
		if err != nil {
			c.Flush(200 * time.Millisecond)
			return nil, err
		}
		c.buf = c.buf[n:]
		msg = m
		break
	}
	// The final OK. The message is already checked, so a missing OK only
	// costs the next command a late line, which takeBuffered drops.
	for {
		l, err := c.readLine(deadline)
		if err != nil {
			if isTimeout(err) {
				return msg, nil
			}
			return nil, err
		}
		switch {
		case l == "OK":
			return msg, nil
		case isRing(l):
			c.rings++
		case l == "ERROR":
			return nil, &CommandError{Cmd: cmd}
		}
	}
}

// WaitRing reads unsolicited lines until deadline. It returns true as soon
// as a ring alert arrives (or one was seen earlier and not yet taken);
// false, nil at the deadline. Other lines are ignored.
func (c *Conn) WaitRing(deadline time.Time) (bool, error) {
	for {
		if c.rings > 0 {
			c.rings--
			return true, nil
		}
		l, err := c.readLine(deadline)
		if err != nil {
			if isTimeout(err) {
				return false, nil
			}
			return false, err
		}
		if isRing(l) {
			c.rings++
		}
	}
}

// Flush drops what the modem sends until it has been quiet for quiet
// (counting ring alerts on the way), to get back in step after a timeout
// or a damaged answer; it gives up after 20 × quiet of chatter. It
// returns the port's error, if any.
func (c *Conn) Flush(quiet time.Duration) error {
	c.takeLines()
	end := time.Now().Add(20 * quiet)
	for {
		dl := time.Now().Add(quiet)
		if dl.After(end) {
			dl = end
		}
		err := c.fill(dl)
		if err != nil {
			c.takeBuffered()
			if isTimeout(err) {
				return nil
			}
			return err
		}
		c.takeLines()
	}
}

var (
	_ error = (*CommandError)(nil)
	_ error = (*ProtocolError)(nil)
	_ error = (*TimeoutError)(nil)
)
