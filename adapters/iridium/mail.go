package iridium

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// SubjectPrefix starts the subject of every SBD MO e-mail; the IMEI follows.
const SubjectPrefix = "SBD Msg From Unit:"

// E-mail parse errors.
var (
	ErrNotSBDMail   = errors.New("subject is not \"SBD Msg From Unit: <IMEI>\"")
	ErrMailField    = errors.New("missing or malformed body field")
	ErrMailSize     = errors.New("attachment size differs from Message Size")
	ErrMailMIME     = errors.New("malformed MIME structure")
	ErrMailEncoding = errors.New("attachment cannot be decoded")
)

// maxMIMEDepth bounds nested multiparts (a crafted mail must not recurse
// without end).
const maxMIMEDepth = 8

// SBDMail is a parsed Iridium SBD MO e-mail (SBD Developers Guide §6.1).
type SBDMail struct {
	IMEI              string // from the subject
	MOMSN             uint16
	MTMSN             uint16
	HasMTMSN          bool
	SessionTime       time.Time // UTC
	SessionStatus     int
	SessionStatusText string // as written, e.g. "Transfer OK"
	MessageSize       int    // -1 when the body has no "Message Size" line
	// Location is nil when the mail has no "Unit Location" line (geo-data
	// off). Lat/Lon/CEP keep the text as written too.
	Location *MailLocation
	// Attachment is the decoded .sbd part (the MO payload); HasAttachment
	// tells a missing part from an empty one.
	Attachment     []byte
	HasAttachment  bool
	AttachmentName string
}

// MailLocation is the optional geo-data of an SBD e-mail.
type MailLocation struct {
	Lat, Lon         float64
	LatText, LonText string
	CEPKm            float64
	CEPText          string // "" when there is no CEPradius line
}

var (
	reSubject  = regexp.MustCompile(`(?i)^\s*SBD\s+Msg\s+From\s+Unit\s*:\s*(\d{15})\s*$`)
	reMOMSN    = regexp.MustCompile(`(?im)^[ \t]*MOMSN[ \t]*:[ \t]*(\d+)[ \t]*$`)
	reMTMSN    = regexp.MustCompile(`(?im)^[ \t]*MTMSN[ \t]*:[ \t]*(\d+)[ \t]*$`)
	reTime     = regexp.MustCompile(`(?im)^[ \t]*Time[ \t]+of[ \t]+Session[ \t]*(?:\([ \t]*UTC[ \t]*\))?[ \t]*:[ \t]*(.+?)[ \t]*$`)
	reStatus   = regexp.MustCompile(`(?im)^[ \t]*Session[ \t]+Status[ \t]*:[ \t]*(\d+)(?:[ \t]*-[ \t]*(.*?))?[ \t]*$`)
	reSize     = regexp.MustCompile(`(?im)^[ \t]*Message[ \t]+Size[ \t]*(?:\([ \t]*bytes[ \t]*\))?[ \t]*:[ \t]*(\d+)[ \t]*$`)
	reLocation = regexp.MustCompile(`(?im)^[ \t]*Unit[ \t]+Location[ \t]*:[ \t]*Lat[ \t]*=[ \t]*([-+]?\d+(?:\.\d+)?)[ \t]*,?[ \t]*Long[ \t]*=[ \t]*([-+]?\d+(?:\.\d+)?)[ \t]*$`)
	reCEP      = regexp.MustCompile(`(?im)^[ \t]*CEP[ \t]*radius[ \t]*=[ \t]*(\d+(?:\.\d+)?)[ \t]*$`)
	reSpaces   = regexp.MustCompile(`\s+`)
)

// ParseSubject returns the IMEI of an SBD MO e-mail subject.
func ParseSubject(subject string) (string, error) {
	m := reSubject.FindStringSubmatch(decodeHeader(subject))
	if m == nil {
		return "", fmt.Errorf("%w: %q", ErrNotSBDMail, truncate(subject, 80))
	}
	return m[1], nil
}

// ParseMail parses a whole RFC 5322 message: the IMEI from the subject, the
// body fields (tolerant of case, spacing, CRLF, blank lines and missing
// location lines) and the .sbd attachment, chosen by file name (any case)
// and never by MIME type. A mail without attachment is valid (a session
// without payload).
func ParseMail(raw []byte) (*SBDMail, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMailMIME, err)
	}
	imei, err := ParseSubject(msg.Header.Get("Subject"))
	if err != nil {
		return nil, err
	}
	w := &mimeWalk{}
	if err := w.walk(mimeHeader(msg.Header), msg.Body, 0); err != nil {
		return nil, err
	}
	if w.text == nil {
		return nil, fmt.Errorf("%w: no text body", ErrMailField)
	}
	m, err := ParseMailBody(string(w.text))
	if err != nil {
		return nil, err
	}
	m.IMEI = imei
	if w.attName != "" {
		m.Attachment, m.HasAttachment, m.AttachmentName = w.att, true, w.attName
	}
	switch {
	case m.MessageSize >= 0 && m.HasAttachment && len(m.Attachment) != m.MessageSize:
		return nil, fmt.Errorf("%w: attachment %q has %d bytes, Message Size says %d", ErrMailSize, m.AttachmentName, len(m.Attachment), m.MessageSize)
	case m.MessageSize > 0 && !m.HasAttachment:
		return nil, fmt.Errorf("%w: no .sbd attachment, Message Size says %d", ErrMailSize, m.MessageSize)
	}
	return m, nil
}

// ParseMailBody parses the text fields of an SBD e-mail body. MOMSN, Time of
// Session and Session Status are required; the rest is optional.
func ParseMailBody(body string) (*SBDMail, error) {
	body = strings.ReplaceAll(body, "\r", "")
	m := &SBDMail{MessageSize: -1}
	s := reMOMSN.FindStringSubmatch(body)
	if s == nil {
		return nil, fmt.Errorf("%w: MOMSN", ErrMailField)
	}
	momsn, err := strconv.ParseUint(s[1], 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%w: MOMSN %q", ErrMailField, s[1])
	}
	m.MOMSN = uint16(momsn)
	if s := reMTMSN.FindStringSubmatch(body); s != nil {
		v, err := strconv.ParseUint(s[1], 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%w: MTMSN %q", ErrMailField, s[1])
		}
		m.MTMSN, m.HasMTMSN = uint16(v), true
	}
	s = reTime.FindStringSubmatch(body)
	if s == nil {
		return nil, fmt.Errorf("%w: Time of Session", ErrMailField)
	}
	if m.SessionTime, err = ParseSessionTime(s[1]); err != nil {
		return nil, err
	}
	s = reStatus.FindStringSubmatch(body)
	if s == nil {
		return nil, fmt.Errorf("%w: Session Status", ErrMailField)
	}
	st, err := strconv.ParseUint(s[1], 10, 8)
	if err != nil {
		return nil, fmt.Errorf("%w: Session Status %q", ErrMailField, s[1])
	}
	m.SessionStatus, m.SessionStatusText = int(st), s[2]
	if s := reSize.FindStringSubmatch(body); s != nil {
		v, err := strconv.ParseUint(s[1], 10, 31)
		if err != nil {
			return nil, fmt.Errorf("%w: Message Size %q", ErrMailField, s[1])
		}
		m.MessageSize = int(v)
	}
	if s := reLocation.FindStringSubmatch(body); s != nil {
		lat, err1 := strconv.ParseFloat(s[1], 64)
		lon, err2 := strconv.ParseFloat(s[2], 64)
		if err1 != nil || err2 != nil || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
			return nil, fmt.Errorf("%w: Unit Location Lat %q Long %q", ErrMailField, s[1], s[2])
		}
		l := &MailLocation{Lat: lat, Lon: lon, LatText: s[1], LonText: s[2]}
		if c := reCEP.FindStringSubmatch(body); c != nil {
			v, err := strconv.ParseFloat(c[1], 64)
			if err != nil {
				return nil, fmt.Errorf("%w: CEPradius %q", ErrMailField, c[1])
			}
			l.CEPKm, l.CEPText = v, c[1]
		}
		m.Location = l
	}
	return m, nil
}

// ParseSessionTime parses the e-mail's "Ddd Mmm dd hh:mm:ss yyyy" (UTC),
// accepting a day of "8", " 8" or "08" and names in any case.
func ParseSessionTime(s string) (time.Time, error) {
	norm := reSpaces.ReplaceAllString(strings.TrimSpace(s), " ")
	for _, layout := range []string{"Mon Jan 2 15:04:05 2006", "Mon Jan 02 15:04:05 2006", "Mon, Jan 2 15:04:05 2006"} {
		if t, err := time.Parse(layout, norm); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: Time of Session %q", ErrMailField, truncate(s, 60))
}

// Meta renders the mail's fields as frame metadata.
func (m *SBDMail) Meta() map[string]string {
	meta := map[string]string{
		MetaTransport:     "sbdmail",
		MetaIMEI:          m.IMEI,
		MetaMOMSN:         strconv.Itoa(int(m.MOMSN)),
		MetaSessionStatus: strconv.Itoa(m.SessionStatus),
		MetaSessionTime:   m.SessionTime.UTC().Format(time.RFC3339),
	}
	if m.HasMTMSN {
		meta[MetaMTMSN] = strconv.Itoa(int(m.MTMSN))
	}
	if m.SessionStatusText != "" {
		meta[MetaSessionStatusText] = m.SessionStatusText
	}
	if m.MessageSize >= 0 {
		meta[MetaMessageSize] = strconv.Itoa(m.MessageSize)
	}
	if l := m.Location; l != nil {
		meta[MetaLat] = l.LatText
		meta[MetaLon] = l.LonText
		if l.CEPText != "" {
			meta[MetaCEPKm] = l.CEPText
		}
	}
	return meta
}

// mimeWalk collects the first text/plain part and the first .sbd part.
type mimeWalk struct {
	text    []byte
	att     []byte
	attName string
}

type mimeHeader = map[string][]string

func headerGet(h mimeHeader, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (w *mimeWalk) walk(h mimeHeader, body io.Reader, depth int) error {
	if depth > maxMIMEDepth {
		return fmt.Errorf("%w: multiparts nested deeper than %d", ErrMailMIME, maxMIMEDepth)
	}
	ctype := headerGet(h, "Content-Type")
	mediaType, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		// A missing or broken Content-Type is plain text (RFC 2045 §5.2),
		// unless the part is named .sbd.
		mediaType, params = "text/plain", map[string]string{}
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		boundary := params["boundary"]
		if boundary == "" {
			return fmt.Errorf("%w: %s without boundary", ErrMailMIME, mediaType)
		}
		mr := multipart.NewReader(body, boundary)
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: %v", ErrMailMIME, err)
			}
			if err := w.walk(mimeHeader(p.Header), p, depth+1); err != nil {
				return err
			}
		}
	}
	name := partFileName(h, params)
	if name != "" && strings.HasSuffix(strings.ToLower(strings.TrimSpace(name)), ".sbd") {
		if w.attName != "" {
			return nil // the first .sbd part wins; Iridium sends one
		}
		data, err := decodeTransfer(headerGet(h, "Content-Transfer-Encoding"), body)
		if err != nil {
			return fmt.Errorf("%w: %q: %v", ErrMailEncoding, name, err)
		}
		w.att, w.attName = data, name
		return nil
	}
	if w.text == nil && mediaType == "text/plain" && name == "" {
		data, err := decodeTransfer(headerGet(h, "Content-Transfer-Encoding"), body)
		if err != nil {
			return fmt.Errorf("%w: text body: %v", ErrMailMIME, err)
		}
		w.text = data
	}
	return nil
}

// partFileName takes the file name from Content-Disposition, else from the
// Content-Type name parameter.
func partFileName(h mimeHeader, ctParams map[string]string) string {
	if _, p, err := mime.ParseMediaType(headerGet(h, "Content-Disposition")); err == nil {
		if n := p["filename"]; n != "" {
			return decodeHeader(n)
		}
	}
	return decodeHeader(ctParams["name"])
}

func decodeTransfer(cte string, r io.Reader) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		raw, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		// Line breaks and stray whitespace are legal in base64 bodies.
		clean := bytes.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, raw)
		// Sized for the unpadded retry below too (RawStdEncoding needs
		// more room for a short tail: "000" is 0 padded but 2 raw bytes).
		out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil {
			// Some encoders drop the padding.
			n2, err2 := base64.RawStdEncoding.Decode(out, bytes.TrimRight(clean, "="))
			if err2 != nil {
				return nil, err
			}
			n = n2
		}
		return out[:n], nil
	case "quoted-printable":
		return io.ReadAll(quotedprintable.NewReader(r))
	default: // 7bit, 8bit, binary or none
		return io.ReadAll(bufio.NewReader(r))
	}
}

func decodeHeader(s string) string {
	d, err := new(mime.WordDecoder).DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
