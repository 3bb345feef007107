package iridium

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// RockBLOCK webhook field names (lower case; "jwt" is sent as "JWT").
const (
	RBIMEI         = "imei"
	RBMOMSN        = "momsn"
	RBTransmitTime = "transmit_time"
	RBLatitude     = "iridium_latitude"
	RBLongitude    = "iridium_longitude"
	RBCEP          = "iridium_cep"
	RBData         = "data"
	RBSerial       = "serial"
	RBDeviceType   = "device_type"
	RBJWT          = "jwt"
)

// RockBLOCK parse errors.
var (
	ErrRBBody  = errors.New("unreadable RockBLOCK body")
	ErrRBField = errors.New("missing or malformed RockBLOCK field")
)

// RockBLOCK is one MO message posted by the RockBLOCK / Ground Control
// webhook (HTTP_POST form fields or HTTP_JSON).
type RockBLOCK struct {
	IMEI             string
	MOMSN            uint16
	TransmitTime     time.Time // UTC
	TransmitTimeText string
	// LatText, LonText, CEPText are the values as sent ("" when absent);
	// HasLocation is true when latitude and longitude both are present.
	Lat, Lon, CEPKm           float64
	LatText, LonText, CEPText string
	HasLocation               bool
	Serial                    string
	DeviceType                string
	Data                      []byte // the MO payload, hex-decoded
}

// ParseRockBLOCKFields reads a webhook body into a flat map of field name
// (lower case) to value as sent. JSON numbers keep their text ("3.0").
// contentType picks JSON or form decoding; when it is neither, the body is
// sniffed.
func ParseRockBLOCKFields(contentType string, body []byte) (map[string]string, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return parseRBJSON(body)
	case mt == "application/x-www-form-urlencoded":
		return parseRBForm(body)
	case len(bytes.TrimSpace(body)) > 0 && bytes.TrimSpace(body)[0] == '{':
		return parseRBJSON(body)
	default:
		return parseRBForm(body)
	}
}

func parseRBJSON(body []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: JSON: %v", ErrRBBody, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: JSON body is null", ErrRBBody)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: JSON: data after the object", ErrRBBody)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		key := strings.ToLower(k)
		switch v := v.(type) {
		case nil:
		case string:
			out[key] = v
		case json.Number:
			out[key] = v.String()
		case bool:
			out[key] = strconv.FormatBool(v)
		default:
			// Nested values are not part of the webhook; keep them as JSON
			// text so nothing is silently lost.
			b, _ := json.Marshal(v)
			out[key] = string(b)
		}
	}
	return out, nil
}

func parseRBForm(body []byte) (map[string]string, error) {
	q, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: form: %v", ErrRBBody, err)
	}
	out := make(map[string]string, len(q))
	for k, v := range q {
		if len(v) > 0 {
			out[strings.ToLower(k)] = v[0]
		}
	}
	return out, nil
}

// RockBLOCKFromFields checks and converts webhook fields. imei, momsn and
// transmit_time are required; data may be empty (no payload).
func RockBLOCKFromFields(f map[string]string) (*RockBLOCK, error) {
	m := &RockBLOCK{Serial: f[RBSerial], DeviceType: f[RBDeviceType]}
	imei := strings.TrimSpace(f[RBIMEI])
	if len(imei) != imeiLen || strings.Trim(imei, "0123456789") != "" {
		return nil, fmt.Errorf("%w: imei %q", ErrRBField, truncate(imei, 40))
	}
	m.IMEI = imei
	momsn, err := strconv.ParseUint(strings.TrimSpace(f[RBMOMSN]), 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%w: momsn %q", ErrRBField, truncate(f[RBMOMSN], 40))
	}
	m.MOMSN = uint16(momsn)
	m.TransmitTimeText = f[RBTransmitTime]
	if m.TransmitTime, err = ParseTransmitTime(m.TransmitTimeText); err != nil {
		return nil, err
	}
	latText, lonText := strings.TrimSpace(f[RBLatitude]), strings.TrimSpace(f[RBLongitude])
	if latText != "" || lonText != "" {
		lat, err1 := strconv.ParseFloat(latText, 64)
		lon, err2 := strconv.ParseFloat(lonText, 64)
		if err1 != nil || err2 != nil || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
			return nil, fmt.Errorf("%w: iridium_latitude %q iridium_longitude %q", ErrRBField, truncate(latText, 40), truncate(lonText, 40))
		}
		m.Lat, m.Lon, m.LatText, m.LonText, m.HasLocation = lat, lon, latText, lonText, true
	}
	if c := strings.TrimSpace(f[RBCEP]); c != "" {
		v, err := strconv.ParseFloat(c, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%w: iridium_cep %q", ErrRBField, truncate(c, 40))
		}
		m.CEPKm, m.CEPText = v, c
	}
	data := strings.TrimSpace(f[RBData])
	if m.Data, err = hex.DecodeString(data); err != nil {
		return nil, fmt.Errorf("%w: data is not hex: %v", ErrRBField, err)
	}
	return m, nil
}

// ParseTransmitTime accepts RockBLOCK's "YY-MM-DD HH:MM:SS" (UTC) and the
// ISO forms of the Rock7 Core push API ("2019-01-31T14:00:13Z").
func ParseTransmitTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, layout := range []string{"06-01-02 15:04:05", time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: transmit_time %q", ErrRBField, truncate(s, 40))
}

// DedupKey is the (imei, momsn, transmit_time) key RockBLOCK redeliveries
// share.
func (m *RockBLOCK) DedupKey() string {
	return m.IMEI + "/" + strconv.Itoa(int(m.MOMSN)) + "/" + m.TransmitTime.Format(time.RFC3339)
}

// Meta renders the message as frame metadata.
func (m *RockBLOCK) Meta() map[string]string {
	meta := map[string]string{
		MetaTransport:    "rockblock",
		MetaIMEI:         m.IMEI,
		MetaMOMSN:        strconv.Itoa(int(m.MOMSN)),
		MetaTransmitTime: m.TransmitTime.Format(time.RFC3339),
	}
	if m.HasLocation {
		meta[MetaLat], meta[MetaLon] = m.LatText, m.LonText
	}
	if m.CEPText != "" {
		meta[MetaCEPKm] = m.CEPText
	}
	if m.Serial != "" {
		meta[MetaSerial] = m.Serial
	}
	if m.DeviceType != "" {
		meta[MetaDeviceType] = m.DeviceType
	}
	return meta
}
