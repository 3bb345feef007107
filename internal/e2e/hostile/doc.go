// Package hostile holds acceptance tests of vigd against hostile input and
// the open network, run against the real binary (testpeers.Binary) with
// the eventstore simulator upstream: stalled and flooding connections, a
// 100 MB frame, forged webhook and ingest posts, TLS with and without the
// right certificates, and a grep of every log line for the configured
// secrets. Each test prints the figures it measured (RSS peaks, times).
//
// The package has no code of its own: everything is in the _test.go files.
package hostile
