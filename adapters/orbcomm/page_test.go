package orbcomm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/internal/testpeers"
)

func discardLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// pageCases are named raw answers and what ParsePage makes of them.
var pageCases = []struct {
	name string
	in   string
	err  string // substring of the error; "" = parses
	// checks on success
	errorID int64
	more    bool
	nextID  int64
	nextUTC string
	msgs    int
	msgErr  []string // per message: "" or a substring of Message.Err
}{
	{name: "empty with null", in: `{"ErrorID":0,"More":false,"NextStartUTC":"","NextStartID":-1,"Messages":null}`, nextID: -1},
	{name: "empty without keys", in: `{"ErrorID":0}`, nextID: -1},
	{name: "gateway error", in: `{"ErrorID":21785,"More":false,"NextStartUTC":null,"NextStartID":-1,"Messages":null}`, errorID: 21785, nextID: -1},
	{name: "one raw message", in: `{"ErrorID":0,"More":true,"NextStartUTC":"2024-05-23 10:14:09","NextStartID":8,"Messages":[` +
		`{"ID":7,"MessageUTC":"2024-05-23 10:14:09","ReceiveUTC":"2024-05-23 10:14:08","SIN":128,"MobileID":"01000001TESTA1B","RegionName":"R","OTAMessageSize":3,"RawPayload":[128,1,255]}]}`,
		more: true, nextID: 8, nextUTC: "2024-05-23 10:14:09", msgs: 1, msgErr: []string{""}},
	{name: "byte over 255", in: `{"ErrorID":0,"Messages":[{"ID":7,"SIN":128,"RawPayload":[128,256]}]}`, nextID: -1, msgs: 1, msgErr: []string{"RawPayload[1] = 256 is not a byte"}},
	{name: "negative byte", in: `{"ErrorID":0,"Messages":[{"ID":7,"SIN":128,"RawPayload":[-1]}]}`, nextID: -1, msgs: 1, msgErr: []string{"RawPayload[0] = -1 is not a byte"}},
	{name: "fractional byte", in: `{"ErrorID":0,"Messages":[{"ID":7,"SIN":128,"RawPayload":[1.5]}]}`, nextID: -1, msgs: 1, msgErr: []string{"RawPayload[0] = 1.5 is not a byte"}},
	{name: "no ID", in: `{"ErrorID":0,"Messages":[{"SIN":128,"RawPayload":[128]}]}`, nextID: -1, msgs: 1, msgErr: []string{"no positive ID"}},
	{name: "no SIN", in: `{"ErrorID":0,"Messages":[{"ID":3,"RawPayload":[128]}]}`, nextID: -1, msgs: 1, msgErr: []string{"no SIN"}},
	{name: "message not an object", in: `{"ErrorID":0,"Messages":[17,{"ID":3,"SIN":1}]}`, nextID: -1, msgs: 2, msgErr: []string{"not a message object", ""}},
	{name: "payload fields", in: `{"ErrorID":0,"Messages":[{"ID":3,"SIN":0,"Payload":{"Name":"p","SIN":0,"MIN":72,"Fields":[` +
		`{"Name":"a","Value":"1","Type":"signedint"},{"Name":"n","Value":5},{"Name":"arr","Type":"array","Elements":[{"Index":0,"Fields":[]}]}]}}]}`,
		nextID: -1, msgs: 1, msgErr: []string{""}},
	{name: "payload null", in: `{"ErrorID":0,"Messages":[{"ID":3,"SIN":0,"Payload":null}]}`, nextID: -1, msgs: 1, msgErr: []string{""}},
	{name: "payload wrong shape", in: `{"ErrorID":0,"Messages":[{"ID":3,"SIN":0,"Payload":{"Fields":7}}]}`, nextID: -1, msgs: 1, msgErr: []string{"Payload:"}},
	{name: "not JSON", in: `<html>Service Unavailable</html>`, err: "not a get_return_messages page"},
	{name: "truncated", in: `{"ErrorID":0,"More":tr`, err: "not a get_return_messages page"},
	{name: "no ErrorID", in: `{"Messages":[]}`, err: "no ErrorID"},
	{name: "messages not a list", in: `{"ErrorID":0,"Messages":{}}`, err: "not a get_return_messages page"},
	{name: "empty", in: ``, err: "not a get_return_messages page"},
}

func TestParsePage(t *testing.T) {
	for _, tc := range pageCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePage([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrPage) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.ErrorID != tc.errorID || p.More != tc.more || p.NextStartID != tc.nextID || p.NextStartUTC != tc.nextUTC || len(p.Messages) != tc.msgs {
				t.Fatalf("page %+v", p)
			}
			for i, want := range tc.msgErr {
				got := p.Messages[i].Err
				if (want == "") != (got == nil) || (got != nil && !strings.Contains(got.Error(), want)) {
					t.Errorf("message %d err %v, want %q", i, got, want)
				}
			}
		})
	}
}

func TestPayloadFieldsToMeta(t *testing.T) {
	p, err := ParsePage([]byte(pageCases[10].in))
	if err != nil {
		t.Fatal(err)
	}
	f := p.Messages[0].Frame("a", time.Unix(0, 0))
	for k, v := range map[string]string{"field.a": "1", "field.n": "5", "min": "72", "sin": "0", "payload_format": "json", "payload_name": "p",
		"field.arr": `{"Name":"arr","Type":"array","Elements":[{"Index":0,"Fields":[]}]}`} {
		if f.Meta[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, f.Meta[k], v)
		}
	}
}

// With both RawPayload and a decoded Payload, the bytes are the payload
// and the fields are still in Meta.
func TestRawAndDecodedPayload(t *testing.T) {
	p, err := ParsePage([]byte(`{"ErrorID":0,"Messages":[{"ID":9,"SIN":0,"MobileID":"M1","RawPayload":[0,72,1],` +
		`"Payload":{"Name":"position","SIN":0,"MIN":72,"Fields":[{"Name":"latitude","Value":"2739420","Type":"signedint"}]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	f := p.Messages[0].Frame("a", time.Unix(0, 0))
	if !bytes.Equal(f.Payload, []byte{0, 72, 1}) || f.Meta["payload_format"] != "raw" || f.Meta["field.latitude"] != "2739420" || f.Meta["min"] != "72" {
		t.Errorf("frame %q %v", f.Payload, f.Meta)
	}
}

func TestSamplePageParses(t *testing.T) {
	b, err := os.ReadFile(testpeers.Sample(t, "orbcomm_get_return_messages_page1.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !p.More || p.NextStartID != 10482351125 || len(p.Messages) != 2 {
		t.Fatalf("%+v", p)
	}
	m0, m1 := p.Messages[0], p.Messages[1]
	if m0.ID != 10482351123 || m0.MIN() != 72 || m0.Payload == nil || m0.RawPayload != nil || m0.Err != nil {
		t.Errorf("message 0 %+v", m0)
	}
	if m1.ID != 10482351124 || m1.MIN() != 1 || m1.Payload != nil || !bytes.Equal(m1.RawPayload, []byte{128, 1, 0, 42, 255, 7}) {
		t.Errorf("message 1 %+v", m1)
	}
}

func TestTimeFormat(t *testing.T) {
	tm := time.Date(2024, 5, 23, 12, 14, 5, 999, time.FixedZone("CEST", 7200))
	if s := FormatTime(tm); s != "2024-05-23 10:14:05" {
		t.Errorf("FormatTime %q", s)
	}
	if got, err := ParseTime("2024-05-23 10:14:05"); err != nil || !got.Equal(time.Date(2024, 5, 23, 10, 14, 5, 0, time.UTC)) {
		t.Errorf("ParseTime %v %v", got, err)
	}
	for _, bad := range []string{"2024-05-23T10:14:05Z", "", "2024-05-23"} {
		if _, err := ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}

// FuzzParsePage: any bytes either fail with ErrPage or give a page whose
// messages all make a frame; a message's frame never loses its bytes.
func FuzzParsePage(f *testing.F) {
	for _, tc := range pageCases {
		f.Add([]byte(tc.in))
	}
	if d := testpeers.SharedDir(); d != "" {
		for _, n := range []string{"orbcomm_get_return_messages_page1.json", "orbcomm_get_return_messages_empty.json"} {
			if b, err := os.ReadFile(filepath.Join(d, "samples", n)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePage(b)
		if err != nil {
			if !errors.Is(err, ErrPage) {
				t.Fatalf("error not ErrPage: %v", err)
			}
			return
		}
		for i := range p.Messages {
			m := &p.Messages[i]
			fr := m.Frame("fuzz", time.Unix(0, 0))
			if fr.Meta[MetaPayloadFormat] == "" || fr.Kind != Kind {
				t.Fatalf("frame %+v", fr)
			}
			if m.Err != nil {
				if !bytes.Equal(fr.Payload, m.Raw) || fr.Meta[MetaParseError] == "" {
					t.Fatalf("unreadable message lost its JSON")
				}
				continue
			}
			if m.RawPayload != nil && !bytes.Equal(fr.Payload, m.RawPayload) {
				t.Fatalf("raw payload changed")
			}
			if m.RawPayload == nil && m.Payload != nil && !json.Valid(fr.Payload) {
				t.Fatalf("json payload not JSON: %q", fr.Payload)
			}
			if m.DedupKey() == "" {
				t.Fatal("empty dedup key")
			}
		}
	})
}
