package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// frame builds a frame by hand (not with appendFrame) so the table checks
// the layout documented in doc.go.
func frame(seq uint64, payload []byte) []byte {
	b := []byte{0xA7}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint64(b, seq)
	c := crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), b)
	c = crc32.Update(c, crc32.MakeTable(crc32.Castagnoli), payload)
	b = binary.LittleEndian.AppendUint32(b, c)
	return append(b, payload...)
}

func TestFrameTable(t *testing.T) {
	// kind 2, time 5 (zig-zag 10), "ab", "", "r", body "{}"
	payload := []byte{2, 10, 2, 'a', 'b', 0, 1, 'r', '{', '}'}
	want := Record{Kind: Alarm, Time: 5, DeviceID: "ab", Ref: "r", Body: []byte("{}")}
	good := frame(7, payload)
	if !bytes.Equal(good, appendFrame(nil, 7, payload)) {
		t.Fatalf("appendFrame differs from the documented layout:\n%x\n%x", appendFrame(nil, 7, payload), good)
	}
	if got := appendPayload(nil, &want, 5); !bytes.Equal(got, payload) {
		t.Fatalf("appendPayload = %x, want %x", got, payload)
	}
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	// The length field one more than the payload, the next byte present.
	longer := append(bytes.Clone(good), 0)
	binary.LittleEndian.PutUint32(longer[1:5], uint32(len(payload)+1))
	cases := []struct {
		name string
		in   []byte
		err  error // errTruncated, errGarbled, or nil
		dec  bool  // checksum passes but the payload does not decode
	}{
		{"valid", good, nil, false},
		{"empty", nil, errTruncated, false},
		{"header only", good[:headerSize], errTruncated, false},
		{"one byte short", good[:len(good)-1], errTruncated, false},
		{"bad magic", flip(good, 0), errGarbled, false},
		{"length +1", longer, errGarbled, false},
		{"length below minimum", frame(7, []byte{1, 0, 0, 0}), errGarbled, false},
		{"length huge", append([]byte{0xA7, 0xff, 0xff, 0xff, 0x7f}, good[5:]...), errGarbled, false},
		{"seq flipped", flip(good, 6), errGarbled, false},
		{"crc flipped", flip(good, 14), errGarbled, false},
		{"payload flipped", flip(good, headerSize+4), errGarbled, false},
		{"string length past end", frame(7, []byte{1, 0, 9, 'a', 0, 0}), nil, true},
		{"bad varint time", frame(7, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0}), nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r segReader
			r.reset(bytes.NewReader(c.in), int64(len(c.in)), 1<<20)
			f, err := r.frameAt(0)
			if !errors.Is(err, c.err) || (c.err == nil && err != nil) {
				t.Fatalf("frameAt: %v, want %v", err, c.err)
			}
			if err != nil {
				return
			}
			var rec Record
			_, derr := decodePayload(f.payload, &rec, &stringCache{}, nil)
			if c.dec != (derr != nil) {
				t.Fatalf("decode error %v, want failure %v", derr, c.dec)
			}
			if !c.dec && (!sameRecord(rec, want) || f.seq != 7 || f.size != int64(len(good))) {
				t.Fatalf("decoded %+v seq %d size %d", rec, f.seq, f.size)
			}
		})
	}
}

func TestCursorFormat(t *testing.T) {
	p := Position{Segment: 0x0102030405060708, Offset: 42}
	b := encodeCursor(p)
	want := append([]byte("VQC1"), 8, 7, 6, 5, 4, 3, 2, 1, 42, 0, 0, 0, 0, 0, 0, 0)
	if !bytes.Equal(b[:20], want) || len(b) != cursorSize {
		t.Fatalf("cursor bytes %x", b)
	}
	if got, err := decodeCursor(b); err != nil || got != p {
		t.Fatalf("decode %v %v", got, err)
	}
	for i := range b {
		bad := bytes.Clone(b)
		bad[i] ^= 0x10
		if _, err := decodeCursor(bad); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	if _, err := decodeCursor(b[:cursorSize-1]); err == nil {
		t.Fatal("short cursor accepted")
	}
}

// seedSegment is a valid segment of n records starting at sequence 1.
func seedSegment(n int) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		r := testRec(i)
		b = appendFrame(b, uint64(1+i), appendPayload(nil, &r, r.Time))
	}
	return b
}

// FuzzReader feeds arbitrary bytes as a segment file (the newest, or a
// sealed one followed by a valid segment), opens the queue and reads
// everything: Open never refuses, nothing panics, every record returned is
// a frame of the input whose checksum verifies, and the queue takes new
// records afterwards.
func FuzzReader(f *testing.F) {
	valid := seedSegment(5)
	f.Add(valid, false)
	f.Add(valid, true)
	f.Add(valid[:len(valid)-3], false)
	f.Add(valid[:40], true)
	garbled := bytes.Clone(valid)
	garbled[30] ^= 0xff
	f.Add(garbled, false)
	f.Add(garbled, true)
	f.Add([]byte{}, false)
	f.Add(bytes.Repeat([]byte{0xA7}, 100), true)
	f.Add(append(bytes.Clone(valid), make([]byte, 100)...), false)
	f.Fuzz(func(t *testing.T, data []byte, sealed bool) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o640); err != nil {
			t.Fatal(err)
		}
		const nextSeg = 1 << 40
		var sentinel []Record
		if sealed {
			var b []byte
			for i := 0; i < 3; i++ {
				r := testRec(100 + i)
				sentinel = append(sentinel, r)
				b = appendFrame(b, nextSeg+uint64(i), appendPayload(nil, &r, r.Time))
			}
			if err := os.WriteFile(filepath.Join(dir, segName(nextSeg)), b, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		d, err := Open(dir, Options{Name: "fuzz", Log: quietLog(), noSync: true})
		if err != nil {
			t.Fatalf("open refused: %v", err)
		}
		defer d.Close()
		es := readAll(t, d, Position{})
		var tail []Record
		for _, e := range es {
			if e.Pos.Segment != 1 {
				tail = append(tail, e.Rec)
				continue
			}
			// The record must be a verified frame of the input.
			off := e.Pos.Offset
			if off+headerSize > int64(len(data)) || data[off] != frameMagic {
				t.Fatalf("record at %d is not a frame of the input", off)
			}
			n := int64(binary.LittleEndian.Uint32(data[off+1 : off+5]))
			end := off + headerSize + n
			if end > int64(len(data)) || e.Next.Offset != end {
				t.Fatalf("record at %d: frame ends at %d, Next %v", off, end, e.Next)
			}
			fr := data[off:end]
			sum := crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), fr[:13])
			sum = crc32.Update(sum, crc32.MakeTable(crc32.Castagnoli), fr[headerSize:])
			if sum != binary.LittleEndian.Uint32(fr[13:17]) {
				t.Fatalf("record at %d returned with a bad checksum", off)
			}
			var want Record
			if _, err := decodePayload(fr[headerSize:], &want, &stringCache{}, nil); err != nil || !sameRecord(want, e.Rec) {
				t.Fatalf("record at %d decoded differently: %+v vs %+v (%v)", off, e.Rec, want, err)
			}
		}
		if sealed {
			if len(tail) != len(sentinel) {
				t.Fatalf("read %d records of the valid segment, want %d", len(tail), len(sentinel))
			}
			for i := range tail {
				if !sameRecord(tail[i], sentinel[i]) {
					t.Fatalf("valid segment record %d differs", i)
				}
			}
		}
		extra := testRec(999)
		mustAppend(t, d, extra)
		all := readAll(t, d, Position{})
		if len(all) != len(es)+1 || !sameRecord(all[len(all)-1].Rec, extra) {
			t.Fatalf("append after recovery: read %d records, want %d", len(all), len(es)+1)
		}
	})
}
