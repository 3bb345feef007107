package decoders_test

import (
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/internal/testpeers"
)

// The hot paths of `make bench`: one CSV telemetry line per frame (the
// bench decoder, three observations) and one short binary frame.

func BenchmarkDecodeCSVLine(b *testing.B) {
	set, err := decoders.LoadDir(filepath.Join(testpeers.RepoRoot(), "internal", "bench", "decoders"))
	if err != nil {
		b.Fatal(err)
	}
	d, _ := set.Get("bench-csv")
	payload := []byte("BENCH0042,2026-12-03T17:30:00.123456789Z,21.5,1013.25,3.75")
	f := &adapters.Frame{Adapter: "bench", Kind: "tcp", Source: "127.0.0.1:40000", Payload: payload, CustomerID: "bench",
		Received: time.Now(), Meta: map[string]string{"remote_addr": "127.0.0.1:40000", "local_port": "5000"}}
	env := decoders.Env{DefaultCustomer: "bench", Alarms: map[string]bool{}}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := d.Decode(f, env)
		if err != nil || len(res.Observations) != 3 {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBinaryFrame(b *testing.B) {
	d := loadShipped(b, "teltonika-iridium-edge")
	payload, err := hex.DecodeString(strings.ReplaceAll("65A4B2C0 91F5AB CDBFDD 01 80 00 00", " ", ""))
	if err != nil {
		b.Fatal(err)
	}
	f := &adapters.Frame{Adapter: "sbd", Kind: "directip", Source: "300234010000000", Payload: payload, Identity: "300234010000000",
		CustomerID: "047", Received: time.Now(), Meta: map[string]string{"momsn": "42"}}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(f, decoders.Env{DefaultCustomer: "047"}); err != nil {
			b.Fatal(err)
		}
	}
}
