package iridium

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

const samplePayload = "Thanks for your amazing sbd-rs repo @someuser!"

func mailSample(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(samplePath(t, "email_mo_with_location.eml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMailSample(t *testing.T) {
	m, err := ParseMail(mailSample(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.IMEI != "300234010000020" || m.MOMSN != 7 || m.MTMSN != 0 || !m.HasMTMSN || m.SessionStatus != 0 ||
		m.SessionStatusText != "Transfer OK" || m.MessageSize != 46 {
		t.Errorf("fields = %+v", m)
	}
	if got := m.SessionTime.Format(time.RFC3339); got != "2025-09-14T23:30:40Z" {
		t.Errorf("session time %s", got)
	}
	if !m.HasAttachment || string(m.Attachment) != samplePayload || m.AttachmentName != "300234010000020_000007.sbd" {
		t.Errorf("attachment %q %q", m.AttachmentName, m.Attachment)
	}
	if m.Location == nil || m.Location.Lat != -43.52117 || m.Location.Lon != 172.60487 || m.Location.CEPKm != 2 {
		t.Errorf("location %+v", m.Location)
	}
	want := map[string]string{
		"transport": "sbdmail", "imei": "300234010000020", "momsn": "7", "mtmsn": "0",
		"session_status": "0", "session_status_text": "Transfer OK", "session_time": "2025-09-14T23:30:40Z",
		"message_size": "46", "lat": "-43.52117", "lon": "172.60487", "cep_km": "2",
	}
	got := m.Meta()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("meta = %v", got)
	}
	if m.DedupKey() != "300234010000020/7/2025-09-14T23:30:40Z" {
		t.Errorf("dedup key %q", m.DedupKey())
	}
}

// The sample's attachment equals the DirectIP payload of the same message.
func TestMailPayloadEqualsDirectIP(t *testing.T) {
	m, err := ParseMail(mailSample(t))
	if err != nil {
		t.Fatal(err)
	}
	mo, err := ParseMO(hexSample(t, "directip_mo_location_south.hex"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Attachment, mo.Payload) || len(m.Attachment) != 46 {
		t.Errorf("mail %q != directip %q", m.Attachment, mo.Payload)
	}
}

func TestParseMailBodyVariations(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		session string
		status  int
		loc     bool
		cep     string
	}{
		{"guide double-space day", "MOMSN: 7\nMTMSN: 0\nTime of Session (UTC): Fri Jul  8 00:12:55 2005\nSession Status: 00 - TRANSFER OK\nMessage Size (bytes): 46\n",
			"2005-07-08T00:12:55Z", 0, false, ""},
		{"single digit day", "MOMSN: 7\r\nTime of Session (UTC): Fri Jul 8 00:12:55 2005\r\nSession Status: 13 - Incomplete Transfer\r\n",
			"2005-07-08T00:12:55Z", 13, false, ""},
		{"zero padded day", "MOMSN: 7\nTime of Session (UTC): Fri Jul 08 00:12:55 2005\nSession Status: 0\n",
			"2005-07-08T00:12:55Z", 0, false, ""},
		{"upper case keys and names", "MOMSN:7\nMTMSN:1\nTIME OF SESSION (UTC):FRI JUL 08 00:12:55 2005\nSESSION STATUS:01 - MT MESSAGE TOO LARGE\nMESSAGE SIZE (BYTES):3\nUNIT LOCATION: LAT = 52.38670 LONG = -0.29380\nCEPRADIUS = 8\n",
			"2005-07-08T00:12:55Z", 1, true, "8"},
		{"lower case and extra spacing", "\n\n  momsn :   7  \n\n  time  of  session  (utc) :  fri  jul  8  00:12:55  2005 \n session status :  00  -  transfer ok \nunit location:lat=-43.521167 long=172.604867\n cepradius=2.5\n",
			"2005-07-08T00:12:55Z", 0, true, "2.5"},
		{"emulator CEPRadius", "MOMSN: 7\nTime of Session (UTC): Sun Sep 14 23:30:40 2025\nSession Status: 00 - Transfer OK\nUnit Location: Lat = -43.52117 Long = 172.60487\nCEPRadius = 2\nMessage is Attached.\n",
			"2025-09-14T23:30:40Z", 0, true, "2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMailBody(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if m.MOMSN != 7 || m.SessionTime.Format(time.RFC3339) != tc.session || m.SessionStatus != tc.status {
				t.Errorf("got %+v", m)
			}
			if (m.Location != nil) != tc.loc {
				t.Fatalf("location %+v", m.Location)
			}
			if tc.loc && m.Location.CEPText != tc.cep {
				t.Errorf("cep %q", m.Location.CEPText)
			}
		})
	}
}

func TestParseMailBodyErrors(t *testing.T) {
	tests := []struct{ name, body string }{
		{"no MOMSN", "Time of Session (UTC): Fri Jul 8 00:12:55 2005\nSession Status: 0\n"},
		{"MOMSN too big", "MOMSN: 70000\nTime of Session (UTC): Fri Jul 8 00:12:55 2005\nSession Status: 0\n"},
		{"no time", "MOMSN: 7\nSession Status: 0\n"},
		{"bad time", "MOMSN: 7\nTime of Session (UTC): yesterday\nSession Status: 0\n"},
		{"no status", "MOMSN: 7\nTime of Session (UTC): Fri Jul 8 00:12:55 2005\n"},
		{"latitude out of range", "MOMSN: 7\nTime of Session (UTC): Fri Jul 8 00:12:55 2005\nSession Status: 0\nUnit Location: Lat = 91.0 Long = 0\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseMailBody(tc.body); !errors.Is(err, ErrMailField) {
				t.Errorf("err = %v, want ErrMailField", err)
			}
		})
	}
}

// buildMail assembles a multipart SBD mail; att == nil means no attachment.
func buildMail(subject, body, attHeader string, att []byte) []byte {
	var b strings.Builder
	b.WriteString("From: sbdservice@sbd.iridium.com\r\nSubject: " + subject + "\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n")
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	if att != nil {
		b.WriteString("\r\n--B\r\n" + attHeader + "Content-Transfer-Encoding: base64\r\n\r\n")
		enc := base64.StdEncoding.EncodeToString(att)
		for len(enc) > 20 { // folded lines
			b.WriteString(enc[:20] + "\r\n")
			enc = enc[20:]
		}
		b.WriteString(enc + "\r\n")
	}
	b.WriteString("\r\n--B--\r\n")
	return []byte(b.String())
}

const okBody = "MOMSN: 7\nMTMSN: 0\nTime of Session (UTC): Sun Sep 14 23:30:40 2025\nSession Status: 00 - Transfer OK\nMessage Size (bytes): %d\n"

func body(size string) string { return strings.Replace(okBody, "%d", size, 1) }

func TestParseMailTable(t *testing.T) {
	const subj = "SBD Msg From Unit: 300234010000020"
	payload := []byte(samplePayload)
	tests := []struct {
		name    string
		raw     []byte
		wantErr error
		check   func(t *testing.T, m *SBDMail)
	}{
		{name: "no attachment, size 0", raw: buildMail(subj, body("0"), "", nil),
			check: func(t *testing.T, m *SBDMail) {
				if m.HasAttachment || m.MessageSize != 0 || m.IMEI != "300234010000020" {
					t.Errorf("got %+v", m)
				}
			}},
		{name: "upper case .SBD, octet-stream", raw: buildMail(subj, body("46"),
			"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"X_000007.SBD\"\r\n", payload),
			check: func(t *testing.T, m *SBDMail) {
				if string(m.Attachment) != samplePayload || m.AttachmentName != "X_000007.SBD" {
					t.Errorf("got %q %q", m.AttachmentName, m.Attachment)
				}
			}},
		{name: "name only in Content-Type", raw: buildMail(subj, body("46"),
			"Content-Type: text/plain; name=\"a.sbd\"\r\n", payload),
			check: func(t *testing.T, m *SBDMail) {
				if string(m.Attachment) != samplePayload {
					t.Errorf("got %q", m.Attachment)
				}
			}},
		{name: "non-.sbd attachment ignored", raw: buildMail(subj, body("0"),
			"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n", payload),
			check: func(t *testing.T, m *SBDMail) {
				if m.HasAttachment {
					t.Errorf("took %q", m.AttachmentName)
				}
			}},
		{name: "size mismatch", raw: buildMail(subj, body("45"),
			"Content-Disposition: attachment; filename=\"a.sbd\"\r\n", payload), wantErr: ErrMailSize},
		{name: "size but no attachment", raw: buildMail(subj, body("46"), "", nil), wantErr: ErrMailSize},
		{name: "not an SBD subject", raw: buildMail("Hello", body("0"), "", nil), wantErr: ErrNotSBDMail},
		{name: "short IMEI", raw: buildMail("SBD Msg From Unit: 30023401000002", body("0"), "", nil), wantErr: ErrNotSBDMail},
		{name: "missing MOMSN", raw: buildMail(subj, "Session Status: 0\n", "", nil), wantErr: ErrMailField},
		{name: "bad base64", raw: []byte("Subject: " + subj + "\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\n" +
			body("1") + "\r\n--B\r\nContent-Disposition: attachment; filename=a.sbd\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--B--\r\n"), wantErr: ErrMailEncoding},
		{name: "multipart without boundary", raw: []byte("Subject: " + subj + "\r\nContent-Type: multipart/mixed\r\n\r\nx"), wantErr: ErrMailMIME},
		{name: "no header block", raw: []byte("garbage"), wantErr: ErrMailMIME},
		{name: "plain text mail, no MIME", raw: []byte("Subject: " + subj + "\r\n\r\n" + body("0")),
			check: func(t *testing.T, m *SBDMail) {
				if m.HasAttachment || m.MOMSN != 7 {
					t.Errorf("got %+v", m)
				}
			}},
		{name: "encoded subject", raw: buildMail("=?US-ASCII?Q?SBD_Msg_From_Unit:_300234010000020?=", body("0"), "", nil),
			check: func(t *testing.T, m *SBDMail) {
				if m.IMEI != "300234010000020" {
					t.Errorf("imei %q", m.IMEI)
				}
			}},
		{name: "nested multipart", raw: []byte("Subject: " + subj + "\r\nContent-Type: multipart/mixed; boundary=OUT\r\n\r\n--OUT\r\n" +
			"Content-Type: multipart/alternative; boundary=IN\r\n\r\n--IN\r\nContent-Type: text/plain\r\n\r\n" + body("5") +
			"\r\n--IN\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--IN--\r\n--OUT\r\nContent-Type: application/x-zip-compressed; name=\"z.sbd\"\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--OUT--\r\n"),
			check: func(t *testing.T, m *SBDMail) {
				if string(m.Attachment) != "hello" {
					t.Errorf("got %+v", m)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMail(tc.raw)
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

func FuzzParseMail(f *testing.F) {
	f.Add(buildMail("SBD Msg From Unit: 300234010000020", body("5"), "Content-Disposition: attachment; filename=\"a.sbd\"\r\n", []byte("hello")))
	f.Add(buildMail("SBD Msg From Unit: 300234010000020", body("0"), "", nil))
	f.Add([]byte("Subject: SBD Msg From Unit: 300234010000020\r\n\r\n" + body("0")))
	if sharedAvailable() {
		f.Add(mailSample(f))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := ParseMail(raw)
		if err != nil {
			return
		}
		if len(m.IMEI) != 15 {
			t.Fatalf("IMEI %q", m.IMEI)
		}
		if m.MessageSize >= 0 && m.HasAttachment && len(m.Attachment) != m.MessageSize {
			t.Fatalf("size %d vs %d", len(m.Attachment), m.MessageSize)
		}
		meta := m.Meta()
		if meta[MetaIMEI] != m.IMEI || meta[MetaSessionTime] == "" {
			t.Fatalf("meta %v", meta)
		}
	})
}
