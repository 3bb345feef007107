package iridium

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/vigd/vigd/internal/testpeers"
)

// hexSample reads a ../shared/samples hex file as bytes.
func hexSample(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(testpeers.Sample(t, name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// ie builds one information element.
func ie(id byte, data []byte) []byte {
	b := []byte{id, 0, 0}
	binary.BigEndian.PutUint16(b[1:], uint16(len(data)))
	return append(b, data...)
}

// msg builds a revision-1 message with a correct overall length.
func msg(ies ...[]byte) []byte {
	body := bytes.Join(ies, nil)
	b := []byte{1, 0, 0}
	binary.BigEndian.PutUint16(b[1:], uint16(len(body)))
	return append(b, body...)
}

// moHeader builds IE 0x01 contents.
func moHeader(cdr uint32, imei string, status byte, momsn, mtmsn uint16, t uint32) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint32(b[0:], cdr)
	copy(b[4:19], imei)
	b[19] = status
	binary.BigEndian.PutUint16(b[20:], momsn)
	binary.BigEndian.PutUint16(b[22:], mtmsn)
	binary.BigEndian.PutUint32(b[24:], t)
	return b
}

func loc(flags, latDeg byte, latMin uint16, lonDeg byte, lonMin uint16, cep uint32) []byte {
	b := make([]byte, 11)
	b[0], b[1], b[4] = flags, latDeg, lonDeg
	binary.BigEndian.PutUint16(b[2:], latMin)
	binary.BigEndian.PutUint16(b[5:], lonMin)
	binary.BigEndian.PutUint32(b[7:], cep)
	return b
}

const testIMEI = "300234010000010"

var goodHeader = moHeader(1894516585, testIMEI, 0, 75, 0, 1436465708)

func TestParseMOSamples(t *testing.T) {
	tests := []struct {
		file        string
		cdr         uint32
		imei        string
		status      uint8
		momsn       uint16
		mtmsn       uint16
		session     string
		lat, lon    string // 6 decimals, "" when no location
		cep         uint32
		payload     string
		hasPayload  bool
		payloadAt   int
		wantMetaLen int
	}{
		{"directip_mo_basic.hex", 1894516585, "300234010000010", 0, 75, 0, "2015-07-09T18:15:08Z", "", "", 0,
			"test message from alex", true, 37, 7},
		{"directip_mo_location_south.hex", 2079775761, "300234010000020", 0, 7, 0, "2025-09-14T23:30:40Z",
			"-43.521167", "172.604867", 2, "Thanks for your amazing sbd-rs repo @someuser!", true, 51, 10},
		{"directip_mo_guide_failed_session.hex", 1301567, "300034010123450", 13, 54322, 0, "2005-12-30T13:45:25Z", "", "", 0,
			"", false, 0, 7},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b := hexSample(t, tc.file)
			m, err := ParseMO(b)
			if err != nil {
				t.Fatal(err)
			}
			h := m.Header
			if h.CDRRef != tc.cdr || h.IMEI != tc.imei || h.SessionStatus != tc.status || h.MOMSN != tc.momsn || h.MTMSN != tc.mtmsn {
				t.Errorf("header = %+v", h)
			}
			if got := h.SessionTime.Format(time.RFC3339); got != tc.session {
				t.Errorf("session time = %s, want %s", got, tc.session)
			}
			if string(m.Payload) != tc.payload || m.HasPayload != tc.hasPayload || m.PayloadOffset != tc.payloadAt {
				t.Errorf("payload = %q (has %v at %d), want %q at %d", m.Payload, m.HasPayload, m.PayloadOffset, tc.payload, tc.payloadAt)
			}
			if m.Trailing != 0 || len(m.Skipped) != 0 {
				t.Errorf("trailing %d skipped %v", m.Trailing, m.Skipped)
			}
			meta := m.Meta()
			if tc.lat == "" {
				if m.Location != nil {
					t.Errorf("location = %+v, want none", m.Location)
				}
			} else {
				if m.Location == nil {
					t.Fatal("no location")
				}
				if meta[MetaLat] != tc.lat || meta[MetaLon] != tc.lon || m.Location.CEPKm != tc.cep || meta[MetaCEPKm] != "2" {
					t.Errorf("location = %+v meta %v", m.Location, meta)
				}
				if m.Location.Flags != 0x02 {
					t.Errorf("flags = %#x", m.Location.Flags)
				}
			}
			if len(meta) != tc.wantMetaLen || meta[MetaIMEI] != tc.imei || meta[MetaSessionTime] != tc.session || meta[MetaTransport] != "directip" {
				t.Errorf("meta = %v", meta)
			}
		})
	}
}

func TestMOLocationSouthMetaExact(t *testing.T) {
	m, err := ParseMO(hexSample(t, "directip_mo_location_south.hex"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"transport": "directip", "imei": "300234010000020", "momsn": "7", "mtmsn": "0",
		"cdr_ref": "2079775761", "session_status": "0", "session_time": "2025-09-14T23:30:40Z",
		"lat": "-43.521167", "lon": "172.604867", "cep_km": "2",
	}
	got := m.Meta()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("meta has %d keys: %v", len(got), got)
	}
	if m.DedupKey() != "300234010000020/7/2079775761" {
		t.Errorf("dedup key %q", m.DedupKey())
	}
}

func TestParseMTSamples(t *testing.T) {
	m, err := ParseMT(hexSample(t, "directip_mt_guide.hex"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header == nil || string(m.Header.ClientMsgID[:]) != "Msg1" || m.Header.IMEI != "300034010123450" || m.Header.Flags != 0 {
		t.Errorf("header = %+v", m.Header)
	}
	if !m.HasPayload || !bytes.Equal(m.Payload, make([]byte, 70)) || m.Confirmation != nil {
		t.Errorf("payload = %x confirmation %v", m.Payload, m.Confirmation)
	}

	c, err := ParseMT(hexSample(t, "directip_mt_confirmation.hex"))
	if err != nil {
		t.Fatal(err)
	}
	want := MTConfirmation{ClientMsgID: [4]byte{'M', 's', 'g', '1'}, IMEI: "300034010123450", AutoIDRef: 58473, Status: 50}
	if c.Confirmation == nil || *c.Confirmation != want || c.Header != nil {
		t.Errorf("confirmation = %+v, want %+v", c.Confirmation, want)
	}
}

func TestMTConfirmationNegativeStatus(t *testing.T) {
	d := make([]byte, 25)
	copy(d, "Msg1")
	copy(d[4:], "300034010123450")
	binary.BigEndian.PutUint16(d[23:], uint16(0xFFFE)) // -2 unknown IMEI
	m, err := ParseMT(msg(ie(IEIMTConfirmation, d)))
	if err != nil {
		t.Fatal(err)
	}
	if m.Confirmation.Status != -2 || m.Confirmation.AutoIDRef != 0 {
		t.Errorf("confirmation = %+v", m.Confirmation)
	}
}

func TestMOConfirmation(t *testing.T) {
	sample := hexSample(t, "directip_mo_confirmation.hex")
	if got := EncodeMOConfirmation(true); !bytes.Equal(got, sample) {
		t.Errorf("EncodeMOConfirmation(true) = % x, want % x", got, sample)
	}
	if got := EncodeMOConfirmation(false); !bytes.Equal(got, []byte{1, 0, 4, 5, 0, 1, 0}) {
		t.Errorf("EncodeMOConfirmation(false) = % x", got)
	}
	ok, err := ParseMOConfirmation(sample)
	if err != nil || !ok {
		t.Errorf("ParseMOConfirmation = %v, %v", ok, err)
	}
	if _, err := ParseMOConfirmation([]byte{1, 0, 4, 5, 0, 1, 7}); !errors.Is(err, ErrConfirmation) {
		t.Errorf("status 7: err = %v", err)
	}
}

func TestParseMOTable(t *testing.T) {
	payload := []byte("hello")
	southWest := loc(0x03, 0, 30000, 10, 30000, 5)
	tests := []struct {
		name    string
		in      []byte
		wantErr error
		check   func(t *testing.T, m *MO)
	}{
		{name: "empty", in: nil, wantErr: ErrShortPreHeader},
		{name: "short pre-header", in: []byte{0x01, 0x00}, wantErr: ErrShortPreHeader},
		{name: "bad revision", in: []byte{0x02, 0x00, 0x00}, wantErr: ErrRevision},
		{name: "length beyond data", in: []byte{0x01, 0x00, 0x20, 0x01, 0x00, 0x1C, 0x00}, wantErr: ErrTruncated},
		{name: "IE length overflow",
			in:      append([]byte{0x01, 0x00, 0x1F, 0x01, 0x00, 0x28}, goodHeader...), // declares 40, 28 follow
			wantErr: ErrIEOverflow},
		{name: "IE header cut", in: msg(ie(IEIMOHeader, goodHeader), []byte{0x02, 0x00}), wantErr: ErrIEOverflow},
		{name: "header wrong length", in: msg(ie(IEIMOHeader, goodHeader[:27])), wantErr: ErrIELength},
		{name: "no header", in: msg(ie(IEIMOPayload, payload)), wantErr: ErrNoHeader},
		{name: "duplicate header", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOHeader, goodHeader)), wantErr: ErrDuplicateIE},
		{name: "duplicate payload", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOPayload, payload), ie(IEIMOPayload, payload)), wantErr: ErrDuplicateIE},
		{name: "bad IMEI digits", in: msg(ie(IEIMOHeader, moHeader(1, "30023401000001X", 0, 1, 0, 0))), wantErr: ErrIMEI},
		{name: "IMEI with NUL", in: msg(ie(IEIMOHeader, moHeader(1, "30023401000001", 0, 1, 0, 0))), wantErr: ErrIMEI},
		{name: "reserved location bits", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, loc(0x10, 1, 0, 1, 0, 1))), wantErr: ErrLocationReserved},
		{name: "location format code", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, loc(0x04, 1, 0, 1, 0, 1))), wantErr: ErrLocationReserved},
		{name: "latitude degrees > 90", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, loc(0, 91, 0, 1, 0, 1))), wantErr: ErrLocationRange},
		{name: "longitude degrees > 180", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, loc(0, 1, 0, 181, 0, 1))), wantErr: ErrLocationRange},
		{name: "minutes > 59999", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, loc(0, 1, 60000, 1, 0, 1))), wantErr: ErrLocationRange},
		{name: "90 degrees and some minutes", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, loc(0, 90, 1, 1, 0, 1))), wantErr: ErrLocationRange},
		{name: "location guide length 20", in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, make([]byte, 20))), wantErr: ErrIELength},
		{name: "unknown IE skipped",
			in: msg(ie(IEIMOHeader, goodHeader), ie(0x7F, []byte{1, 2, 3, 4, 5, 6}), ie(IEIMOPayload, payload)),
			check: func(t *testing.T, m *MO) {
				if !bytes.Equal(m.Skipped, []byte{0x7F}) || string(m.Payload) != "hello" || m.Header.MOMSN != 75 {
					t.Errorf("got %+v", m)
				}
			}},
		{name: "elements in reverse order",
			in: msg(ie(IEIMOPayload, payload), ie(IEIMOLocation, loc(0x02, 43, 31270, 172, 36292, 2)), ie(IEIMOHeader, goodHeader)),
			check: func(t *testing.T, m *MO) {
				if m.Header.IMEI != testIMEI || string(m.Payload) != "hello" || m.Location == nil || m.PayloadOffset != 6 {
					t.Fatalf("got %+v", m)
				}
				if meta := m.Meta(); meta[MetaLat] != "-43.521167" || meta[MetaLon] != "172.604867" {
					t.Errorf("meta %v", meta)
				}
			}},
		{name: "sign applies to whole value",
			in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOLocation, southWest)),
			check: func(t *testing.T, m *MO) {
				if m.Location.Lat != -0.5 || m.Location.Lon != -10.5 || m.Location.CEPKm != 5 {
					t.Errorf("location %+v", m.Location)
				}
			}},
		{name: "empty payload element",
			in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMOPayload, nil)),
			check: func(t *testing.T, m *MO) {
				if !m.HasPayload || len(m.Payload) != 0 {
					t.Errorf("payload %q has %v", m.Payload, m.HasPayload)
				}
			}},
		{name: "bytes past declared length",
			in: append(msg(ie(IEIMOHeader, goodHeader)), 0x02, 0x00, 0x01, 'x'),
			check: func(t *testing.T, m *MO) {
				if m.Trailing != 4 || m.HasPayload || m.Meta()[MetaTrailingBytes] != "4" {
					t.Errorf("trailing %d payload %v", m.Trailing, m.HasPayload)
				}
			}},
		{name: "MT element in MO skipped",
			in: msg(ie(IEIMOHeader, goodHeader), ie(IEIMTPriority, []byte{0, 1})),
			check: func(t *testing.T, m *MO) {
				if !bytes.Equal(m.Skipped, []byte{IEIMTPriority}) {
					t.Errorf("skipped %v", m.Skipped)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMO(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, m)
		})
	}
}

func TestParseMTTable(t *testing.T) {
	hdr := make([]byte, 21)
	copy(hdr, "Msg1")
	copy(hdr[4:], "300034010123450")
	binary.BigEndian.PutUint16(hdr[19:], 0x0021)
	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		{"no header", msg(ie(IEIMTPayload, []byte{1})), ErrNoHeader},
		{"header wrong length", msg(ie(IEIMTHeader, hdr[:20])), ErrIELength},
		{"priority wrong length", msg(ie(IEIMTHeader, hdr), ie(IEIMTPriority, []byte{1})), ErrIELength},
		{"confirmation wrong length", msg(ie(IEIMTConfirmation, make([]byte, 24))), ErrIELength},
		{"bad IMEI", msg(ie(IEIMTHeader, append([]byte("Msg1abcdefghijklmnop"), 0))), ErrIMEI},
		{"ok with priority", msg(ie(IEIMTPriority, []byte{0, 3}), ie(IEIMTHeader, hdr), ie(IEIMTPayload, []byte("hi"))), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMT(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && (m.Priority != 3 || m.Header.Flags != 0x21 || string(m.Payload) != "hi") {
				t.Errorf("got %+v", m)
			}
		})
	}
}

func TestReadMessage(t *testing.T) {
	sample := hexSample(t, "directip_mo_location_south.hex")
	// One byte per Read, and extra bytes after the message that must stay
	// unread.
	r := bytes.NewReader(append(append([]byte{}, sample...), 0xAA, 0xBB))
	got, err := ReadMessage(iotest.OneByteReader(r))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sample) || r.Len() != 2 {
		t.Errorf("read %d bytes, %d left", len(got), r.Len())
	}
	if _, err := ReadMessage(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty: err = %v, want io.EOF", err)
	}
	if _, err := ReadMessage(bytes.NewReader([]byte{1, 0})); !errors.Is(err, ErrShortPreHeader) {
		t.Errorf("short: err = %v", err)
	}
	if _, err := ReadMessage(bytes.NewReader(sample[:50])); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated: err = %v", err)
	}
	if _, err := ReadMessage(bytes.NewReader([]byte{9, 0, 0})); !errors.Is(err, ErrRevision) {
		t.Errorf("revision: err = %v", err)
	}
}

func TestSessionStatusText(t *testing.T) {
	if SessionStatusText(13) != "rf link loss" || SessionStatusText(99) != "unknown" {
		t.Error("status texts")
	}
}

func FuzzParseMO(f *testing.F) {
	f.Add(msg(ie(IEIMOHeader, goodHeader), ie(IEIMOPayload, []byte("hello"))))
	f.Add(msg(ie(IEIMOPayload, []byte("x")), ie(IEIMOLocation, loc(0x03, 0, 30000, 10, 30000, 5)), ie(IEIMOHeader, goodHeader)))
	f.Add(append(msg(ie(IEIMOHeader, goodHeader)), 1, 2, 3))
	f.Add([]byte{1, 0, 4, 5, 0, 1, 1})
	if sharedAvailable() {
		for _, s := range []string{"directip_mo_basic.hex", "directip_mo_location_south.hex", "directip_mo_guide_failed_session.hex", "directip_mt_guide.hex", "directip_mt_confirmation.hex"} {
			f.Add(hexSample(f, s))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// ReadMessage and SplitIEs must agree on where a message ends.
		read, rerr := ReadMessage(bytes.NewReader(b))
		ies, trailing, serr := SplitIEs(b)
		if rerr == nil && len(b) != len(read)+trailing && serr == nil {
			t.Fatalf("ReadMessage took %d bytes, SplitIEs left %d of %d", len(read), trailing, len(b))
		}
		if rerr == nil && !bytes.Equal(read, b[:len(read)]) {
			t.Fatal("ReadMessage changed bytes")
		}
		for _, e := range ies {
			if e.Offset+len(e.Data) > len(b)-trailing {
				t.Fatalf("IE beyond message: %+v", e)
			}
		}
		m, err := ParseMO(b)
		if err == nil {
			if len(m.Header.IMEI) != 15 || strings.Trim(m.Header.IMEI, "0123456789") != "" {
				t.Fatalf("IMEI %q", m.Header.IMEI)
			}
			if l := m.Location; l != nil && (l.Lat < -90 || l.Lat > 90 || l.Lon < -180 || l.Lon > 180) {
				t.Fatalf("location %+v", l)
			}
			if m.HasPayload && !bytes.Equal(b[m.PayloadOffset:m.PayloadOffset+len(m.Payload)], m.Payload) {
				t.Fatal("payload offset wrong")
			}
			_ = m.Meta()
		}
		_, _ = ParseMT(b)
		_, _ = ParseMOConfirmation(b)
	})
}

func samplePath(t testing.TB, name string) string { return testpeers.Sample(t, name) }

func sharedAvailable() bool { return testpeers.SharedDir() != "" }
