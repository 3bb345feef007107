package forwarder

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/vigd/vigd/internal/tlsconf"
)

// Proxy settings (Config.Proxy).
const (
	// ProxyEnvironment takes the proxy from HTTPS_PROXY / HTTP_PROXY and
	// NO_PROXY (or their lower-case forms), as curl does.
	ProxyEnvironment = ""
	// ProxyNone connects directly, whatever the environment says.
	ProxyNone = "none"
)

// checkTransport returns the problems of the tls and proxy settings, each
// as "field: message".
func (c Config) checkTransport() []error {
	var errs []error
	for _, p := range c.TLS.Check() {
		errs = append(errs, fmt.Errorf("tls.%s: %s", p.Field, p.Msg))
	}
	if c.Proxy != ProxyEnvironment && c.Proxy != ProxyNone {
		if _, err := proxyURL(c.Proxy); err != nil {
			errs = append(errs, fmt.Errorf("proxy: %v", err))
		}
	}
	return errs
}

// proxyURL reads a proxy setting; errors never repeat a password given in
// the URL.
func proxyURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("must be \"\" (from the environment), \"none\" or a URL such as http://proxy:3128")
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, fmt.Errorf("scheme %q: must be http, https or socks5", u.Scheme)
	}
	return u, nil
}

// newTransport is the HTTP transport under the signer: the defaults of
// net/http (keep-alive, HTTP/2 over TLS, timeouts of dialing and
// handshakes), TLS 1.2 at least, the server verified against the system
// roots or tls.ca_file, an optional client certificate, and the proxy from
// the environment unless the config names one or none.
func newTransport(c Config) (*http.Transport, error) {
	tc, err := c.TLS.Load(tlsconf.Options{})
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = tc // ForceAttemptHTTP2 (from the defaults) keeps HTTP/2 with it
	switch c.Proxy {
	case ProxyEnvironment:
		t.Proxy = http.ProxyFromEnvironment
	case ProxyNone:
		t.Proxy = nil
	default:
		u, err := proxyURL(c.Proxy)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		t.Proxy = http.ProxyURL(u)
	}
	return t, nil
}

// redactedProxy is the proxy setting for logs, without a password.
func redactedProxy(s string) string {
	switch s {
	case ProxyEnvironment:
		return "environment"
	case ProxyNone:
		return ProxyNone
	}
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(invalid)"
}
