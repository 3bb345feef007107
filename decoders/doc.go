// Package decoders is vigd's YAML decoder engine. A decoder is data — a
// YAML file (README.md beside this file lists every key) — not Go code per
// device: adding a device type needs a file and its examples, no rebuild.
//
// A file names a payload format (delimited text such as CSV and TOA5,
// NMEA-style sentences, JSON, or a binary layout), where the device
// identity comes from, the thing, the datastreams with their units and
// sensusID patterns, which values become observations, range checks, and
// alarm rules with raise and clear conditions. Computed values, conditions
// and templates are github.com/expr-lang/expr expressions, compiled once
// at load.
//
// The daemon calls LoadDir / LoadFiles (every problem comes back at once
// as *ConfigError with file:line:col and the path), then Decode per frame.
// Decode is pure: no I/O, no clock (the frame's received time stands in
// when a payload has no time), deterministic and safe for concurrent use.
// Alarm state is not kept here: it comes in as Env.Alarms and the changes
// go out as Result.AlarmChanges for the daemon to persist.
//
// Hand-written parts and why: the YAML tree walker (yaml.v3 loses
// KnownFields and positions for sub-nodes, and errors must carry
// line:col and a path); the NMEA and binary readers (a few dozen lines
// each over encoding/binary, with no dependency that fits the allowed
// list); the CRC-16 variants (bitwise, one line of parameters each;
// hash/crc32 does CRC-32). CSV quoting is encoding/csv.
package decoders

// The zone database is embedded so that logger zones ("Etc/GMT+6")
// resolve on gateways without /usr/share/zoneinfo.
import _ "time/tzdata"
