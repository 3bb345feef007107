package iridium

import (
	"fmt"
	"path/filepath"
	"testing"
)

func BenchmarkParseMO(b *testing.B) {
	m := msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, loc(0x02, 43, 31270, 172, 36292, 2)), ie(IEIMOPayload, make([]byte, 340)))
	b.SetBytes(int64(len(m)))
	for b.Loop() {
		if _, err := ParseMO(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseMail(b *testing.B) {
	raw := buildMail("SBD Msg From Unit: 300234010000020", body("340"), "Content-Disposition: attachment; filename=\"a.sbd\"\r\n", make([]byte, 340))
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := ParseMail(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRockBLOCK(b *testing.B) {
	body := []byte(`{"momsn":66,"data":"546865726520617265","serial":14331,"iridium_latitude":75.0001,"iridium_cep":3.0,"imei":"300434010000040","device_type":"ROCKBLOCK","transmit_time":"23-09-05 04:33:24","iridium_longitude":154.1209}`)
	for b.Loop() {
		f, err := ParseRockBLOCKFields("application/json", body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := RockBLOCKFromFields(f); err != nil {
			b.Fatal(err)
		}
	}
}

// One durable Add (bbolt commit with fsync) per message.
func BenchmarkDedupAdd(b *testing.B) {
	d, err := OpenDedup(filepath.Join(b.TempDir(), DedupFile), 1000)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	i := 0
	for b.Loop() {
		i++
		if err := d.Add(fmt.Sprintf("300234010000020/%d/123456", i)); err != nil {
			b.Fatal(err)
		}
	}
}
