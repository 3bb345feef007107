// Package iridium holds what the three Iridium SBD adapter kinds share: the
// DirectIP message parser (MO and MT, information elements in any order) and
// the MO confirmation encoder, the SBD e-mail parser, the RockBLOCK webhook
// body parser, the metadata keys every kind sets on a Frame, a small
// persistent de-duplication set and the adapters' metrics.
//
// The adapters themselves live in the sub-packages directip (kind
// "directip", TCP listener), sbdmail (kind "sbdmail", IMAP mailbox) and
// rockblock (kind "rockblock", HTTP webhook).
//
// Parsers are hand-written on purpose: the formats are small, fixed byte
// layouts or a handful of text lines, and no maintained Go library covers
// them (the reference implementation, gadomski/sbd-rs, is Rust). E-mail MIME
// handling uses the standard library (net/mail, mime, mime/multipart).
//
// # Frames
//
// Every kind emits one Frame per SBD message with the MO payload as Payload
// (empty for a session without payload: a failed session or an empty mailbox
// check; the decoder turns those into session-status records) and the Meta
// keys named by the Meta* constants.
//
// # Messages that cannot be parsed
//
// A complete message that cannot be parsed (a DirectIP message with a bad
// IMEI, an e-mail without a readable body, a RockBLOCK post with bad hex) is
// never dropped: the adapter emits a Frame whose Payload is the raw message
// and whose Meta carries MetaParseError, then acknowledges once that frame is
// durable. The pipeline is expected to dead-letter such frames (no decoder
// should accept them); either way the message stays visible and replayable.
// Only input that is not a complete message (a truncated TCP stream, an
// unreadable HTTP body) is refused without acknowledgement, so the sender
// retries.
package iridium
