package iridium

import (
	"errors"
	"net/url"
	"os"
	"testing"
	"time"
)

const rbText = "There are 10 types of people who understand binary"

func rbSample(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(samplePath(t, "rockblock_webhook.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkRBSample(t *testing.T, m *RockBLOCK) {
	t.Helper()
	if m.IMEI != "300434010000040" || m.MOMSN != 66 || m.Serial != "14331" || m.DeviceType != "ROCKBLOCK" {
		t.Errorf("fields %+v", m)
	}
	if got := m.TransmitTime.Format(time.RFC3339); got != "2023-09-05T04:33:24Z" {
		t.Errorf("transmit time %s", got)
	}
	if !m.HasLocation || m.Lat != 75.0001 || m.Lon != 154.1209 || m.CEPKm != 3.0 {
		t.Errorf("location %+v", m)
	}
	// samples/README.md says 51 bytes; the hex in the sample is 50 bytes and
	// decodes to exactly this text.
	if string(m.Data) != rbText || len(m.Data) != 50 {
		t.Errorf("data %q", m.Data)
	}
	want := map[string]string{
		"transport": "rockblock", "imei": "300434010000040", "momsn": "66", "transmit_time": "2023-09-05T04:33:24Z",
		"lat": "75.0001", "lon": "154.1209", "cep_km": "3.0", "serial": "14331", "device_type": "ROCKBLOCK",
	}
	got := m.Meta()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("meta %v", got)
	}
	if m.DedupKey() != "300434010000040/66/2023-09-05T04:33:24Z" {
		t.Errorf("dedup key %q", m.DedupKey())
	}
}

func TestRockBLOCKSampleJSON(t *testing.T) {
	f, err := ParseRockBLOCKFields("application/json; charset=utf-8", rbSample(t))
	if err != nil {
		t.Fatal(err)
	}
	if f[RBJWT] == "" || f[RBMOMSN] != "66" || f[RBCEP] != "3.0" {
		t.Errorf("fields %v", f)
	}
	m, err := RockBLOCKFromFields(f)
	if err != nil {
		t.Fatal(err)
	}
	checkRBSample(t, m)
}

// The same message as HTTP_POST form fields, and sniffed without a
// Content-Type.
func TestRockBLOCKSampleForm(t *testing.T) {
	jf, err := ParseRockBLOCKFields("application/json", rbSample(t))
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{}
	for k, v := range jf {
		form.Set(k, v)
	}
	for _, ct := range []string{"application/x-www-form-urlencoded", ""} {
		f, err := ParseRockBLOCKFields(ct, []byte(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		m, err := RockBLOCKFromFields(f)
		if err != nil {
			t.Fatal(err)
		}
		checkRBSample(t, m)
	}
	// Sniffed JSON.
	f, err := ParseRockBLOCKFields("text/plain", rbSample(t))
	if err != nil || f[RBIMEI] != "300434010000040" {
		t.Errorf("sniffed JSON: %v %v", f, err)
	}
}

func TestParseTransmitTime(t *testing.T) {
	for in, want := range map[string]string{
		"23-09-05 04:33:24":         "2023-09-05T04:33:24Z",
		"21-10-31 10:41:50":         "2021-10-31T10:41:50Z",
		"2019-01-31T14:00:13Z":      "2019-01-31T14:00:13Z",
		"2019-01-31T16:00:13+02:00": "2019-01-31T14:00:13Z",
		"2019-01-31 14:00:13":       "2019-01-31T14:00:13Z",
		" 2019-01-31T14:00:13 ":     "2019-01-31T14:00:13Z",
	} {
		got, err := ParseTransmitTime(in)
		if err != nil || got.Format(time.RFC3339) != want {
			t.Errorf("%q: %v %v, want %s", in, got, err, want)
		}
	}
	if _, err := ParseTransmitTime("05/09/2023"); !errors.Is(err, ErrRBField) {
		t.Errorf("err = %v", err)
	}
}

func TestRockBLOCKFieldErrors(t *testing.T) {
	good := map[string]string{RBIMEI: "300434010000040", RBMOMSN: "66", RBTransmitTime: "23-09-05 04:33:24", RBData: "6869"}
	tests := []struct {
		name  string
		key   string
		value string
	}{
		{"short imei", RBIMEI, "30043401000004"},
		{"letters in imei", RBIMEI, "30043401000004x"},
		{"momsn not a number", RBMOMSN, "sixty"},
		{"momsn too big", RBMOMSN, "65536"},
		{"no transmit time", RBTransmitTime, ""},
		{"odd hex", RBData, "686"},
		{"not hex", RBData, "zz"},
		{"latitude out of range", RBLatitude, "95"},
		{"negative cep", RBCEP, "-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := map[string]string{}
			for k, v := range good {
				f[k] = v
			}
			f[tc.key] = tc.value
			if tc.key == RBLatitude {
				f[RBLongitude] = "0"
			}
			if _, err := RockBLOCKFromFields(f); !errors.Is(err, ErrRBField) {
				t.Errorf("err = %v", err)
			}
		})
	}
	m, err := RockBLOCKFromFields(map[string]string{RBIMEI: "300434010000040", RBMOMSN: "1", RBTransmitTime: "23-09-05 04:33:24"})
	if err != nil || len(m.Data) != 0 || m.HasLocation {
		t.Errorf("no data: %+v %v", m, err)
	}
}

func TestRockBLOCKBodyErrors(t *testing.T) {
	for name, body := range map[string]string{
		"truncated JSON":  `{"imei":"3004`,
		"JSON array":      `[1,2]`,
		"two objects":     `{"a":1}{"b":2}`,
		"JSON null":       `null`,
		"bad form escape": `imei=%zz`,
	} {
		ct := "application/json"
		if name == "bad form escape" {
			ct = "application/x-www-form-urlencoded"
		}
		if _, err := ParseRockBLOCKFields(ct, []byte(body)); !errors.Is(err, ErrRBBody) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func FuzzParseRockBLOCK(f *testing.F) {
	f.Add("application/json", []byte(`{"imei":"300434010000040","momsn":66,"transmit_time":"23-09-05 04:33:24","data":"6869"}`))
	f.Add("application/x-www-form-urlencoded", []byte("imei=300434010000040&momsn=1&transmit_time=2019-01-31T14:00:13Z&data=&iridium_latitude=1&iridium_longitude=-2"))
	f.Add("", []byte(`{"momsn":"x"}`))
	if sharedAvailable() {
		f.Add("application/json", rbSample(f))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		fields, err := ParseRockBLOCKFields(ct, body)
		if err != nil {
			return
		}
		m, err := RockBLOCKFromFields(fields)
		if err != nil {
			return
		}
		if len(m.IMEI) != 15 || m.TransmitTime.IsZero() || m.TransmitTime.Location() != time.UTC {
			t.Fatalf("message %+v", m)
		}
		if meta := m.Meta(); meta[MetaIMEI] != m.IMEI || meta[MetaTransmitTime] == "" {
			t.Fatalf("meta %v", meta)
		}
	})
}
