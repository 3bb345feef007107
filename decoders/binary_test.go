package decoders_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
)

// binDecoder builds a decoder whose datastreams are OM_Observation over the
// named fields, so any value type can be checked.
func binDecoder(t *testing.T, binary string, fields ...string) *decoders.Decoder {
	t.Helper()
	var ds strings.Builder
	for _, f := range fields {
		ds.WriteString("  - {name: " + f + ", observationType: OM_Observation}\n")
	}
	src := "name: bin-t\nformat: binary\nbinary:\n" + binary + "datastreams:\n" + ds.String()
	d, err := decoders.LoadBytes("bin-t.yaml", []byte(src))
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	return d
}

func decodeHex(t *testing.T, d *decoders.Decoder, h string) (map[string][]string, error) {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Decode(&adapters.Frame{Payload: b, Identity: "dev", CustomerID: "c", Received: time.Unix(1.7e9, 0)}, decoders.Env{})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, o := range res.Observations {
		out[o.Datastream.Name] = append(out[o.Datastream.Name], string(o.Result))
	}
	return out, nil
}

func TestBinaryEngineCases(t *testing.T) {
	cases := []struct {
		name    string
		layout  string
		fields  []string
		in      string
		want    map[string]string // field → results joined with ","
		wantErr string
		off     int
	}{
		{name: "big endian ints", layout: `
  fields:
    - {name: a, type: u8}
    - {name: b, type: u16}
    - {name: c, type: u24}
    - {name: d, type: u32}
    - {name: e, type: u64}
`, fields: []string{"a", "b", "c", "d", "e"}, in: "FF 0102 010203 01020304 FFFFFFFFFFFFFFFF",
			want: map[string]string{"a": "255", "b": "258", "c": "66051", "d": "16909060", "e": "18446744073709551615"}},
		{name: "little endian and signed", layout: `
  byte_order: little
  fields:
    - {name: a, type: i8}
    - {name: b, type: i16}
    - {name: c, type: i24}
    - {name: d, type: i32, byte_order: big}
    - {name: e, type: i64}
`, fields: []string{"a", "b", "c", "d", "e"}, in: "FF FEFF FFFF7F FFFFFFFD 0000000000000080",
			want: map[string]string{"a": "-1", "b": "-2", "c": "8388607", "d": "-3", "e": "-9223372036854775808"}},
		{name: "floats shortest", layout: `
  fields:
    - {name: f, type: f32}
    - {name: g, type: f64, byte_order: little}
    - {name: n, type: f32}
`, fields: []string{"f", "g", "n"}, in: "3F0F1AA0 9A9999999999F13F 7FC00000",
			want: map[string]string{"f": "0.559", "g": "1.1"}},
		{name: "scale div add decimals", layout: `
  fields:
    - {name: t, type: i16, scale: 0.01}
    - {name: lon, type: u24, div: 46603.375, add: -180, decimals: 6}
    - {name: p, type: u16, scale: 0.5, add: 1}
`, fields: []string{"t", "lon", "p"}, in: "FB2E 91F5AB 0003",
			want: map[string]string{"t": "-12.34", "lon": "25.255757", "p": "2.5"}},
		{name: "bits and lookup", layout: `
  fields:
    - name: flags
      type: u8
      bits:
        - {name: din1, bit: 7}
        - {name: dout1, bit: 3}
        - {name: mode, bit: 0, len: 3, lookup: {0: idle, 5: pumping}}
    - {name: state, type: u8, lookup: {0: "off", 1: "on", 2: 2.5}}
`, fields: []string{"flags", "din1", "dout1", "mode", "state"}, in: "85 02",
			want: map[string]string{"flags": "133", "din1": "true", "dout1": "false", "mode": `"pumping"`, "state": "2.5"}},
		{name: "bcd string bytes skip", layout: `
  fields:
    - {name: serial, type: bcd, size: 3}
    - {type: skip, size: 1}
    - {name: model, type: string, size: 4}
    - {name: raw, type: bytes, size: 2}
    - {name: at, type: u8, offset: 0}
`, fields: []string{"serial", "model", "raw", "at"}, in: "123456 00 46535400 ABCD",
			want: map[string]string{"serial": "123456", "model": `"FST"`, "raw": `"abcd"`, "at": "18"}},
		{name: "bad bcd", layout: `
  fields:
    - {name: serial, type: bcd, size: 2}
`, fields: []string{"serial"}, in: "1A34", wantErr: "field serial: byte 0x1A is not BCD"},
		{name: "short frame", layout: `
  fields:
    - {name: a, type: u16}
    - {name: b, type: u32}
`, fields: []string{"a"}, in: "0001 0203", wantErr: "field b (u32, 4 bytes) runs past the end (2 bytes left)", off: 2},
		{name: "records with count", layout: `
  fields:
    - {name: n, type: u8}
  records:
    count: n
    size: 3
    fields:
      - {name: v, type: u16}
`, fields: []string{"n", "v"}, in: "02 000100 000200 FFFF",
			want: map[string]string{"n": "2,2", "v": "1,2"}},
		{name: "records until the end", layout: `
  records:
    fields:
      - {name: v, type: u8}
      - {name: w, type: i8}
`, fields: []string{"v", "w"}, in: "01FF 02FE 0300", want: map[string]string{"v": "1,2,3", "w": "-1,-2,0"}},
		{name: "records not whole", layout: `
  records:
    size: 2
    fields:
      - {name: v, type: u8}
`, fields: []string{"v"}, in: "0102 03", wantErr: "3 bytes after the leading fields are not a whole number of 2-byte records"},
		{name: "switch picks case", layout: `
  fields:
    - {name: kind, type: u8}
  switch:
    on: kind
    cases:
      - match: ["0x01"]
        fields:
          - {name: level, type: u16}
      - match: ["2", "3"]
        records:
          size: 1
          fields:
            - {name: b, type: u8}
    default:
      error: unsupported message type
`, fields: []string{"level", "b"}, in: "01 0102", want: map[string]string{"level": "258"}},
		{name: "switch records case", layout: `
  fields:
    - {name: kind, type: u8}
  switch:
    on: kind
    cases:
      - match: ["0x01"]
        fields:
          - {name: level, type: u16}
      - match: ["2", "3"]
        records:
          size: 1
          fields:
            - {name: b, type: u8}
    default:
      error: unsupported message type
`, fields: []string{"level", "b"}, in: "03 0A0B", want: map[string]string{"b": "10,11"}},
		{name: "switch default error", layout: `
  fields:
    - {name: kind, type: u8}
  switch:
    on: kind
    cases:
      - match: ["1"]
        fields: [{name: level, type: u16}]
    default:
      error: unsupported message type
`, fields: []string{"kind"}, in: "07 00", wantErr: "kind = 7: unsupported message type"},
		{name: "modbus crc ok", layout: `
  checksum: {type: crc16-modbus}
  fields:
    - {name: a, type: u8}
`, fields: []string{"a"}, in: hex.EncodeToString([]byte("123456789")) + "374B", want: map[string]string{"a": "49"}},
		{name: "ccitt-false crc bad", layout: `
  checksum: {type: crc16-ccitt-false}
  fields:
    - {name: a, type: u8}
`, fields: []string{"a"}, in: hex.EncodeToString([]byte("123456789")) + "29B2", wantErr: "crc16-ccitt-false checksum mismatch: frame says 29B2, computed 29B1", off: 9},
		{name: "xmodem crc ok", layout: "  checksum: {type: crc16-xmodem}\n  fields: [{name: a, type: u8}]\n",
			fields: []string{"a"}, in: hex.EncodeToString([]byte("123456789")) + "31C3", want: map[string]string{"a": "49"}},
		{name: "kermit crc ok", layout: "  checksum: {type: crc16-kermit, byte_order: little}\n  fields: [{name: a, type: u8}]\n",
			fields: []string{"a"}, in: hex.EncodeToString([]byte("123456789")) + "8921", want: map[string]string{"a": "49"}},
		{name: "x25 crc ok", layout: "  checksum: {type: crc16-x25}\n  fields: [{name: a, type: u8}]\n",
			fields: []string{"a"}, in: hex.EncodeToString([]byte("123456789")) + "906E", want: map[string]string{"a": "49"}},
		{name: "arc crc ok", layout: "  checksum: {type: crc16-arc}\n  fields: [{name: a, type: u8}]\n",
			fields: []string{"a"}, in: hex.EncodeToString([]byte("123456789")) + "BB3D", want: map[string]string{"a": "49"}},
		{name: "crc32 ok", layout: "  checksum: {type: crc32}\n  fields: [{name: a, type: u8}]\n",
			fields: []string{"a"}, in: hex.EncodeToString([]byte("123456789")) + "CBF43926", want: map[string]string{"a": "49"}},
		{name: "sbdrb sum16 over data after the length", layout: `
  checksum: {type: sum16, from: 2}
  fields:
    - {name: len, type: u16}
    - {name: text, type: string, size: 5}
`, fields: []string{"len", "text"}, in: "0005 48656C6C6F 01F4", want: map[string]string{"len": "5", "text": `"Hello"`}},
		{name: "xor8 bad", layout: "  checksum: {type: xor8}\n  fields: [{name: a, type: u8}]\n",
			fields: []string{"a"}, in: "0102 00", wantErr: "xor8 checksum mismatch: frame says 00, computed 03"},
		{name: "ascii header lines", layout: `
  skip_lines: 2
  fields:
    - {name: a, type: u8}
`, fields: []string{"a"}, in: hex.EncodeToString([]byte("\"H\",\"x\"\r\nline2\n")) + "2A", want: map[string]string{"a": "42"}},
		{name: "ascii header cut", layout: "  skip_lines: 2\n  fields: [{name: a, type: u8}]\n",
			fields: []string{"a"}, in: hex.EncodeToString([]byte("only one line\n")), wantErr: "frame ends inside the 2-line ASCII header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := binDecoder(t, c.layout, c.fields...)
			got, err := decodeHex(t, d, c.in)
			if c.wantErr != "" {
				var de *decoders.DecodeError
				if !errors.As(err, &de) || !strings.Contains(de.Msg, c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				if c.off != 0 && de.Offset != c.off {
					t.Fatalf("offset %d, want %d", de.Offset, c.off)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if g := strings.Join(got[k], ","); g != v {
					t.Errorf("%s = %s, want %s", k, g, v)
				}
			}
		})
	}
}

func TestBinaryConfigErrors(t *testing.T) {
	src := `name: b
format: binary
binary:
  byte_order: middle
  checksum: {type: crc16-foo}
  fields:
    - {name: a, type: u12}
    - {name: b, type: bytes}
    - {name: c, type: u8, bits: [{name: hi, bit: 6, len: 4}]}
    - {name: a, type: u8}
datastreams:
  - {name: a}
`
	_, err := decoders.LoadBytes("b.yaml", []byte(src))
	if err == nil {
		t.Fatal("want errors")
	}
	for _, w := range []string{
		"b.yaml:4:15: binary.byte_order: byte_order must be big or little",
		"b.yaml:5:20: binary.checksum.type: unknown checksum \"crc16-foo\" (crc16-arc, crc16-ccitt-false, crc16-kermit, crc16-modbus, crc16-x25, crc16-xmodem, crc32, crc32c, sum16, sum8, xor8)",
		"binary.fields[0].type: unknown type \"u12\"",
		"binary.fields[1].size: a bytes field needs a size",
		"binary.fields[2].bits[0]: bits 6..9 do not fit a 8-bit field",
		"binary.fields[3].name: field \"a\" is defined twice",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in\n%v", w, err)
		}
	}
}
