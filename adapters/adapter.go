// Package adapters defines what every transport adapter shares: the Frame it
// produces, the Sink it hands frames to, the Adapter contract and the registry
// of adapter kinds. One sub-package per kind (tcp, serial, mqtt, iridium,
// orbcomm, httpingest) implements it; framing/ holds the framers that tcp and
// serial share.
//
// # The acknowledgement rule (every adapter, present and future)
//
// An adapter acknowledges upstream — TCP reply bytes, MQTT PUBACK, HTTP 2xx,
// IMAP \Seen flag or move, DirectIP MO confirmation, ORBCOMM high-water mark,
// modem buffer clear (AT+SBDD) — only after Sink.Emit returned an error for
// which Durable(err) is true. Emit blocks while the queue is full (back-pressure):
// an adapter must then stop reading (stop the socket read loop, stop taking
// MQTT messages) rather than buffer in memory or drop.
//
// Adapters know nothing of decoding or forwarding.
package adapters

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Frame is one unit of device data as received, with where it came from.
// Frames are handed to a Sink by pointer; the sink does not keep the pointer
// after Emit returns, so an adapter may reuse nothing it passed only if it
// copies — adapters must not modify a Frame after handing it over.
type Frame struct {
	// Adapter is the configured name of the adapter instance ("buoys-tcp").
	Adapter string `json:"adapter"`
	// Kind is the adapter kind ("tcp", "serial", "mqtt", "directip", ...).
	Kind string `json:"kind"`
	// Source says where on that adapter it came from: remote address, topic,
	// serial port, IMEI, mobile id, mailbox/UID.
	Source string `json:"source"`
	// Offset is the byte offset of the frame's first byte in its stream
	// (connection, port session, file), for error messages; -1 when the
	// transport has no stream (MQTT, HTTP, IMAP).
	Offset int64 `json:"offset"`
	// Received is when the adapter finished reading the frame (UTC).
	Received time.Time `json:"received"`
	// Payload is the bytes as received, framing removed.
	Payload []byte `json:"payload"`
	// Identity is what the transport knows of the device (IMEI, ORBCOMM
	// mobile id, MQTT topic segment, remote address, a configured id); the
	// device registry maps it to a deviceId. Empty when only the payload
	// can tell.
	Identity string `json:"identity,omitempty"`
	// CustomerID is the adapter's default customer, used when the device
	// registry does not give one.
	CustomerID string `json:"customerId,omitempty"`
	// Decoder names the decoder to use; set from the adapter's config or
	// chosen per topic/port. Empty means the adapter has no opinion.
	Decoder string `json:"decoder,omitempty"`
	// Meta is transport metadata decoders may use: "momsn", "mtmsn",
	// "cdr_ref", "session_status", "lat", "lon", "cep_km", "sin", "min",
	// "topic", "remote_addr", ... Values are strings as received.
	// Sinks only read it: an adapter may hand one map with many frames
	// (a connection's).
	Meta map[string]string `json:"meta,omitempty"`
}

// Where renders the frame's location for error messages:
// "adapter/source@offset".
func (f *Frame) Where() string {
	if f.Offset >= 0 {
		return fmt.Sprintf("%s/%s@%d", f.Adapter, f.Source, f.Offset)
	}
	return fmt.Sprintf("%s/%s", f.Adapter, f.Source)
}

// Sink receives frames from adapters. The daemon's pipeline implements it.
type Sink interface {
	// Emit decodes and durably queues the frame. It blocks while the queue is
	// at its limit (back-pressure) and until the records are on disk.
	//
	// nil: the frame's records are on disk. A *RejectedError: no decoder
	// could read it (or the device is unknown) and the frame is kept in the
	// dead-letter store — durable too, the adapter may acknowledge, and an
	// interactive transport (HTTP) may report the reason. Any other error
	// (ctx cancelled, disk full): nothing is stored, do not acknowledge.
	Emit(ctx context.Context, f *Frame) error
}

// BatchSink is a Sink that can also take several frames at once and make
// them durable together: one queue append and one fsync for all of them
// instead of one per frame. An adapter that has several frames in hand (a
// TCP read that brought many lines) uses EmitBatch when its sink has it,
// and Emit otherwise; the pipeline has it.
type BatchSink interface {
	Sink
	// EmitBatch is Emit for each frame, in order, with one difference: the
	// records of every frame that decodes are queued together, so they
	// are durable all together or not at all. errs (len(frames)) receives
	// each frame's result, as Emit would have returned it: nil, a
	// *RejectedError (dead-lettered; acknowledge), or another error (not
	// stored; do not acknowledge).
	EmitBatch(ctx context.Context, frames []*Frame, errs []error)
}

// RejectedError says the frame is safe in the dead-letter store but produced
// no records, and why.
type RejectedError struct {
	Reason string
	Err    error
}

func (e *RejectedError) Error() string { return e.Reason }
func (e *RejectedError) Unwrap() error { return e.Err }

// Durable reports whether an Emit result means the frame is on disk (queued
// or dead-lettered), so the adapter may acknowledge it upstream.
func Durable(err error) bool {
	var r *RejectedError
	return err == nil || errors.As(err, &r)
}

// SinkFunc adapts a function to Sink (tests, composition).
type SinkFunc func(ctx context.Context, f *Frame) error

// Emit implements Sink.
func (fn SinkFunc) Emit(ctx context.Context, f *Frame) error { return fn(ctx, f) }

// Adapter is one configured input. The constructor validates config and does
// no I/O; Run does all of it.
type Adapter interface {
	// Run blocks until ctx is cancelled, then returns nil after releasing
	// every socket, port and goroutine. It reconnects by itself (Backoff)
	// and returns a non-nil error only when it cannot work at all (e.g. the
	// listen address is taken).
	Run(ctx context.Context, sink Sink) error
}

// StatusReporter is implemented by adapters that can say whether they are
// healthy (connected, port open); readiness and metrics ask it.
type StatusReporter interface {
	Status() Status
}

// Status is an adapter's health as shown in /readyz.
type Status struct {
	OK     bool
	Detail string
}
