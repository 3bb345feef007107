package framing

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// repeatReader serves its data n times in reads of up to 1500 bytes (a TCP
// segment), the way a socket would.
type repeatReader struct {
	data []byte
	pos  int
	left int
}

func (r *repeatReader) Read(b []byte) (int, error) {
	if r.pos == len(r.data) {
		if r.left == 0 {
			return 0, io.EOF
		}
		r.left--
		r.pos = 0
	}
	n := copy(b[:min(len(b), 1500)], r.data[r.pos:])
	r.pos += n
	return n, nil
}

func benchFramer(b *testing.B, cfg Config, frame []byte, perRound int) {
	round := bytes.Repeat(frame, perRound)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	rounds := b.N/perRound + 1
	fr, err := New(cfg, &repeatReader{data: round, pos: len(round), left: rounds})
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		if _, err := fr.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLine(b *testing.B) {
	line := []byte("$GPRMC,173138.000,A,3145.5214,N,09704.5057,W,000.0,000.0,170318,000.0,E,N*00\r\n")
	benchFramer(b, Config{Type: "line"}, line, 100)
}

func BenchmarkLineAny(b *testing.B) {
	line := []byte("\"2024-01-01 00:00:00\",1234,12.5,13.1,NAN,7.25\r\n")
	benchFramer(b, Config{Type: "line", Terminator: "any"}, line, 100)
}

func BenchmarkLengthPrefix(b *testing.B) {
	body := bytes.Repeat([]byte{0xA5}, 100)
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(body)))
	frame = append(frame, body...)
	benchFramer(b, Config{Type: "length"}, frame, 100)
}

func BenchmarkLengthPrefixLarge(b *testing.B) {
	body := bytes.Repeat([]byte{0xA5}, 60000)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	frame = append(frame, body...)
	benchFramer(b, Config{Type: "length", LengthBytes: 4}, frame, 2)
}

func BenchmarkSLIP(b *testing.B) {
	benchFramer(b, Config{Type: "slip"}, EncodeSLIP(bytes.Repeat([]byte{1, 0xC0, 2, 3}, 25)), 100)
}

func BenchmarkCOBS(b *testing.B) {
	benchFramer(b, Config{Type: "cobs"}, EncodeCOBS(bytes.Repeat([]byte{1, 0, 2, 3}, 25)), 100)
}
