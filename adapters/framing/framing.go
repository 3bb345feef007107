// Package framing cuts a byte stream (a TCP connection, a serial port, an
// uploaded file) into frames. The tcp and serial adapters share it.
//
// A Framer reads its source incrementally and never assumes that one Read
// is one frame: the same bytes give the same frames and offsets whether they
// arrive one byte per Read or all at once (the tests feed every case both
// ways). Each frame carries the stream offset of its first byte.
//
// Errors from Next come in three sorts:
//
//   - a *FrameError with Fatal false: one frame was bad (too long, a bad
//     escape, cut off by the end of the stream); the framer has skipped it
//     or will skip it up to the next frame boundary, and the next call to
//     Next returns the next frame. A bad frame never affects the next one.
//   - a *FrameError with Fatal true: the framing cannot find the next
//     boundary (a length prefix smaller than its own header); every later
//     call returns the same error. The caller should drop the connection.
//   - any other error is the source's: io.EOF at the clean end of the
//     stream, a closed connection. A timeout (os.ErrDeadlineExceeded, a
//     net.Error with Timeout) is returned as-is and is not sticky: the framer
//     keeps its partial frame and Next may be called again.
//
// The framings are small state machines over a private buffer; bufio.Scanner
// was not used because it stops at the first over-long token (the stream
// must go on after one), has no byte offsets and cannot resume after a read
// timeout.
package framing

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
)

// Framing types (Config.Type).
const (
	TypeLine      = "line"
	TypeDelimiter = "delimiter"
	TypeLength    = "length"
	TypeFixed     = "fixed"
	TypeSLIP      = "slip"
	TypeCOBS      = "cobs"
	TypeNone      = "none"   // the whole stream is one frame
	TypeStream    = "stream" // same as none
	TypeIdle      = "idle"
)

// Line terminators (Config.Terminator).
const (
	TermLF   = "lf"   // LF; one CR before it is stripped too (LF and CRLF lines)
	TermCRLF = "crlf" // only CR LF; a lone CR or LF is data
	TermCR   = "cr"   // only CR
	TermAny  = "any"  // LF, CR LF or a bare CR (serial loggers)
)

// Length field coverage (Config.LengthCounts).
const (
	CountsBody  = "body"  // the bytes after the length field
	CountsSelf  = "self"  // the length field itself and the bytes after it
	CountsFrame = "frame" // the whole frame from its first header byte
)

// DefaultMaxFrameBytes is used when Config.MaxFrameBytes is 0.
const DefaultMaxFrameBytes = 64 << 10

// Config selects and tunes a framing. It is the adapter's `framing:` block;
// the adapter sets MaxFrameBytes from its own max_frame_bytes key.
type Config struct {
	// Type is one of line (the default), delimiter, length, fixed, slip,
	// cobs, none (or stream: the whole connection is one frame) and idle (a
	// silence of Gap ends a frame).
	Type string `yaml:"type"`

	// Terminator (line): lf (default; also strips a CR before the LF), crlf,
	// cr or any (LF, CRLF or a bare CR). The terminator is never kept.
	Terminator string `yaml:"terminator"`

	// Delimiter (delimiter): the bytes ending a frame, as an escaped string
	// ("\r\n", "\x03", "\\x1e") or "hex:0d0a". See ParseBytes.
	Delimiter string `yaml:"delimiter"`
	// KeepDelimiter (delimiter) keeps the delimiter at the end of each
	// frame's data.
	KeepDelimiter bool `yaml:"keep_delimiter"`

	// LengthBytes (length): size of the length field, 1, 2 (default) or 4.
	LengthBytes int `yaml:"length_bytes"`
	// LengthEndian (length): big (default) or little.
	LengthEndian string `yaml:"length_endian"`
	// LengthOffset (length): bytes of fixed header before the length field
	// (DirectIP: 1, the protocol revision; Modbus/TCP MBAP: 4).
	LengthOffset int `yaml:"length_offset"`
	// LengthCounts (length): what the length value covers: body (default;
	// the bytes after the length field), self (the length field and the
	// body) or frame (everything from the first header byte).
	LengthCounts string `yaml:"length_counts"`
	// TrailerBytes (length): bytes after the counted part that belong to
	// the frame anyway, such as a checksum the length leaves out.
	TrailerBytes int `yaml:"trailer_bytes"`
	// KeepHeader (length): deliver the header and length field with the
	// body (the frame as on the wire) instead of the body alone.
	KeepHeader bool `yaml:"keep_header"`

	// Size (fixed): bytes per frame.
	Size int `yaml:"size"`

	// Gap (idle): a silence this long after the last byte ends the frame.
	// The source must support read deadlines (net.Conn, or a serial port
	// wrapped with NewDeadlineReader).
	Gap time.Duration `yaml:"gap"`

	// MaxFrameBytes bounds a frame's data as delivered (framing removed).
	// Not a key of the framing block: the adapter copies its own
	// max_frame_bytes here. 0 means DefaultMaxFrameBytes.
	MaxFrameBytes int `yaml:"-"`
}

// Validate returns every problem, each a *adapters.FieldError whose field is
// relative to the framing block ("length_bytes"); use ValidateAt to prefix
// it with where the block sits.
func (c *Config) Validate() error { return c.ValidateAt("") }

// ValidateAt is Validate with every field name prefixed by prefix and a dot
// ("framing" gives "framing.length_bytes").
func (c *Config) ValidateAt(prefix string) error {
	var errs []error
	field := func(name string) string {
		if prefix == "" {
			return name
		}
		return prefix + "." + name
	}
	add := func(name, format string, args ...any) {
		errs = append(errs, adapters.Errorf(field(name), format, args...))
	}
	maxBytes := c.maxBytes()
	if c.MaxFrameBytes < 0 {
		// The adapter owns the key; name it without the framing prefix.
		errs = append(errs, adapters.Errorf("max_frame_bytes", "must not be negative"))
	}
	switch c.kind() {
	case TypeLine:
		switch c.Terminator {
		case "", TermLF, TermCRLF, TermCR, TermAny:
		default:
			add("terminator", "must be one of lf, crlf, cr, any (got %q)", c.Terminator)
		}
	case TypeDelimiter:
		d, err := ParseBytes(c.Delimiter)
		switch {
		case err != nil:
			add("delimiter", "%v", err)
		case len(d) == 0:
			add("delimiter", "is required for framing type delimiter")
		case len(d) > 16:
			add("delimiter", "must be at most 16 bytes (got %d)", len(d))
		}
	case TypeLength:
		switch c.LengthBytes {
		case 0, 1, 2, 4:
		default:
			add("length_bytes", "must be 1, 2 or 4 (got %d)", c.LengthBytes)
		}
		switch c.LengthEndian {
		case "", "big", "little":
		default:
			add("length_endian", "must be big or little (got %q)", c.LengthEndian)
		}
		switch c.LengthCounts {
		case "", CountsBody, CountsSelf, CountsFrame:
		default:
			add("length_counts", "must be one of body, self, frame (got %q)", c.LengthCounts)
		}
		if c.LengthOffset < 0 || c.LengthOffset > 1024 {
			add("length_offset", "must be between 0 and 1024 (got %d)", c.LengthOffset)
		}
		if c.TrailerBytes < 0 || c.TrailerBytes > 1024 {
			add("trailer_bytes", "must be between 0 and 1024 (got %d)", c.TrailerBytes)
		}
	case TypeFixed:
		if c.Size <= 0 {
			add("size", "must be at least 1 for framing type fixed (got %d)", c.Size)
		} else if c.Size > maxBytes {
			add("size", "%d exceeds max_frame_bytes %d", c.Size, maxBytes)
		}
	case TypeSLIP, TypeCOBS, TypeNone, TypeStream:
	case TypeIdle:
		if c.Gap <= 0 {
			add("gap", "must be a positive duration such as 50ms for framing type idle")
		}
	default:
		add("type", "must be one of line, delimiter, length, fixed, slip, cobs, none, stream, idle (got %q)", c.Type)
	}
	return errors.Join(errs...)
}

func (c *Config) kind() string {
	if c.Type == "" {
		return TypeLine
	}
	return c.Type
}

func (c *Config) maxBytes() int {
	if c.MaxFrameBytes <= 0 {
		return DefaultMaxFrameBytes
	}
	return c.MaxFrameBytes
}

// Frame is one frame cut from the stream.
type Frame struct {
	// Offset is the stream offset of the frame's first byte (for SLIP the
	// byte after the END before it, for line framing the line's first byte).
	Offset int64
	// Data is the frame's bytes with the framing removed (unless configured
	// to be kept). It is never empty: empty frames are dropped. The caller
	// owns it.
	Data []byte
}

// Framer yields the frames of one stream. It is not safe for concurrent use.
type Framer interface {
	// Next returns the next frame, or an error (see the package doc):
	// *FrameError for a bad frame (the stream goes on unless Fatal), io.EOF
	// at the end of the stream, or the source's error.
	Next() (Frame, error)
}

// Buffered is implemented by framers that can tell, without reading,
// whether Next has something in hand. The tcp adapter uses it to hand every
// frame one read brought to the sink at once (one fsync for all of them),
// without ever waiting for more bytes while it holds frames back.
type Buffered interface {
	// Ready reports whether the next call to Next returns (a frame, a
	// FrameError or the source's error) without reading from the source.
	Ready() bool
}

// Reasons in FrameError.Reason (also used as metric labels).
const (
	ReasonTooLong   = "too_long"   // over MaxFrameBytes; skipped to the next boundary
	ReasonTruncated = "truncated"  // the stream ended inside a frame
	ReasonEscape    = "bad_escape" // SLIP: ESC followed by anything but ESC_END / ESC_ESC
	ReasonCOBS      = "bad_cobs"   // COBS: a group cut short by 0x00
	ReasonLength    = "bad_length" // length prefix smaller than the header it covers
)

// FrameError is one frame the framer could not deliver.
type FrameError struct {
	// Offset is the stream offset of the bad frame's first byte.
	Offset int64
	// Reason is a short constant (Reason*), usable as a metric label.
	Reason string
	// Detail says what was wrong, for logs.
	Detail string
	// Fatal says the stream cannot be resynchronised.
	Fatal bool
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("frame at offset %d: %s", e.Offset, e.Detail)
}

// New returns a Framer for cfg reading r. It validates cfg; for the idle
// framing r must implement DeadlineReader.
func New(cfg Config, r io.Reader) (Framer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	maxBytes := cfg.maxBytes()
	switch cfg.kind() {
	case TypeLine:
		return newLine(cfg.Terminator, maxBytes, r), nil
	case TypeDelimiter:
		d, _ := ParseBytes(cfg.Delimiter) // checked by Validate
		return newDelimiter(d, cfg.KeepDelimiter, maxBytes, r), nil
	case TypeLength:
		return newLength(cfg, maxBytes, r), nil
	case TypeFixed:
		return newFixed(cfg.Size, maxBytes, r), nil
	case TypeSLIP:
		return &slipFramer{src: newSource(r, 4096), max: maxBytes}, nil
	case TypeCOBS:
		return &cobsFramer{src: newSource(r, 4096), max: maxBytes}, nil
	case TypeNone, TypeStream:
		return &wholeFramer{src: newSource(r, 32<<10), max: maxBytes}, nil
	case TypeIdle:
		dr, ok := r.(DeadlineReader)
		if !ok {
			return nil, fmt.Errorf("framing idle: source %T has no SetReadDeadline (wrap a serial port with framing.NewDeadlineReader)", r)
		}
		return newIdle(dr, cfg.Gap, maxBytes), nil
	}
	return nil, fmt.Errorf("framing: unknown type %q", cfg.Type) // unreachable after Validate
}

// ParseBytes reads a byte string from config: "hex:0D0A" (hex digits,
// spaces and colons ignored) or text with the escapes \r \n \t \0 \\ and
// \xHH. Text without backslashes is taken literally, so a YAML
// double-quoted "\r\n" (already decoded by YAML) and a single-quoted '\r\n'
// mean the same bytes.
func ParseBytes(s string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(s, "hex:"); ok {
		clean := strings.NewReplacer(" ", "", ":", "", "\t", "").Replace(rest)
		b, err := hex.DecodeString(clean)
		if err != nil {
			return nil, fmt.Errorf("bad hex %q: %w", rest, err)
		}
		return b, nil
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("bad escape at end of %q", s)
		}
		i++
		switch s[i] {
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case '0':
			out = append(out, 0)
		case '\\':
			out = append(out, '\\')
		case 'x':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("bad \\x escape in %q: need two hex digits", s)
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad \\x escape in %q: need two hex digits", s)
			}
			out = append(out, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf("unknown escape \\%c in %q (use \\r \\n \\t \\0 \\\\ \\xHH or hex:...)", s[i], s)
		}
	}
	return out, nil
}
