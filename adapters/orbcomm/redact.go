package orbcomm

import (
	"errors"
	"net/url"
	"strings"
)

// redacted replaces a credential in logs and errors.
const redacted = "[redacted]"

// redactor removes the mailbox credentials from text. The credentials
// travel in the query string, and net/http's *url.Error prints the whole
// URL, so every error from a call passes through here before it is
// returned or logged.
type redactor struct {
	secrets []string // longest first, so a secret inside another goes too
}

func newRedactor(secrets ...string) *redactor {
	seen := map[string]bool{}
	r := &redactor{}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		// Each way the value can appear: as is, query-escaped (with "+" or
		// "%20" for a space) and path-escaped.
		for _, v := range []string{s, url.QueryEscape(s), strings.ReplaceAll(url.QueryEscape(s), "+", "%20"), url.PathEscape(s)} {
			if !seen[v] {
				seen[v] = true
				r.secrets = append(r.secrets, v)
			}
		}
	}
	// Longest first.
	for i := 1; i < len(r.secrets); i++ {
		for j := i; j > 0 && len(r.secrets[j]) > len(r.secrets[j-1]); j-- {
			r.secrets[j], r.secrets[j-1] = r.secrets[j-1], r.secrets[j]
		}
	}
	return r
}

// String redacts s.
func (r *redactor) String(s string) string {
	for _, v := range r.secrets {
		s = strings.ReplaceAll(s, v, redacted)
	}
	return s
}

// Error returns err with the credentials removed from its text. A
// *url.Error (which holds the URL with its query) is replaced by a copy
// that names only safeURL, so that errors.As and errors.Is still work
// (timeouts, cancellation) without the credentials being reachable.
func (r *redactor) Error(err error, safeURL string) error {
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = &url.Error{Op: ue.Op, URL: safeURL, Err: ue.Err}
	}
	return &redactedError{msg: r.String(err.Error()), cause: err}
}

type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }
