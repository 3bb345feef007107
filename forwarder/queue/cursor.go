package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// The cursor file holds two slots written in place alternately (see
// doc.go, FORMAT): a commit overwrites blocks the file already has, so it
// needs no free space and works on a full disk, which a new file renamed
// over the old one does not.
const (
	cursorSlotMagic = "VQC2"
	cursorSlotLen   = 4 + 8 + 8 + 8 + 4 // magic, generation, segment, offset, CRC
	// cursorSlot is the stride of the slots: one page each, so that a torn
	// write of one slot cannot touch the other.
	cursorSlot     = 4096
	cursorFileSize = 2 * cursorSlot
	cursorName     = "cursor"
)

func encodeSlot(gen uint64, p Position) []byte {
	b := make([]byte, 0, cursorSlotLen)
	b = append(b, cursorSlotMagic...)
	b = binary.LittleEndian.AppendUint64(b, gen)
	b = binary.LittleEndian.AppendUint64(b, p.Segment)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.Offset))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeSlot(b []byte) (uint64, Position, error) {
	n := cursorSlotLen - 4
	if len(b) < cursorSlotLen || string(b[:4]) != cursorSlotMagic ||
		crc32.Checksum(b[:n], castagnoli) != binary.LittleEndian.Uint32(b[n:cursorSlotLen]) {
		return 0, Position{}, fmt.Errorf("cursor slot: %w", errGarbled)
	}
	gen := binary.LittleEndian.Uint64(b[4:12])
	p := Position{Segment: binary.LittleEndian.Uint64(b[12:20]), Offset: int64(binary.LittleEndian.Uint64(b[20:28]))}
	if gen == 0 || p.Offset < 0 {
		return 0, Position{}, fmt.Errorf("cursor slot: %w", errGarbled)
	}
	return gen, p, nil
}

// decodeCursorFile reads a cursor file of either format: the two-slot one
// (the valid slot with the higher generation wins) or the single 24-byte
// record of earlier versions (gen 0: it is migrated at open).
func decodeCursorFile(b []byte) (uint64, Position, error) {
	if len(b) == cursorSize {
		p, err := decodeCursor(b)
		return 0, p, err
	}
	if len(b) != cursorFileSize {
		return 0, Position{}, fmt.Errorf("cursor file of %d bytes: %w", len(b), errGarbled)
	}
	g0, p0, err0 := decodeSlot(b[:cursorSlot])
	g1, p1, err1 := decodeSlot(b[cursorSlot:])
	switch {
	case err0 != nil && err1 != nil:
		return 0, Position{}, fmt.Errorf("cursor file: both slots: %w", errGarbled)
	case err1 != nil || (err0 == nil && g0 > g1):
		return g0, p0, nil
	default:
		return g1, p1, nil
	}
}

// loadCursor reads the committed position. A garbled cursor means reading
// from the oldest record again: duplicates, never loss.
func (d *Disk) loadCursor() error {
	path := filepath.Join(d.dir, cursorName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	gen, p, err := decodeCursorFile(b)
	if err != nil {
		d.corrupted.Add(1)
		d.m.corrupted.Inc()
		d.log.WithError(err).Warn("queue cursor garbled, reading from the oldest record")
		return nil
	}
	d.cursor = p
	if gen == 0 {
		return nil // old format: openCursor writes the new file
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	d.curF, d.curGen = d.opts.wrapCursor(f), gen
	return nil
}

// openCursor makes sure the two-slot cursor file exists, holding the
// current cursor. It is created as a temporary file written whole (so its
// blocks are allocated), synced and renamed; that needs a little space
// once, at open or at the first commit after a migration.
func (d *Disk) openCursor() error {
	if d.curF != nil {
		return nil
	}
	d.mu.Lock()
	pos := d.cursor
	d.mu.Unlock()
	tmp := filepath.Join(d.dir, cursorName+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	b := make([]byte, cursorFileSize)
	copy(b, encodeSlot(1, pos))
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = d.fsync(f)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(d.dir, cursorName))
	}
	if err == nil {
		err = d.syncDir()
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	d.curF, d.curGen = d.opts.wrapCursor(f), 1
	return nil
}

// writeCursor saves pos in the slot not holding the newest generation, so
// a torn write leaves the previous position readable. Called with cmu held.
func (d *Disk) writeCursor(pos Position) error {
	if d.curF == nil {
		if err := d.openCursor(); err != nil {
			return err
		}
	}
	gen := d.curGen + 1
	_, err := d.curF.WriteAt(encodeSlot(gen, pos), int64(gen%2)*cursorSlot)
	if err == nil {
		err = d.fsync(d.curF)
	}
	if err != nil {
		// curGen stays: the next try rewrites the same slot, never the
		// one holding the last durable position.
		return err
	}
	d.curGen = gen
	return nil
}
