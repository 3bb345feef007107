package sbdmodem

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"
)

// scriptPort plays a fixed answer, in reads of at most chunk bytes; once
// it is used up every read times out. Writes are discarded.
type scriptPort struct {
	data  []byte
	chunk int
}

func (p *scriptPort) SetReadDeadline(time.Time) error { return nil }
func (p *scriptPort) Write(b []byte) (int, error)     { return len(b), nil }
func (p *scriptPort) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	n := copy(b, p.data[:min(len(p.data), p.chunk)])
	p.data = p.data[n:]
	return n, nil
}

var _ io.ReadWriter = (*scriptPort)(nil)

// FuzzReadMT feeds arbitrary modem answers to AT+SBDRB: ReadMT never
// panics, and a message it returns is always one whose checksummed
// response is in the answer (damaged data is never returned as good).
func FuzzReadMT(f *testing.F) {
	seeds := []string{
		"AT+SBDRB\r\x00\x05Hello\x01\xf4\r\nOK\r\n",
		"\x00\x05Hello\x01\xf4\r\nOK\r\n",
		"\r\nSBDRING\r\n\x00\x05Hello\x01\xf4\r\nOK\r\n",
		"\x00\x05Hello\x01\xf5\r\nOK\r\n",
		"\x00\x05Hel",
		"\r\nERROR\r\n",
		"garbage\r\n",
		"\x00\x00\x00\x00\r\nOK\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, answer []byte, chunk uint8) {
		p := &scriptPort{data: append([]byte(nil), answer...), chunk: int(chunk%16) + 1}
		c := NewConn(p)
		msg, err := c.ReadMT(time.Second)
		if err != nil {
			if msg != nil {
				t.Fatalf("error %v with data %q", err, msg)
			}
			if !ModemError(err) {
				t.Fatalf("%v is not a modem error (the port never failed)", err)
			}
			return
		}
		if !bytes.Contains(answer, EncodeSBDRB(msg)) {
			t.Fatalf("returned %q, whose response %x is not in the answer %x", msg, EncodeSBDRB(msg), answer)
		}
	})
}
