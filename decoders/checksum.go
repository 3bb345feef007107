package decoders

import (
	"hash/crc32"
	"sort"
	"strings"
)

// crc16Params is a CRC-16 in the Rocksoft model (poly, init, reflected
// in/out, final XOR). The bitwise form is enough for frames of a few KB
// and keeps each variant a line of data.
type crc16Params struct {
	poly, init    uint16
	refin, refout bool
	xorout        uint16
}

// checksumKinds are the checks a binary decoder can name. The CRC-16 names
// follow the CRC catalogue (reveng): check value of "123456789" in the
// comment.
var checksumKinds = map[string]struct {
	size int
	fn   func([]byte) uint64
}{
	"crc16-ccitt-false": {2, crc16Func(crc16Params{0x1021, 0xFFFF, false, false, 0})},        // 0x29B1, a.k.a. CRC-16/IBM-3740
	"crc16-xmodem":      {2, crc16Func(crc16Params{0x1021, 0x0000, false, false, 0})},        // 0x31C3
	"crc16-kermit":      {2, crc16Func(crc16Params{0x1021, 0x0000, true, true, 0})},          // 0x2189, a.k.a. CRC-16/CCITT (true)
	"crc16-x25":         {2, crc16Func(crc16Params{0x1021, 0xFFFF, true, true, 0xFFFF})},     // 0x906E, a.k.a. CRC-16/IBM-SDLC
	"crc16-modbus":      {2, crc16Func(crc16Params{0x8005, 0xFFFF, true, true, 0})},          // 0x4B37
	"crc16-arc":         {2, crc16Func(crc16Params{0x8005, 0x0000, true, true, 0})},          // 0xBB3D, a.k.a. CRC-16/IBM
	"crc32":             {4, func(b []byte) uint64 { return uint64(crc32.ChecksumIEEE(b)) }}, // 0xCBF43926 (ISO-HDLC, zip)
	"crc32c":            {4, func(b []byte) uint64 { return uint64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))) }},
	"xor8": {1, func(b []byte) uint64 {
		var x byte
		for _, c := range b {
			x ^= c
		}
		return uint64(x)
	}},
	"sum8": {1, func(b []byte) uint64 {
		var s byte
		for _, c := range b {
			s += c
		}
		return uint64(s)
	}},
	"sum16": {2, func(b []byte) uint64 {
		var s uint16
		for _, c := range b {
			s += uint16(c)
		}
		return uint64(s)
	}},
}

func checksumNames() string {
	n := make([]string, 0, len(checksumKinds))
	for k := range checksumKinds {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
}

func reflect16(v uint16) uint16 {
	var r uint16
	for i := 0; i < 16; i++ {
		if v&(1<<i) != 0 {
			r |= 1 << (15 - i)
		}
	}
	return r
}

func crc16Func(p crc16Params) func([]byte) uint64 {
	return func(data []byte) uint64 {
		crc := p.init
		if p.refin {
			// Reflected algorithm: shift right with the reflected polynomial.
			rp := reflect16(p.poly)
			crc = reflect16(crc)
			for _, b := range data {
				crc ^= uint16(b)
				for i := 0; i < 8; i++ {
					if crc&1 != 0 {
						crc = crc>>1 ^ rp
					} else {
						crc >>= 1
					}
				}
			}
			if !p.refout {
				crc = reflect16(crc)
			}
		} else {
			for _, b := range data {
				crc ^= uint16(b) << 8
				for i := 0; i < 8; i++ {
					if crc&0x8000 != 0 {
						crc = crc<<1 ^ p.poly
					} else {
						crc <<= 1
					}
				}
			}
			if p.refout {
				crc = reflect16(crc)
			}
		}
		return uint64(crc ^ p.xorout)
	}
}
