package iridium

import (
	"strconv"
	"time"
)

// Meta keys set on every Iridium frame. Values are strings; numbers are
// decimal, times RFC 3339 UTC.
const (
	MetaIMEI          = "imei"
	MetaMOMSN         = "momsn"
	MetaMTMSN         = "mtmsn"
	MetaCDRRef        = "cdr_ref"        // DirectIP only
	MetaSessionStatus = "session_status" // numeric code, e.g. "0", "13"
	MetaSessionTime   = "session_time"   // RFC 3339
	MetaLat           = "lat"            // signed decimal degrees
	MetaLon           = "lon"            // signed decimal degrees
	MetaCEPKm         = "cep_km"         // CEP radius in km
	MetaTransport     = "transport"      // "directip", "sbdmail", "rockblock"
	// MetaParseError is set (with the reason) on a frame whose Payload is a
	// raw message that could not be parsed; see the package doc.
	MetaParseError = "parse_error"
	// MetaTrailingBytes counts bytes a DirectIP peer sent past the declared
	// message length (not parsed).
	MetaTrailingBytes = "trailing_bytes"
	// MetaTransmitTime is RockBLOCK's transmit_time, RFC 3339.
	MetaTransmitTime = "transmit_time"
	MetaSerial       = "serial"
	MetaDeviceType   = "device_type"
	// MetaSessionStatusText is the e-mail's status text ("Transfer OK").
	MetaSessionStatusText = "session_status_text"
	// MetaMessageSize is the e-mail's "Message Size (bytes)".
	MetaMessageSize = "message_size"
	// MetaJWT says whether a RockBLOCK post's JWT was verified: "valid",
	// "invalid" (accepted because a valid JWT is not required) or "missing".
	MetaJWT = "jwt"
)

// Meta renders the DirectIP MO header and location as frame metadata.
func (m *MO) Meta() map[string]string {
	meta := map[string]string{
		MetaTransport:     "directip",
		MetaIMEI:          m.Header.IMEI,
		MetaMOMSN:         strconv.Itoa(int(m.Header.MOMSN)),
		MetaMTMSN:         strconv.Itoa(int(m.Header.MTMSN)),
		MetaCDRRef:        strconv.FormatUint(uint64(m.Header.CDRRef), 10),
		MetaSessionStatus: strconv.Itoa(int(m.Header.SessionStatus)),
		MetaSessionTime:   m.Header.SessionTime.UTC().Format(time.RFC3339),
	}
	if l := m.Location; l != nil {
		meta[MetaLat] = strconv.FormatFloat(l.Lat, 'f', 6, 64)
		meta[MetaLon] = strconv.FormatFloat(l.Lon, 'f', 6, 64)
		meta[MetaCEPKm] = strconv.FormatUint(uint64(l.CEPKm), 10)
	}
	if m.Trailing > 0 {
		meta[MetaTrailingBytes] = strconv.Itoa(m.Trailing)
	}
	return meta
}
