// Package signer signs and verifies XCloud eventstore requests
// (contract: ../shared/contract/v2-eventstore.md, section Authentication).
//
// The signature is base64(HMAC-SHA256(secret, stringToSign)) where the string
// to sign is a list of request values joined by "\n". Which values, in which
// order, and how the date is written are not documented by the upstream, so
// they are a Config, not constants: a deployment can match the real server
// without a code change. Sign and StringToSign are pure functions of their
// arguments so that auth-vectors.json can test them byte for byte; Transport
// wraps them as an http.RoundTripper for the forwarder, and Verifier is the
// server side used by the simulator.
package signer

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Names of the values that can make up the string to sign.
const (
	LineMethod      = "method"
	LineContentMD5  = "content-md5"
	LineContentType = "content-type"
	LineDate        = "date"
	LinePath        = "path"
)

// DefaultLines is the contract's assumed string-to-sign layout.
var DefaultLines = []string{LineMethod, LineContentMD5, LineContentType, LineDate, LinePath}

// DefaultDateFormat writes the Date header as ISO 8601 UTC to the second
// ("2026-12-03T16:21:27Z"); times are always converted to UTC first.
const DefaultDateFormat = "2006-01-02T15:04:05Z07:00"

// Scheme is the word that starts the Authorization header.
const Scheme = "xCloud"

// Config is the string-to-sign layout. The zero value means the defaults.
type Config struct {
	// Lines are the values joined by "\n" (no trailing newline), each one of
	// method, content-md5, content-type, date, path. Empty means DefaultLines.
	Lines []string `yaml:"lines"`
	// DateFormat is a Go time layout for the Date header, rendered in UTC.
	// Empty means DefaultDateFormat.
	DateFormat string `yaml:"date_format"`
}

// ErrConfig is returned for an invalid Config.
var ErrConfig = errors.New("signer: invalid config")

// WithDefaults returns c with empty fields set to the defaults.
func (c Config) WithDefaults() Config {
	if len(c.Lines) == 0 {
		c.Lines = DefaultLines
	}
	if c.DateFormat == "" {
		c.DateFormat = DefaultDateFormat
	}
	return c
}

// Validate reports every unknown line name, a repeated one, and a date
// format that cannot carry a full time (it must change every second).
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	seen := map[string]bool{}
	for i, l := range c.Lines {
		switch l {
		case LineMethod, LineContentMD5, LineContentType, LineDate, LinePath:
		default:
			errs = append(errs, fmt.Errorf("%w: lines[%d]: %q: must be one of %s", ErrConfig, i, l,
				strings.Join(DefaultLines, ", ")))
			continue
		}
		if seen[l] {
			errs = append(errs, fmt.Errorf("%w: lines[%d]: %q: repeated", ErrConfig, i, l))
		}
		seen[l] = true
	}
	t1 := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if t1.Format(c.DateFormat) == t1.Add(time.Second).Format(c.DateFormat) {
		errs = append(errs, fmt.Errorf("%w: date_format: %q: does not show seconds", ErrConfig, c.DateFormat))
	}
	return errors.Join(errs...)
}

// FormatDate writes t as the Date header value.
func (c Config) FormatDate(t time.Time) string {
	return t.UTC().Format(c.WithDefaults().DateFormat)
}

// ParseDate reads a Date header value written with the configured format.
func (c Config) ParseDate(s string) (time.Time, error) {
	return time.Parse(c.WithDefaults().DateFormat, s)
}

// Request holds the header values that are signed, exactly as they are (or
// will be) on the wire.
type Request struct {
	Method      string
	Path        string // path with its query string as sent, e.g. "/a/b?x=1"
	ContentType string // "" when there is no body
	ContentMD5  string // base64 MD5 of the body as sent; "" when there is no body
	Date        string // the Date header value
}

// StringToSign joins the configured values of r by "\n".
func StringToSign(c Config, r Request) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	c = c.WithDefaults()
	parts := make([]string, len(c.Lines))
	for i, l := range c.Lines {
		switch l {
		case LineMethod:
			parts[i] = r.Method
		case LineContentMD5:
			parts[i] = r.ContentMD5
		case LineContentType:
			parts[i] = r.ContentType
		case LineDate:
			parts[i] = r.Date
		case LinePath:
			parts[i] = r.Path
		}
	}
	return strings.Join(parts, "\n"), nil
}

// Signature is base64(HMAC-SHA256(secret, stringToSign)); the secret is used
// as its UTF-8 bytes, never decoded.
func Signature(secret Secret, stringToSign string) string {
	m := hmac.New(sha256.New, secret.bytes())
	m.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Authorization builds the header value "xCloud <base64(serviceID)>:<signature>".
func Authorization(serviceID, signature string) string {
	return Scheme + " " + base64.StdEncoding.EncodeToString([]byte(serviceID)) + ":" + signature
}

// BodyMD5 is the Content-MD5 value of body (base64 of its MD5), or "" for
// an empty body.
func BodyMD5(body []byte) string {
	if len(body) == 0 {
		return ""
	}
	sum := md5.Sum(body)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Headers are the values Sign computes. Empty values are not sent.
type Headers struct {
	Date          string
	ContentType   string
	ContentMD5    string
	Authorization string
	StringToSign  string // for tests and debugging; never sent
}

// Apply sets the non-empty headers on h.
func (hs Headers) Apply(h http.Header) {
	for k, v := range map[string]string{
		"Date": hs.Date, "Content-Type": hs.ContentType,
		"Content-MD5": hs.ContentMD5, "Authorization": hs.Authorization,
	} {
		if v != "" {
			h.Set(k, v)
		}
	}
}

// Sign computes the headers of one request. contentMD5 is the base64 MD5 of
// the body bytes as sent (after gzip), "" without a body (see BodyMD5).
func Sign(c Config, method, pathWithQuery, contentType, contentMD5 string, date time.Time,
	serviceID string, secret Secret) (Headers, error) {
	r := Request{
		Method: method, Path: pathWithQuery, ContentType: contentType,
		ContentMD5: contentMD5, Date: c.FormatDate(date),
	}
	sts, err := StringToSign(c, r)
	if err != nil {
		return Headers{}, err
	}
	return Headers{
		Date: r.Date, ContentType: contentType, ContentMD5: contentMD5,
		Authorization: Authorization(serviceID, Signature(secret, sts)),
		StringToSign:  sts,
	}, nil
}

// Errors returned by Verify; each is wrapped with detail that never holds a
// secret or a signature.
var (
	ErrMalformed      = errors.New("malformed authentication header")
	ErrUnknownService = errors.New("unknown service id")
	ErrBadSignature   = errors.New("signature does not verify")
	ErrStaleDate      = errors.New("date too far from server clock")
)

// DefaultSkew is the largest accepted distance between Date and the clock.
const DefaultSkew = 15 * time.Minute

// Verifier checks signed requests on the server side.
type Verifier struct {
	Config Config
	// Lookup returns the secret of a service id.
	Lookup func(serviceID string) (Secret, bool)
	// Skew is the largest accepted |Date - Now()|; 0 means DefaultSkew and a
	// negative value turns the check off.
	Skew time.Duration
	// Now is the server clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks one request given its header values as received (r.Date and
// the others from the headers, r.Path the raw request URI). It returns the
// service id on success. Content-MD5 against the body is the caller's check.
func (v *Verifier) Verify(r Request, authorization string) (string, error) {
	rest, ok := strings.CutPrefix(authorization, Scheme+" ")
	if !ok {
		return "", fmt.Errorf("%w: authorization does not start with %q", ErrMalformed, Scheme+" ")
	}
	idB64, sig, ok := strings.Cut(rest, ":")
	if !ok || idB64 == "" || sig == "" {
		return "", fmt.Errorf("%w: authorization is not <service>:<signature>", ErrMalformed)
	}
	idBytes, err := base64.StdEncoding.Strict().DecodeString(idB64)
	if err != nil {
		return "", fmt.Errorf("%w: service id is not base64", ErrMalformed)
	}
	id := string(idBytes)
	if r.Date == "" {
		return id, fmt.Errorf("%w: no date header", ErrMalformed)
	}
	date, err := v.Config.ParseDate(r.Date)
	if err != nil {
		return id, fmt.Errorf("%w: date %q does not match the date format", ErrMalformed, r.Date)
	}
	if v.Lookup == nil {
		return id, fmt.Errorf("%w: %q", ErrUnknownService, id)
	}
	secret, ok := v.Lookup(id)
	if !ok {
		return id, fmt.Errorf("%w: %q", ErrUnknownService, id)
	}
	sts, err := StringToSign(v.Config, r)
	if err != nil {
		return id, err
	}
	want := Signature(secret, sts)
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		return id, fmt.Errorf("%w: service %q", ErrBadSignature, id)
	}
	skew := v.Skew
	if skew == 0 {
		skew = DefaultSkew
	}
	if skew > 0 {
		now := time.Now
		if v.Now != nil {
			now = v.Now
		}
		d := now().Sub(date)
		if d > skew || d < -skew {
			return id, fmt.Errorf("%w: date %s is %s from server time (allowed %s)", ErrStaleDate,
				r.Date, d.Round(time.Second), skew)
		}
	}
	return id, nil
}

// VerifyRequest is Verify on the headers of a received request.
func (v *Verifier) VerifyRequest(req *http.Request) (string, error) {
	path := req.RequestURI
	if path == "" {
		path = req.URL.RequestURI()
	}
	return v.Verify(Request{
		Method: req.Method, Path: path,
		ContentType: req.Header.Get("Content-Type"),
		ContentMD5:  req.Header.Get("Content-MD5"),
		Date:        req.Header.Get("Date"),
	}, req.Header.Get("Authorization"))
}

// DefaultConfig is the contract's assumed layout, with every field set.
func DefaultConfig() Config { return Config{}.WithDefaults() }
