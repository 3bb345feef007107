package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Frame layout (see doc.go, FORMAT):
//
//	[0]     magic 0xA7 (also the format version)
//	[1:5]   payload length, uint32 little endian
//	[5:13]  sequence number, uint64 little endian
//	[13:17] CRC-32C (Castagnoli) of bytes [0:13] and of the payload
//	[17:]   payload
const (
	frameMagic  = 0xA7
	headerSize  = 17
	crcOffset   = 13
	minPayload  = 5 // kind, time varint, three empty string lengths
	cursorMagic = "VQC1"
	cursorSize  = 4 + 8 + 8 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// errTruncated: the frame runs past the readable end of the segment.
	errTruncated = errors.New("truncated frame")
	// errGarbled: the bytes at this offset are not a valid frame.
	errGarbled = errors.New("garbled frame")
)

func frameCRC(hdr, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[:crcOffset])
	return crc32.Update(c, castagnoli, payload)
}

// appendFrame appends a complete frame holding payload to dst. The header
// is built in place in dst: a local array would escape through the crc32
// function value and cost an allocation per record.
func appendFrame(dst []byte, seq uint64, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, frameMagic)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	dst = binary.LittleEndian.AppendUint32(dst, frameCRC(dst[start:], payload))
	return append(dst, payload...)
}

// parseHeader checks what can be checked before the payload is read: the
// magic byte and a length that fits the bytes left. It returns the payload
// length and the sequence number.
func parseHeader(h []byte, left int64, maxPayload int) (int, uint64, error) {
	if h[0] != frameMagic {
		return 0, 0, errGarbled
	}
	n := binary.LittleEndian.Uint32(h[1:5])
	if n < minPayload || uint64(n) > uint64(maxPayload) {
		return 0, 0, errGarbled
	}
	if int64(n)+headerSize > left {
		return 0, 0, errTruncated
	}
	return int(n), binary.LittleEndian.Uint64(h[5:13]), nil
}

func checkCRC(frame []byte) bool {
	want := binary.LittleEndian.Uint32(frame[crcOffset:headerSize])
	return frameCRC(frame, frame[headerSize:]) == want
}

// appendPayload encodes r compactly: kind byte, time as a zig-zag varint,
// DeviceID, CustomerID and Ref each as a uvarint length and the bytes, then
// the body, whose length is what is left of the payload.
func appendPayload(dst []byte, r *Record, t int64) []byte {
	dst = append(dst, byte(r.Kind))
	dst = binary.AppendVarint(dst, t)
	dst = binary.AppendUvarint(dst, uint64(len(r.DeviceID)))
	dst = append(dst, r.DeviceID...)
	dst = binary.AppendUvarint(dst, uint64(len(r.CustomerID)))
	dst = append(dst, r.CustomerID...)
	dst = binary.AppendUvarint(dst, uint64(len(r.Ref)))
	dst = append(dst, r.Ref...)
	return append(dst, r.Body...)
}

func payloadSize(r *Record) int {
	return 1 + binary.MaxVarintLen64 + 3*binary.MaxVarintLen64 +
		len(r.DeviceID) + len(r.CustomerID) + len(r.Ref) + len(r.Body)
}

// payloadTime returns the kind and time of an encoded record without
// decoding the rest.
func payloadTime(p []byte) (int64, error) {
	if len(p) < 2 {
		return 0, errGarbled
	}
	t, n := binary.Varint(p[1:])
	if n <= 0 {
		return 0, errGarbled
	}
	return t, nil
}

// stringCache hands out strings already made when the bytes repeat: a
// batch holds many records of the same device and customer, and records of
// a few hundred datastreams interleaved. The last value of each field is
// checked first, then the strings seen in this read (up to
// stringCacheSize), so a read allocates about one string per distinct
// value rather than two per record.
type stringCache struct {
	dev, cust, ref string
	seen           map[string]string
}

const stringCacheSize = 4096

func (c *stringCache) get(slot *string, b []byte) string {
	if *slot == string(b) { // compiler does not allocate for this comparison
		return *slot
	}
	if s, ok := c.seen[string(b)]; ok { // nor for this lookup
		*slot = s
		return s
	}
	s := string(b)
	if c.seen == nil {
		c.seen = make(map[string]string)
	}
	if len(c.seen) < stringCacheSize {
		c.seen[s] = s
	}
	*slot = s
	return s
}

// decodePayload decodes p into r. The body is copied into slab so that it
// does not alias the read buffer; the slab to use next is returned.
func decodePayload(p []byte, r *Record, sc *stringCache, slab []byte) ([]byte, error) {
	if len(p) < minPayload {
		return slab, errGarbled
	}
	r.Kind = Kind(p[0])
	t, n := binary.Varint(p[1:])
	if n <= 0 {
		return slab, errGarbled
	}
	r.Time = t
	rest := p[1+n:]
	var fields [3][]byte
	for i := range fields {
		l, n := binary.Uvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return slab, errGarbled
		}
		fields[i] = rest[n : n+int(l)]
		rest = rest[n+int(l):]
	}
	r.DeviceID = sc.get(&sc.dev, fields[0])
	r.CustomerID = sc.get(&sc.cust, fields[1])
	r.Ref = sc.get(&sc.ref, fields[2])
	if len(rest) == 0 {
		r.Body = nil
		return slab, nil
	}
	if cap(slab)-len(slab) < len(rest) {
		// A fresh slab, never a grown copy: the bodies handed out keep the
		// old one alive, so growing by append would hold every
		// intermediate size at once (about 5× the bodies of a large read).
		slab = make([]byte, 0, max(cap(slab), len(rest)))
	}
	start := len(slab)
	slab = append(slab, rest...)
	r.Body = slab[start:len(slab):len(slab)]
	return slab, nil
}

func encodeCursor(p Position) []byte {
	b := make([]byte, 0, cursorSize)
	b = append(b, cursorMagic...)
	b = binary.LittleEndian.AppendUint64(b, p.Segment)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.Offset))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeCursor(b []byte) (Position, error) {
	if len(b) != cursorSize || string(b[:4]) != cursorMagic ||
		crc32.Checksum(b[:cursorSize-4], castagnoli) != binary.LittleEndian.Uint32(b[cursorSize-4:]) {
		return Position{}, fmt.Errorf("cursor file: %w", errGarbled)
	}
	p := Position{
		Segment: binary.LittleEndian.Uint64(b[4:12]),
		Offset:  int64(binary.LittleEndian.Uint64(b[12:20])),
	}
	if p.Offset < 0 {
		return Position{}, fmt.Errorf("cursor file: negative offset: %w", errGarbled)
	}
	return p, nil
}
