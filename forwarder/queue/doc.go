// Package queue is vigd's durable on-disk log of encoded records waiting for
// upstream. The pipeline appends; the forwarder reads oldest first and
// commits what the server has taken. See Queue for the contract; Disk is
// the implementation (Open), Memory an in-memory one for other packages'
// tests (NewMemory).
//
// The log is written by hand rather than kept in bbolt (which go.mod has):
// a B+tree rewrites pages and its file never shrinks, while an append-only
// log writes each record once, drops consumed data by deleting whole files,
// and lets one fsync cover many concurrent appends (group commit), which is
// what flash storage on a gateway needs.
//
// # FORMAT
//
// A queue folder holds:
//
//	LOCK                      flock(2)ed while a process has the queue open
//	cursor                    the committed position: two 4096-byte slots, each
//	                            "VQC2", generation uint64 LE, segment uint64 LE,
//	                            offset int64 LE, CRC-32C of the 28 bytes before
//	                            (uint32 LE), zeros to the end of the slot
//	NNNNNNNNNNNNNNNNNNNN.seg  segment files, named by the 20-digit decimal
//	                          sequence number of their first record
//	quarantine/               damaged segments kept for an operator
//
// Commit writes the next generation into the slot that does not hold the
// newest one (generation g goes to slot g%2), in place, then fsyncs; open
// takes the valid slot with the higher generation. A torn write garbles
// only the slot being written, so the previous position survives (at
// worst records are sent again, never lost). The slots are a page apart so
// one torn page cannot reach both. The design is chosen for the full
// disk: overwriting blocks a file already has needs no allocation, where
// the earlier write-temporary-file-and-rename needed a new block on every
// commit and failed with ENOSPC exactly when consuming records was the
// only way to free space. The file is created once (written whole, so its
// blocks are allocated, then renamed into place) at open, or at the first
// commit if the disk was too full at open. A 24-byte cursor of the earlier
// format ("VQC1", segment, offset, CRC) is read and replaced at open.
// (On a copy-on-write filesystem such as btrfs an overwrite allocates too;
// the free-space floor below keeps room for it.)
//
// A segment is a sequence of frames with no file header:
//
//	offset  size  field
//	0       1     magic 0xA7 (a new format gets a new magic)
//	1       4     payload length n, uint32 LE (at least 5, at most MaxRecordBytes)
//	5       8     sequence number, uint64 LE: the segment's number for its first
//	              frame, then one more per frame
//	13      4     CRC-32C (Castagnoli) of bytes 0..12 and of the payload, uint32 LE
//	17      n     payload
//
// The payload is one Record:
//
//	kind        1 byte
//	time        signed varint (zig-zag), UnixNano
//	deviceId    uvarint length, bytes
//	customerId  uvarint length, bytes
//	ref         uvarint length, bytes
//	body        the rest of the payload
//
// A Position is {segment number, byte offset of a frame}; Entry.Next is the
// offset just past the frame (the segment size at its end).
//
// # Recovery
//
// Open reads every segment through once, verifying every checksum: 0.23 s
// for a million 100-byte records (129 MB) from the page cache on the
// development machine; from cold flash it is bound by read speed. Nothing
// per record is kept in memory, only a few words per segment. Damage is
// handled, never a reason to refuse to open:
//
//   - After a frame that does not verify, the reader looks for the next
//     frame that does, starts with the magic byte and has a sequence number
//     that can follow (at least the expected one, at most one more per 17
//     bytes skipped). Sequence numbers make a false match practically
//     impossible, so records after a garbled one are recovered.
//   - If nothing valid follows in the newest segment, it is a torn tail
//     (a write cut by a crash, never acknowledged): the file is truncated
//     after the last good frame, with a warning and Stats.Corrupted +1.
//   - A garbled region followed by valid frames, or a garbled end of a
//     sealed segment, is skipped (Stats.Corrupted +1 per region); the file
//     is kept in place for its valid records and a copy (a hard link, or a
//     real copy when the file is about to be truncated) goes to quarantine/
//     with an error log and vigd_queue_quarantined_segments_total +1.
//   - A segment that cannot be read at all, or a sealed one with no valid
//     frame, is moved into quarantine/ and the queue goes on without it.
//
// # Limits
//
// MaxBytes bounds the uncommitted bytes; Policy says what a full queue
// does (Block, DropOldest, DropNewest). Eviction works on whole segments,
// oldest first, so SegmentSize is lowered to MaxBytes/4 when needed. MaxAge
// deletes whole segments whose newest record is older than MaxAge, so a
// record may outlive MaxAge by the time its segment took to fill.
// Evictions are counted (Stats.Evicted, vigd_queue_evicted_records_total)
// and logged at error level.
//
// # Full disk
//
// A gateway whose disk fills while upstream is down must recover by itself
// once upstream drains the backlog, without a restart or an operator. Three
// things make that so:
//
//   - A free-space floor (Options.MinFreeBytes; default min(64 MiB, 5% of
//     the filesystem), at least 64 KiB, never above half the filesystem):
//     appends are refused with an error wrapping syscall.ENOSPC while a
//     write would leave less free (statfs, cached for a second and lowered
//     by what the queue writes meanwhile, so a burst cannot eat the
//     reserve). The pipeline then answers non-durable and adapters stop
//     acknowledging: back-pressure. The reserve is for cursor commits, the
//     forwarder's state.db and dead letters. Health reports "free space X
//     below the Y floor" and clears by itself once space is back (checked
//     by Health and the maintenance loop), without waiting for an append.
//   - Commits need no new blocks (the two-slot cursor above).
//   - A commit that reaches the end of everything written deletes the
//     active segment too; the next append starts a new one. A drained
//     queue holds no segment data. Segments are also capped at a
//     sixteenth of the filesystem (space is freed a segment at a time, so
//     an 8 MiB segment on a 4 MiB disk could never be freed before it was
//     wholly consumed).
//
// A failed write or fsync (a full or read-only disk) fails the appends of
// that group commit with an error wrapping the system error (errors.Is(err,
// syscall.ENOSPC)); the file is truncated back to the last acknowledged
// record, so no half record is left, and the next append tries again on
// the same file. Disk.Health reports the error until a write succeeds. If
// the cursor cannot be written, Commit deletes consumed segments and tries
// again.
package queue
