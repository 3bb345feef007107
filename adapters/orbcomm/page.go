package orbcomm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TimeLayout is the gateway's time format in both directions: UTC, no "T",
// no zone ("2024-05-23 10:14:05").
const TimeLayout = "2006-01-02 15:04:05"

// FormatTime writes t in the gateway's format (UTC).
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// ParseTime reads the gateway's format as UTC.
func ParseTime(s string) (time.Time, error) {
	t, err := time.ParseInLocation(TimeLayout, strings.TrimSpace(s), time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q is not %q", s, "YYYY-MM-DD hh:mm:ss")
	}
	return t, nil
}

// Page is one get_return_messages answer.
type Page struct {
	// ErrorID is 0 on success; any other value is the gateway's error code.
	ErrorID int64
	// More says another call (with the next mark) has more messages.
	More bool
	// NextStartUTC is the start_utc of the next call; "" when none.
	NextStartUTC string
	// NextStartID is the from_id of the next call; -1 (or 0) when none.
	NextStartID int64
	// Messages are the page's messages in order; a null list is empty.
	Messages []Message
}

// Message is one mobile-originated (return) message.
type Message struct {
	ID         int64
	MessageUTC string
	ReceiveUTC string
	SIN        int
	MobileID   string
	RegionName string
	// OTAMessageSize is the size over the air in bytes; -1 when absent.
	OTAMessageSize int64
	// RawPayload is the message's bytes (SIN, MIN, data); nil when the
	// gateway sent none.
	RawPayload []byte
	// Payload is the gateway's decoding (when it has a message definition);
	// nil when absent.
	Payload *Payload
	// PayloadJSON is the Payload object exactly as received.
	PayloadJSON json.RawMessage
	// Raw is the whole message object as received.
	Raw json.RawMessage
	// Err says why the message could not be read in full (a RawPayload
	// value that is not a byte, a missing ID); the rest of the page is
	// still usable. Such a message is handed on with the raw JSON as its
	// payload so that it ends in the dead letters instead of vanishing.
	Err error
}

// Payload is the gateway's decoded form of a message ("common message
// format"). Field values are always strings.
type Payload struct {
	Name      string
	SIN       int
	MIN       *int
	IsForward bool
	Fields    []Field
}

// Field is one decoded field. Value is set for the scalar types (boolean,
// unsignedint, signedint, string, enum, data); array and message fields
// carry their content in Raw.
type Field struct {
	Name  string
	Type  string
	Value *string
	Raw   json.RawMessage
}

// wire shapes, decoded leniently and checked by hand so that one odd
// message does not make the whole page unreadable.
type wirePage struct {
	ErrorID      *int64            `json:"ErrorID"`
	More         bool              `json:"More"`
	NextStartUTC *string           `json:"NextStartUTC"`
	NextStartID  *int64            `json:"NextStartID"`
	Messages     []json.RawMessage `json:"Messages"`
}

type wireMessage struct {
	ID             *int64          `json:"ID"`
	MessageUTC     string          `json:"MessageUTC"`
	ReceiveUTC     string          `json:"ReceiveUTC"`
	SIN            *int            `json:"SIN"`
	MobileID       string          `json:"MobileID"`
	RegionName     string          `json:"RegionName"`
	OTAMessageSize *int64          `json:"OTAMessageSize"`
	RawPayload     []json.Number   `json:"RawPayload"`
	Payload        json.RawMessage `json:"Payload"`
}

type wirePayload struct {
	Name      string            `json:"Name"`
	SIN       int               `json:"SIN"`
	MIN       *int              `json:"MIN"`
	IsForward bool              `json:"IsForward"`
	Fields    []json.RawMessage `json:"Fields"`
}

type wireField struct {
	Name  string          `json:"Name"`
	Type  string          `json:"Type"`
	Value json.RawMessage `json:"Value"`
}

// ErrPage marks an answer that is not a get_return_messages page.
var ErrPage = errors.New("not a get_return_messages page")

// ParsePage reads one get_return_messages answer. It fails only when the
// answer as a whole is unusable (not JSON, no ErrorID); a message that is
// wrong in itself is returned with Err set.
func ParsePage(b []byte) (*Page, error) {
	var w wirePage
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPage, err)
	}
	if w.ErrorID == nil {
		return nil, fmt.Errorf("%w: no ErrorID", ErrPage)
	}
	p := &Page{ErrorID: *w.ErrorID, More: w.More, NextStartID: -1}
	if w.NextStartUTC != nil {
		p.NextStartUTC = strings.TrimSpace(*w.NextStartUTC)
	}
	if w.NextStartID != nil {
		p.NextStartID = *w.NextStartID
	}
	for i, raw := range w.Messages {
		m := parseMessage(raw)
		if m.Err != nil {
			m.Err = fmt.Errorf("message %d: %w", i, m.Err)
		}
		p.Messages = append(p.Messages, m)
	}
	return p, nil
}

func parseMessage(raw json.RawMessage) Message {
	m := Message{Raw: raw, OTAMessageSize: -1}
	var w wireMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		m.Err = fmt.Errorf("not a message object: %v", err)
		return m
	}
	m.MessageUTC, m.ReceiveUTC = w.MessageUTC, w.ReceiveUTC
	m.MobileID, m.RegionName = strings.TrimSpace(w.MobileID), w.RegionName
	if w.OTAMessageSize != nil {
		m.OTAMessageSize = *w.OTAMessageSize
	}
	var errs []string
	if w.ID == nil || *w.ID <= 0 {
		errs = append(errs, "no positive ID")
	} else {
		m.ID = *w.ID
	}
	if w.SIN == nil {
		errs = append(errs, "no SIN")
	} else {
		m.SIN = *w.SIN
		if m.SIN < 0 || m.SIN > 255 {
			errs = append(errs, fmt.Sprintf("SIN %d is not a byte", m.SIN))
		}
	}
	if w.RawPayload != nil {
		m.RawPayload = make([]byte, 0, len(w.RawPayload))
		for i, n := range w.RawPayload {
			v, err := strconv.ParseUint(string(n), 10, 8)
			if err != nil {
				errs = append(errs, fmt.Sprintf("RawPayload[%d] = %s is not a byte", i, n))
				m.RawPayload = nil
				break
			}
			m.RawPayload = append(m.RawPayload, byte(v))
		}
	}
	if len(w.Payload) > 0 && !bytes.Equal(bytes.TrimSpace(w.Payload), []byte("null")) {
		p, err := parsePayload(w.Payload)
		if err != nil {
			errs = append(errs, "Payload: "+err.Error())
		} else {
			m.Payload, m.PayloadJSON = p, w.Payload
		}
	}
	if len(errs) > 0 {
		m.Err = errors.New(strings.Join(errs, "; "))
	}
	return m
}

func parsePayload(raw json.RawMessage) (*Payload, error) {
	var w wirePayload
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, err
	}
	p := &Payload{Name: w.Name, SIN: w.SIN, MIN: w.MIN, IsForward: w.IsForward}
	for i, fr := range w.Fields {
		var wf wireField
		if err := json.Unmarshal(fr, &wf); err != nil {
			return nil, fmt.Errorf("field %d of Payload.Fields: %v", i, err)
		}
		f := Field{Name: wf.Name, Type: wf.Type, Raw: fr}
		if len(wf.Value) > 0 {
			var s string
			if err := json.Unmarshal(wf.Value, &s); err == nil {
				f.Value = &s
			} else {
				// The documented shape is a string; keep a number or
				// boolean as its JSON text rather than refusing it.
				t := string(bytes.TrimSpace(wf.Value))
				f.Value = &t
			}
		}
		p.Fields = append(p.Fields, f)
	}
	return p, nil
}

// MIN is the message's MIN: the decoded Payload's, else the second raw
// byte; -1 when neither says.
func (m *Message) MIN() int {
	if m.Payload != nil && m.Payload.MIN != nil {
		return *m.Payload.MIN
	}
	if len(m.RawPayload) >= 2 {
		return int(m.RawPayload[1])
	}
	return -1
}
