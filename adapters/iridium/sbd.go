package iridium

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Protocol constants of Iridium SBD DirectIP (SBD Developers Guide v3.0 §6.2,
// §7.2; lengths corrected as in ../shared/protocols.md §1).
const (
	ProtocolRevision = 1
	PreHeaderLen     = 3 // revision u8 + overall length u16
	IEHeaderLen      = 3 // IEI u8 + length u16

	IEIMOHeader       = 0x01
	IEIMOPayload      = 0x02
	IEIMOLocation     = 0x03
	IEIMOConfirmation = 0x05
	IEIMTHeader       = 0x41
	IEIMTPayload      = 0x42
	IEIMTConfirmation = 0x44
	IEIMTPriority     = 0x46

	moHeaderLen       = 28
	moLocationLen     = 11
	moConfirmationLen = 1
	mtHeaderLen       = 21
	mtConfirmationLen = 25
	mtPriorityLen     = 2
	imeiLen           = 15
)

// Parse errors; wrapped with the element and offset where they were found.
var (
	ErrShortPreHeader   = errors.New("shorter than the 3-byte pre-header")
	ErrRevision         = errors.New("unsupported protocol revision")
	ErrTruncated        = errors.New("message shorter than its declared length")
	ErrIEOverflow       = errors.New("information element runs past the end of the message")
	ErrIELength         = errors.New("information element has an impossible length")
	ErrDuplicateIE      = errors.New("information element appears twice")
	ErrNoHeader         = errors.New("no header element")
	ErrIMEI             = errors.New("IMEI is not 15 ASCII digits")
	ErrLocationReserved = errors.New("location flags have reserved bits set")
	ErrLocationRange    = errors.New("location out of range")
	ErrConfirmation     = errors.New("confirmation status is neither 0 nor 1")
)

// IE is one information element: its identifier, the offset of its contents
// within the whole message (pre-header included) and the contents.
type IE struct {
	ID     byte
	Offset int
	Data   []byte
}

// MOHeader is IE 0x01 of a mobile-originated message.
type MOHeader struct {
	CDRRef        uint32 // gateway call detail record reference ("auto ID")
	IMEI          string
	SessionStatus uint8 // see SessionStatusText
	MOMSN         uint16
	MTMSN         uint16
	SessionTime   time.Time // UTC
}

// Location is IE 0x03: the Iridium-estimated position of the modem.
type Location struct {
	Flags byte
	Lat   float64 // signed decimal degrees, south negative
	Lon   float64 // signed decimal degrees, west negative
	CEPKm uint32  // circular error probable radius
}

// MO is a parsed mobile-originated DirectIP message.
type MO struct {
	Header   MOHeader
	Location *Location // nil when the message has none
	// Payload is the contents of IE 0x02 (nil when absent: failed session
	// or empty mailbox check). HasPayload tells an absent IE from an empty
	// one; PayloadOffset is where the contents start in the message.
	Payload       []byte
	HasPayload    bool
	PayloadOffset int
	// Skipped lists the identifiers of unknown elements skipped by length.
	Skipped []byte
	// Trailing counts bytes after the declared length (not parsed).
	Trailing int
}

// MTHeader is IE 0x41 of a mobile-terminated message.
type MTHeader struct {
	ClientMsgID [4]byte
	IMEI        string
	Flags       uint16 // disposition flags
}

// MTConfirmation is IE 0x44, the gateway's answer to an MT message.
type MTConfirmation struct {
	ClientMsgID [4]byte
	IMEI        string
	AutoIDRef   uint32 // 0 on error
	// Status: 1..50 position in the MT queue, 0 ok without payload,
	// negative an error (SBD Developers Guide Table 7.1-12).
	Status int16
}

// MT is a parsed mobile-terminated DirectIP message: a request (Header,
// Payload, Priority) or the gateway's confirmation.
type MT struct {
	Header       *MTHeader
	Payload      []byte
	HasPayload   bool
	Priority     uint16 // 0 when absent
	Confirmation *MTConfirmation
	Skipped      []byte
	Trailing     int
}

// ReadMessage reads one DirectIP message (pre-header plus exactly the
// declared length) from r and returns all of its bytes. It returns io.EOF
// when r ends before the first byte. The caller sets read deadlines.
func ReadMessage(r io.Reader) ([]byte, error) {
	var pre [PreHeaderLen]byte
	n, err := io.ReadFull(r, pre[:])
	if err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w (got %d bytes)", ErrShortPreHeader, n)
		}
		return nil, err
	}
	if pre[0] != ProtocolRevision {
		return nil, fmt.Errorf("%w %d", ErrRevision, pre[0])
	}
	size := int(binary.BigEndian.Uint16(pre[1:]))
	msg := make([]byte, PreHeaderLen+size)
	copy(msg, pre[:])
	n, err = io.ReadFull(r, msg[PreHeaderLen:])
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w (declared %d, got %d)", ErrTruncated, size, n)
		}
		return nil, err
	}
	return msg, nil
}

// SplitIEs checks the pre-header and splits the declared length into
// information elements. trailing counts bytes of b past the declared length.
func SplitIEs(b []byte) (ies []IE, trailing int, err error) {
	if len(b) < PreHeaderLen {
		return nil, 0, fmt.Errorf("%w (got %d bytes)", ErrShortPreHeader, len(b))
	}
	if b[0] != ProtocolRevision {
		return nil, 0, fmt.Errorf("%w %d", ErrRevision, b[0])
	}
	size := int(binary.BigEndian.Uint16(b[1:3]))
	end := PreHeaderLen + size
	if len(b) < end {
		return nil, 0, fmt.Errorf("%w (declared %d, got %d)", ErrTruncated, size, len(b)-PreHeaderLen)
	}
	for off := PreHeaderLen; off < end; {
		if end-off < IEHeaderLen {
			return nil, 0, fmt.Errorf("%w: %d bytes left at offset %d, need a 3-byte element header", ErrIEOverflow, end-off, off)
		}
		id := b[off]
		n := int(binary.BigEndian.Uint16(b[off+1 : off+3]))
		start := off + IEHeaderLen
		if start+n > end {
			return nil, 0, fmt.Errorf("%w: IE 0x%02x at offset %d declares %d bytes, %d left", ErrIEOverflow, id, off, n, end-start)
		}
		ies = append(ies, IE{ID: id, Offset: start, Data: b[start : start+n]})
		off = start + n
	}
	return ies, len(b) - end, nil
}

// ParseMO parses a mobile-originated message. Elements may come in any
// order; unknown ones are skipped by their length (listed in Skipped).
func ParseMO(b []byte) (*MO, error) {
	ies, trailing, err := SplitIEs(b)
	if err != nil {
		return nil, err
	}
	m := &MO{Trailing: trailing}
	var haveHeader bool
	for _, ie := range ies {
		switch ie.ID {
		case IEIMOHeader:
			if haveHeader {
				return nil, ieErr(ErrDuplicateIE, ie)
			}
			h, err := parseMOHeader(ie)
			if err != nil {
				return nil, err
			}
			m.Header, haveHeader = h, true
		case IEIMOPayload:
			if m.HasPayload {
				return nil, ieErr(ErrDuplicateIE, ie)
			}
			m.Payload, m.HasPayload, m.PayloadOffset = ie.Data, true, ie.Offset
		case IEIMOLocation:
			if m.Location != nil {
				return nil, ieErr(ErrDuplicateIE, ie)
			}
			l, err := parseLocation(ie)
			if err != nil {
				return nil, err
			}
			m.Location = l
		default:
			m.Skipped = append(m.Skipped, ie.ID)
		}
	}
	if !haveHeader {
		return nil, fmt.Errorf("%w (IE 0x01)", ErrNoHeader)
	}
	return m, nil
}

func ieErr(err error, ie IE) error {
	return fmt.Errorf("%w: IE 0x%02x at offset %d (length %d)", err, ie.ID, ie.Offset-IEHeaderLen, len(ie.Data))
}

func parseMOHeader(ie IE) (MOHeader, error) {
	d := ie.Data
	if len(d) != moHeaderLen {
		return MOHeader{}, ieErr(ErrIELength, ie)
	}
	imei, err := parseIMEI(d[4:19], ie.Offset+4)
	if err != nil {
		return MOHeader{}, err
	}
	return MOHeader{
		CDRRef:        binary.BigEndian.Uint32(d[0:4]),
		IMEI:          imei,
		SessionStatus: d[19],
		MOMSN:         binary.BigEndian.Uint16(d[20:22]),
		MTMSN:         binary.BigEndian.Uint16(d[22:24]),
		SessionTime:   time.Unix(int64(binary.BigEndian.Uint32(d[24:28])), 0).UTC(),
	}, nil
}

func parseIMEI(d []byte, off int) (string, error) {
	for i, c := range d {
		if c < '0' || c > '9' {
			return "", fmt.Errorf("%w: byte 0x%02x at offset %d", ErrIMEI, c, off+i)
		}
	}
	return string(d), nil
}

// parseLocation decodes IE 0x03: flags, degrees and thousandths of a minute
// for latitude and longitude, CEP radius. The hemisphere sign applies to the
// whole value (degrees and minutes), never to the degrees alone.
func parseLocation(ie IE) (*Location, error) {
	d := ie.Data
	if len(d) != moLocationLen {
		return nil, ieErr(ErrIELength, ie)
	}
	flags := d[0]
	// Bits 7-4 are reserved, bits 3-2 the format code (only 0 is defined).
	if flags&0xFC != 0 {
		return nil, fmt.Errorf("%w: flags 0x%02x at offset %d", ErrLocationReserved, flags, ie.Offset)
	}
	latDeg, latMin := d[1], binary.BigEndian.Uint16(d[2:4])
	lonDeg, lonMin := d[4], binary.BigEndian.Uint16(d[5:7])
	if latDeg > 90 || lonDeg > 180 || latMin > 59999 || lonMin > 59999 {
		return nil, fmt.Errorf("%w: lat %d° %d, lon %d° %d (thousandths of a minute) at offset %d",
			ErrLocationRange, latDeg, latMin, lonDeg, lonMin, ie.Offset)
	}
	lat := float64(latDeg) + float64(latMin)/60000
	lon := float64(lonDeg) + float64(lonMin)/60000
	if lat > 90 || lon > 180 {
		return nil, fmt.Errorf("%w: lat %.6f, lon %.6f at offset %d", ErrLocationRange, lat, lon, ie.Offset)
	}
	if flags&0x02 != 0 { // NSI: south
		lat = -lat
	}
	if flags&0x01 != 0 { // EWI: west
		lon = -lon
	}
	return &Location{Flags: flags, Lat: lat, Lon: lon, CEPKm: binary.BigEndian.Uint32(d[7:11])}, nil
}

// ParseMT parses a mobile-terminated request or the gateway's MT
// confirmation.
func ParseMT(b []byte) (*MT, error) {
	ies, trailing, err := SplitIEs(b)
	if err != nil {
		return nil, err
	}
	m := &MT{Trailing: trailing}
	var havePriority bool
	for _, ie := range ies {
		d := ie.Data
		switch ie.ID {
		case IEIMTHeader:
			if m.Header != nil {
				return nil, ieErr(ErrDuplicateIE, ie)
			}
			if len(d) != mtHeaderLen {
				return nil, ieErr(ErrIELength, ie)
			}
			imei, err := parseIMEI(d[4:19], ie.Offset+4)
			if err != nil {
				return nil, err
			}
			h := &MTHeader{IMEI: imei, Flags: binary.BigEndian.Uint16(d[19:21])}
			copy(h.ClientMsgID[:], d[0:4])
			m.Header = h
		case IEIMTPayload:
			if m.HasPayload {
				return nil, ieErr(ErrDuplicateIE, ie)
			}
			m.Payload, m.HasPayload = d, true
		case IEIMTPriority:
			if havePriority {
				return nil, ieErr(ErrDuplicateIE, ie)
			}
			if len(d) != mtPriorityLen {
				return nil, ieErr(ErrIELength, ie)
			}
			m.Priority, havePriority = binary.BigEndian.Uint16(d), true
		case IEIMTConfirmation:
			if m.Confirmation != nil {
				return nil, ieErr(ErrDuplicateIE, ie)
			}
			if len(d) != mtConfirmationLen {
				return nil, ieErr(ErrIELength, ie)
			}
			imei, err := parseIMEI(d[4:19], ie.Offset+4)
			if err != nil {
				return nil, err
			}
			c := &MTConfirmation{
				IMEI:      imei,
				AutoIDRef: binary.BigEndian.Uint32(d[19:23]),
				Status:    int16(binary.BigEndian.Uint16(d[23:25])),
			}
			copy(c.ClientMsgID[:], d[0:4])
			m.Confirmation = c
		default:
			m.Skipped = append(m.Skipped, ie.ID)
		}
	}
	if m.Header == nil && m.Confirmation == nil {
		return nil, fmt.Errorf("%w (IE 0x41 or 0x44)", ErrNoHeader)
	}
	return m, nil
}

// EncodeMOConfirmation returns the 7-byte MO confirmation the server sends
// back when the modem's SSD is provisioned for it: 01 0004 05 0001 01 for
// success, last byte 00 for failure.
func EncodeMOConfirmation(ok bool) []byte {
	b := []byte{ProtocolRevision, 0x00, 0x04, IEIMOConfirmation, 0x00, 0x01, 0x00}
	if ok {
		b[6] = 0x01
	}
	return b
}

// ParseMOConfirmation parses an MO confirmation message (IE 0x05).
func ParseMOConfirmation(b []byte) (ok bool, err error) {
	ies, _, err := SplitIEs(b)
	if err != nil {
		return false, err
	}
	var found bool
	for _, ie := range ies {
		if ie.ID != IEIMOConfirmation {
			continue
		}
		if found {
			return false, ieErr(ErrDuplicateIE, ie)
		}
		if len(ie.Data) != moConfirmationLen {
			return false, ieErr(ErrIELength, ie)
		}
		switch ie.Data[0] {
		case 0:
		case 1:
			ok = true
		default:
			return false, ieErr(ErrConfirmation, ie)
		}
		found = true
	}
	if !found {
		return false, fmt.Errorf("%w (IE 0x05)", ErrNoHeader)
	}
	return ok, nil
}

// SessionStatusText names an MO session status code (SBD Developers Guide
// Table 6-5); unknown codes get "unknown".
func SessionStatusText(code int) string {
	switch code {
	case 0:
		return "success"
	case 1:
		return "mt message too large"
	case 2:
		return "location unacceptable quality"
	case 10:
		return "session timeout"
	case 12:
		return "mo message too large"
	case 13:
		return "rf link loss"
	case 14:
		return "imei protocol anomaly"
	case 15:
		return "imei prohibited"
	}
	return "unknown"
}
