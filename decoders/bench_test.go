package decoders_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
)

func benchDecode(b *testing.B, decoder string, payload []byte) {
	d := loadShipped(b, decoder)
	f := &adapters.Frame{Payload: payload, Identity: "dev", CustomerID: "047", Received: time.Date(2018, 3, 17, 17, 41, 40, 0, time.UTC)}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Decode(f, decoders.Env{}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSample(b *testing.B, name string) []byte {
	data, err := os.ReadFile(sampleFile(b, name))
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func BenchmarkDecodeTOA5File(b *testing.B) {
	benchDecode(b, "toa5-station", benchSample(b, "toa5_station_daily.dat"))
}

func BenchmarkDecodeTOB1File(b *testing.B) {
	benchDecode(b, "tob1-station", benchSample(b, "tob1_station_daily.dat"))
}

func BenchmarkDecodeNMEAGGA(b *testing.B) {
	benchDecode(b, "nmea-gps", []byte("$GPGGA,174134.000,4345.9112,N,09643.8029,W,1,05,2.7,452.6,M,-27.1,M,,0000*60\r\n"))
}

func BenchmarkLoadShipped(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := decoders.LoadDir(filepath.Join(shippedDir())); err != nil {
			b.Fatal(err)
		}
	}
}
