package signer

import (
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// ErrBodyNotReplayable is returned by Transport for a request with a body,
// no Content-MD5 header and no GetBody: hashing the body would consume it.
var ErrBodyNotReplayable = errors.New("signer: request body cannot be read twice (use bytes.Reader/bytes.Buffer/strings.Reader or set GetBody or Content-MD5)")

// Transport signs every request it passes to Base: it sets Date, Content-MD5
// (unless the caller already set it), Content-Type (application/json when a
// body has none) and Authorization. The request given to RoundTrip is not
// modified; a clone is sent.
type Transport struct {
	Base      http.RoundTripper // nil means http.DefaultTransport
	Config    Config
	ServiceID string
	Secret    Secret
	Now       func() time.Time // nil means time.Now
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	out := req.Clone(req.Context())
	md5v := req.Header.Get("Content-MD5")
	if hasBody && md5v == "" {
		var err error
		if md5v, err = replayMD5(req); err != nil {
			req.Body.Close()
			return nil, err
		}
	}
	ctype := req.Header.Get("Content-Type")
	if hasBody && ctype == "" && md5v != "" {
		ctype = "application/json"
	}
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	h, err := Sign(t.Config, req.Method, req.URL.RequestURI(), ctype, md5v, now(), t.ServiceID, t.Secret)
	if err != nil {
		if hasBody {
			req.Body.Close()
		}
		return nil, err
	}
	h.Apply(out.Header)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(out)
}

// replayMD5 hashes a second copy of the body from GetBody so the body that
// is sent stays unread.
func replayMD5(req *http.Request) (string, error) {
	if req.GetBody == nil {
		return "", ErrBodyNotReplayable
	}
	rc, err := req.GetBody()
	if err != nil {
		return "", fmt.Errorf("signer: get body: %w", err)
	}
	defer rc.Close()
	h := md5.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return "", fmt.Errorf("signer: read body: %w", err)
	}
	if n == 0 {
		return "", nil
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

var _ http.RoundTripper = (*Transport)(nil)
