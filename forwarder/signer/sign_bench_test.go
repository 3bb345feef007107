package signer

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"
)

type nopRoundTripper struct{}

func (nopRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
}

// BenchmarkSignRequest signs an observation batch as the forwarder sends
// it (1000 records, ~200 KB): Content-MD5 of the body, the HMAC of the
// string to sign, the headers.
func BenchmarkSignRequest(b *testing.B) {
	body := bytes.Repeat([]byte(`{"phenomenonTime":"2026-12-03T17:30:00.123456789Z","result":21.5,"resultTime":"2026-12-03T17:30:00.123456789Z","datastream":{"name":"temperature","sensusID":"bench@temperature@BENCH0042@bench"}},`), 1000)
	t := &Transport{Base: nopRoundTripper{}, ServiceID: "vigd-bench", Secret: NewSecret("s3cret"), Now: func() time.Time { return time.Unix(1e9, 0) }}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/xcloud/v2/eventstore/data/parsed/observations", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := t.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}
}

// BenchmarkSign is the signature alone (no body hash).
func BenchmarkSign(b *testing.B) {
	c := DefaultConfig()
	s := NewSecret("s3cret")
	now := time.Unix(1e9, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(c, "POST", "/xcloud/v2/eventstore/data/parsed/observations", "application/json", "1B2M2Y8AsgTpgAmY7PhCfg==", now, "vigd-bench", s); err != nil {
			b.Fatal(err)
		}
	}
}
