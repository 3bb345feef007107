package decoders

import (
	"errors"
	"fmt"
)

// ErrUnknownDevice is wrapped by the error Decode returns when Env.Lookup
// does not know the frame's identity. The daemon then applies its
// unknown-device policy (accept with defaults, or dead-letter until added).
var ErrUnknownDevice = errors.New("unknown device")

// ConfigError is one problem in a decoder file. LoadFiles and LoadDir return
// every ConfigError they find at once, joined with errors.Join.
type ConfigError struct {
	File string
	Line int
	Col  int
	// Path is where in the document the problem is, e.g.
	// "datastreams[2].unit.symbol"; empty for the document itself.
	Path string
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Col, e.Path, e.Msg)
}

// DecodeError says why a frame could not be decoded and where.
type DecodeError struct {
	// Decoder is the decoder's name.
	Decoder string
	// Offset is the byte offset in the payload where decoding failed, -1
	// when the problem is not at a byte (no identity, unknown device).
	Offset int
	Msg    string
	// Err is an underlying cause (ErrUnknownDevice, a checksum error), if any.
	Err error
}

func (e *DecodeError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("decoder %s: at byte %d: %s", e.Decoder, e.Offset, e.Msg)
	}
	return fmt.Sprintf("decoder %s: %s", e.Decoder, e.Msg)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// parseError is what the format engines return; Decode turns it into a
// DecodeError carrying the decoder's name.
type parseError struct {
	off int
	msg string
}

func (e *parseError) Error() string { return e.msg }

func perr(off int, format string, args ...any) *parseError {
	return &parseError{off: off, msg: fmt.Sprintf(format, args...)}
}
