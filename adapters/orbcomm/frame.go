package orbcomm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/vigd/vigd/adapters"
)

// Meta keys the adapter sets (decoders read them as frame.meta.<key>).
const (
	MetaMessageID      = "message_id"
	MetaSIN            = "sin"
	MetaMIN            = "min"
	MetaMobileID       = "mobile_id"
	MetaMessageUTC     = "message_utc"
	MetaReceiveUTC     = "receive_utc"
	MetaRegionName     = "region_name"
	MetaOTASize        = "ota_message_size"
	MetaPayloadName    = "payload_name"
	MetaPayloadFormat  = "payload_format"
	MetaParseError     = "parse_error"
	MetaFieldPrefix    = "field."
	PayloadFormatRaw   = "raw"     // Frame.Payload is RawPayload
	PayloadFormatJSON  = "json"    // Frame.Payload is the Payload object's JSON
	PayloadFormatWhole = "message" // Frame.Payload is the whole message's JSON (unreadable message)
)

// Frame turns a message into the frame the pipeline gets.
//
// The payload is RawPayload when the gateway sent it, else the JSON of the
// decoded Payload object (payload_format says which), so a binary decoder
// reads the bytes and a JSON decoder the fields. The decoded fields are in
// Meta as "field.<Name>" (the value string; the JSON of the element list
// for array and message fields) whichever payload the frame carries.
func (m *Message) Frame(adapter string, received time.Time) *adapters.Frame {
	f := &adapters.Frame{
		Adapter:  adapter,
		Kind:     Kind,
		Source:   m.MobileID,
		Offset:   -1,
		Received: received.UTC(),
		Identity: m.MobileID,
		Meta: map[string]string{
			MetaMobileID:   m.MobileID,
			MetaMessageUTC: m.MessageUTC,
			MetaReceiveUTC: m.ReceiveUTC,
			MetaRegionName: m.RegionName,
		},
	}
	if m.ID > 0 {
		f.Meta[MetaMessageID] = strconv.FormatInt(m.ID, 10)
	}
	if m.OTAMessageSize >= 0 {
		f.Meta[MetaOTASize] = strconv.FormatInt(m.OTAMessageSize, 10)
	}
	if m.Err != nil {
		// Unreadable in part: the whole object goes on, flagged, so the
		// dead letters keep it with the reason.
		f.Payload = append([]byte(nil), m.Raw...)
		f.Meta[MetaPayloadFormat] = PayloadFormatWhole
		f.Meta[MetaParseError] = m.Err.Error()
		if f.Source == "" {
			f.Source = "unknown"
		}
		return f
	}
	f.Meta[MetaSIN] = strconv.Itoa(m.SIN)
	if min := m.MIN(); min >= 0 {
		f.Meta[MetaMIN] = strconv.Itoa(min)
	}
	switch {
	case m.RawPayload != nil:
		f.Payload = m.RawPayload
		f.Meta[MetaPayloadFormat] = PayloadFormatRaw
	case m.Payload != nil:
		var b bytes.Buffer
		if err := json.Compact(&b, m.PayloadJSON); err != nil {
			b.Reset()
			b.Write(m.PayloadJSON)
		}
		f.Payload = b.Bytes()
		f.Meta[MetaPayloadFormat] = PayloadFormatJSON
	default:
		f.Payload = []byte{}
		f.Meta[MetaPayloadFormat] = PayloadFormatRaw
	}
	if p := m.Payload; p != nil {
		if p.Name != "" {
			f.Meta[MetaPayloadName] = p.Name
		}
		for _, fl := range p.Fields {
			if fl.Name == "" {
				continue
			}
			if fl.Value != nil {
				f.Meta[MetaFieldPrefix+fl.Name] = *fl.Value
				continue
			}
			var b bytes.Buffer
			if json.Compact(&b, fl.Raw) == nil {
				f.Meta[MetaFieldPrefix+fl.Name] = b.String()
			}
		}
	}
	return f
}

// DedupKey identifies a message across pages and restarts: its gateway
// ID, or (for a message without one) a hash of its JSON.
func (m *Message) DedupKey() string {
	if m.ID > 0 {
		return strconv.FormatInt(m.ID, 10)
	}
	sum := sha256.Sum256(m.Raw)
	return "raw/" + hex.EncodeToString(sum[:16])
}
