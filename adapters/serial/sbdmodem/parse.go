// Package sbdmodem speaks the AT command dialogue of a local Iridium
// 9602/9603 SBD modem on a serial line (protocols.md §5): the parsers for
// the +SBDIX / +SBDSX result lines and the binary AT+SBDRB response, the
// MO status table, and Conn, which sends commands and reads their answers
// over a port with read deadlines.
//
// It knows nothing of frames, sinks or schedules: the serial adapter's
// "sbd-modem" mode (adapters/serial) drives it and decides when a mailbox
// check runs and when the MT buffer may be cleared. The package is separate
// so that the parsers can be fuzzed and the dialogue tested without a port.
//
// There is no Go library for the 9602 AT dialogue worth depending on; the
// commands are few and their replies are simple lines plus one binary
// block, so it is written here.
package sbdmodem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxMTBytes bounds the length field of an SBDRB response. The 9602/9603
// take MT messages of up to 270 bytes and the older 9522B up to 1890; the
// bound is kept below 0x0800 so that the first byte of a binary response
// (the length's high byte, 0x00..0x07) can never be taken for text.
const MaxMTBytes = 1960

// MT status values of +SBDIX.
const (
	MTNone     = 0 // no message was waiting at the gateway
	MTReceived = 1 // a message is in the MT buffer: read it with AT+SBDRB
	MTError    = 2 // the mailbox check failed
)

// SBDIX is the result of AT+SBDIX or AT+SBDIXA:
//
//	+SBDIX: <MO status>, <MOMSN>, <MT status>, <MTMSN>, <MT length>, <MT queued>
type SBDIX struct {
	MOStatus int
	MOMSN    int
	MTStatus int
	MTMSN    int
	MTLength int
	MTQueued int
	// Alert says the line had the +SBDIXA form (a session answering a
	// ring alert).
	Alert bool
}

// String renders the result as the modem would (the plain form).
func (r SBDIX) String() string {
	p := "+SBDIX"
	if r.Alert {
		p = "+SBDIXA"
	}
	return fmt.Sprintf("%s: %d, %d, %d, %d, %d, %d", p, r.MOStatus, r.MOMSN, r.MTStatus, r.MTMSN, r.MTLength, r.MTQueued)
}

// ParseSBDIX reads a +SBDIX or +SBDIXA line. It is tolerant of spacing
// (the guide prints both "+SBDIX: 0, 23, 1" and "+SBDIXA:0,23,1"), of the
// case of the prefix and of a trailing CR/LF, and strict about the field
// count and each value's range, because the adapter acts on them.
func ParseSBDIX(line string) (SBDIX, error) {
	alert, f, err := fields(line, "+SBDIX", "+SBDIXA")
	if err != nil {
		return SBDIX{}, err
	}
	r := SBDIX{Alert: alert}
	checks := []struct {
		name   string
		dst    *int
		lo, hi int
	}{
		{"MO status", &r.MOStatus, 0, 255},
		{"MOMSN", &r.MOMSN, 0, 65535},
		{"MT status", &r.MTStatus, 0, 2},
		{"MTMSN", &r.MTMSN, -1, 65535},
		{"MT length", &r.MTLength, 0, MaxMTBytes},
		{"MT queued", &r.MTQueued, 0, 65535},
	}
	for i, c := range checks {
		v, err := number(f[i], c.name, c.lo, c.hi)
		if err != nil {
			return SBDIX{}, err
		}
		*c.dst = v
	}
	return r, nil
}

// SBDSX is the result of AT+SBDSX (the modem's buffer status):
//
//	+SBDSX: <MO flag>, <MOMSN>, <MT flag>, <MTMSN>, <RA flag>, <msg waiting>
type SBDSX struct {
	MOFlag     int // 1: the MO buffer holds a message
	MOMSN      int
	MTFlag     int // 1: the MT buffer holds a message
	MTMSN      int // of the last MT session; -1 when none
	RAFlag     int // 1: a ring alert is pending
	MsgWaiting int // MT messages queued at the gateway (as of the last session)
}

// ParseSBDSX reads a +SBDSX line, with the same tolerance as ParseSBDIX.
func ParseSBDSX(line string) (SBDSX, error) {
	_, f, err := fields(line, "+SBDSX", "")
	if err != nil {
		return SBDSX{}, err
	}
	var r SBDSX
	checks := []struct {
		name   string
		dst    *int
		lo, hi int
	}{
		{"MO flag", &r.MOFlag, 0, 1},
		{"MOMSN", &r.MOMSN, 0, 65535},
		{"MT flag", &r.MTFlag, 0, 1},
		{"MTMSN", &r.MTMSN, -1, 65535},
		{"RA flag", &r.RAFlag, 0, 1},
		{"messages waiting", &r.MsgWaiting, 0, 65535},
	}
	for i, c := range checks {
		v, err := number(f[i], c.name, c.lo, c.hi)
		if err != nil {
			return SBDSX{}, err
		}
		*c.dst = v
	}
	return r, nil
}

// fields splits "<prefix>: a, b, c, d, e, f" into six trimmed fields; alt
// is a second accepted prefix (reported as alternate = true).
func fields(line, prefix, alt string) (alternate bool, f []string, err error) {
	s := strings.TrimSpace(line)
	head, rest, ok := strings.Cut(s, ":")
	if !ok {
		return false, nil, fmt.Errorf("%s: no ':' in %q", prefix, clip(line))
	}
	head = strings.TrimSpace(head)
	switch {
	case strings.EqualFold(head, prefix):
	case alt != "" && strings.EqualFold(head, alt):
		alternate = true
	default:
		return false, nil, fmt.Errorf("%s: unexpected prefix in %q", prefix, clip(line))
	}
	f = strings.Split(rest, ",")
	if len(f) != 6 {
		return false, nil, fmt.Errorf("%s: %d fields, want 6, in %q", prefix, len(f), clip(line))
	}
	return alternate, f, nil
}

func number(s, name string, lo, hi int) (int, error) {
	t := strings.TrimSpace(s)
	// Atoi accepts a leading '+', which no modem sends; refuse it so that
	// formatting a parsed result gives the same line back.
	if t == "" || t[0] == '+' || len(t) > 7 {
		return 0, fmt.Errorf("%s %q is not a number", name, clip(s))
	}
	v, err := strconv.Atoi(t)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a number", name, clip(s))
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%s %d is out of range %d..%d", name, v, lo, hi)
	}
	return v, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Checksum is the SBD checksum: the low 16 bits of the sum of the bytes.
func Checksum(b []byte) uint16 {
	var s uint16
	for _, c := range b {
		s += uint16(c)
	}
	return s
}

// EncodeSBDRB builds an SBDRB binary response (emulators, tests):
// u16 BE length, the message, u16 BE checksum.
func EncodeSBDRB(msg []byte) []byte {
	out := make([]byte, 2, len(msg)+4)
	binary.BigEndian.PutUint16(out, uint16(len(msg)))
	out = append(out, msg...)
	return binary.BigEndian.AppendUint16(out, Checksum(msg))
}

// ErrShort says the bytes hold only the start of an SBDRB response.
var ErrShort = errors.New("sbdmodem: SBDRB response incomplete")

// ChecksumError is an SBDRB response whose checksum does not match its
// message: the bytes were damaged on the serial line.
type ChecksumError struct {
	Length    int
	Got, Want uint16 // Got: in the response; Want: computed
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("sbdmodem: SBDRB checksum %#04x, computed %#04x over %d bytes", e.Got, e.Want, e.Length)
}

// LengthError is an SBDRB length field over MaxMTBytes: the response
// cannot be read (the line is garbled or out of step).
type LengthError struct{ Length int }

func (e *LengthError) Error() string {
	return fmt.Sprintf("sbdmodem: SBDRB length %d exceeds %d", e.Length, MaxMTBytes)
}

// ParseSBDRB reads the binary AT+SBDRB response at the start of b: u16 BE
// length, the message, u16 BE checksum (the low 16 bits of the message's
// byte sum). It returns the message (a copy) and the number of bytes the
// response took. Errors: ErrShort (read more and call again), a
// *LengthError, or a *ChecksumError — then n still counts the whole
// response so that the caller can skip it, and msg is nil: damaged data is
// never returned as a message.
func ParseSBDRB(b []byte) (msg []byte, n int, err error) {
	if len(b) < 2 {
		return nil, 0, ErrShort
	}
	l := int(binary.BigEndian.Uint16(b))
	if l > MaxMTBytes {
		return nil, 0, &LengthError{Length: l}
	}
	n = 2 + l + 2
	if len(b) < n {
		return nil, 0, ErrShort
	}
	body := b[2 : 2+l]
	got := binary.BigEndian.Uint16(b[2+l:])
	if want := Checksum(body); got != want {
		return nil, n, &ChecksumError{Length: l, Got: got, Want: want}
	}
	return append([]byte{}, body...), n, nil
}

// MOClass groups the MO status codes of +SBDIX by what to do next.
type MOClass int

const (
	// MOSuccess: codes 0–4; the session took place.
	MOSuccess MOClass = iota
	// MORetry: a transient failure (32 no network service, 18 RF drop,
	// 17 gateway not responding, ...): try again later, backing off.
	MORetry
	// MOBusy: 35, the modem is busy; try again soon.
	MOBusy
	// MOFatal: 12 too many segments, 14 invalid segment size, 15 access
	// denied, 16 ISU locked — the modem or its subscription is
	// misconfigured. Retrying sooner does not help; an operator must act.
	MOFatal
)

func (c MOClass) String() string {
	switch c {
	case MOSuccess:
		return "success"
	case MORetry:
		return "retry"
	case MOBusy:
		return "busy"
	case MOFatal:
		return "fatal"
	}
	return "unknown"
}

// Well-known MO status codes.
const (
	MONoNetwork    = 32
	MOBusyCode     = 35
	MOWaitRegister = 36 // must wait 3 minutes since the last registration
)

// ClassifyMO says what an MO status code means for the next attempt.
// SparkFun's driver treats 12, 14 and 16 as fatal; 15 (access denied) is a
// provisioning problem too and is grouped with them.
func ClassifyMO(status int) MOClass {
	switch {
	case status >= 0 && status <= 4:
		return MOSuccess
	case status == MOBusyCode:
		return MOBusy
	case status == 12, status == 14, status == 15, status == 16:
		return MOFatal
	default:
		return MORetry
	}
}

// MOStatusText describes an MO status code for logs.
func MOStatusText(status int) string {
	switch status {
	case 0:
		return "MO transfer ok"
	case 1:
		return "MO ok, MT message too big"
	case 2:
		return "MO ok, location update rejected"
	case 3, 4:
		return "MO ok (reserved)"
	case 10:
		return "gateway timeout"
	case 11:
		return "gateway MO queue full"
	case 12:
		return "too many MO segments"
	case 13:
		return "session incomplete"
	case 14:
		return "invalid segment size"
	case 15:
		return "access denied"
	case 16:
		return "ISU locked"
	case 17:
		return "gateway not responding"
	case 18:
		return "RF drop"
	case 19:
		return "link failure"
	case 32:
		return "no network service"
	case 33:
		return "antenna fault"
	case 34:
		return "radio disabled"
	case 35:
		return "ISU busy"
	case 36:
		return "must wait 3 minutes since the last registration"
	case 37:
		return "SBD service temporarily disabled"
	case 38:
		return "traffic management period"
	case 64:
		return "band violation"
	}
	return "failure (reserved code)"
}

var (
	_ error        = (*ChecksumError)(nil)
	_ error        = (*LengthError)(nil)
	_ fmt.Stringer = SBDIX{}
	_ fmt.Stringer = MOClass(0)
)
