// Package tlsconf builds TLS configurations from PEM files named in vigd's
// config: the server side of the listening adapters (tcp, directip,
// rockblock) and of the local metrics endpoint, and the client side of the
// forwarder. Every configuration it builds has TLS 1.2 as its minimum.
//
// Certificates and keys are read when the listener or client is built and
// read again when their files change (checked at each handshake, at most
// once a second), so a renewed certificate is picked up without a restart;
// a renewed pair that does not load keeps the old one in use and the error
// is reported through OnReloadError.
//
// It lives in internal/ rather than adapters/ because the forwarder uses it
// and must not import the adapters tree.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// MinVersion is the lowest TLS version vigd speaks, as server and client.
const MinVersion = tls.VersionTLS12

// Problem is one invalid setting: Field is relative to the tls block
// ("cert_file"), so callers can prefix it with where the block sits.
type Problem struct {
	Field string
	Msg   string
}

func (p Problem) Error() string { return p.Field + ": " + p.Msg }

// Server is the tls block of a listener.
type Server struct {
	// CertFile and KeyFile are the server certificate (chain) and its
	// key, PEM; both set turn TLS on.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, asks every client for a certificate signed
	// by one of these CAs and refuses the handshake without one
	// (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the listener serves TLS.
func (s Server) Enabled() bool { return s.CertFile != "" || s.KeyFile != "" }

// Check returns every problem with the settings (it does no I/O).
func (s Server) Check() []Problem {
	var out []Problem
	if (s.CertFile == "") != (s.KeyFile == "") {
		out = append(out, Problem{"cert_file", "cert_file and key_file go together"})
	}
	if s.ClientCAFile != "" && !s.Enabled() {
		out = append(out, Problem{"client_ca_file", "needs cert_file and key_file (client certificates are a TLS feature)"})
	}
	return out
}

// Options tune what Load builds.
type Options struct {
	// OnReloadError is called (from a handshake) when changed certificate
	// files do not load; the previous certificate stays in use. Nil:
	// ignored.
	OnReloadError func(error)
}

// Load reads the files and returns the server configuration; nil, nil
// when TLS is not enabled. Errors name the file, never its content.
func (s Server) Load(o Options) (*tls.Config, error) {
	if !s.Enabled() {
		return nil, nil
	}
	if p := s.Check(); len(p) > 0 {
		return nil, p[0]
	}
	kp, err := newKeyPair(s.CertFile, s.KeyFile, o.OnReloadError)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		MinVersion:     MinVersion,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get(), nil },
	}
	if s.ClientCAFile != "" {
		pool, err := loadPool(s.ClientCAFile, "client_ca_file")
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Client is the tls block of an outgoing connection.
type Client struct {
	// CAFile verifies the server with these CAs instead of the system
	// roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate, both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the server's certificate
	// (default: the host of the URL).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate. Callers log a
	// warning at every start when it is set.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Check returns every problem with the settings (it does no I/O).
func (c Client) Check() []Problem {
	var out []Problem
	if (c.CertFile == "") != (c.KeyFile == "") {
		out = append(out, Problem{"cert_file", "cert_file and key_file go together"})
	}
	return out
}

// Load reads the files and returns the client configuration (never nil:
// with nothing set it verifies against the system roots).
func (c Client) Load(o Options) (*tls.Config, error) {
	if p := c.Check(); len(p) > 0 {
		return nil, p[0]
	}
	tc := &tls.Config{
		MinVersion:         MinVersion,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // an explicit setting, warned at every start
	}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile, "ca_file")
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		kp, err := newKeyPair(c.CertFile, c.KeyFile, o.OnReloadError)
		if err != nil {
			return nil, err
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get(), nil }
	}
	return tc, nil
}

func loadPool(path, field string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: no PEM certificate in it", field, path)
	}
	return pool, nil
}

// recheck is how often a handshake may look at the files' modification
// times.
const recheck = time.Second

// keyPair is a certificate and key that follow their files.
type keyPair struct {
	certFile, keyFile string
	onErr             func(error)

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // modification times and sizes of both files
	checked time.Time
}

func newKeyPair(certFile, keyFile string, onErr func(error)) (*keyPair, error) {
	k := &keyPair{certFile: certFile, keyFile: keyFile, onErr: onErr}
	stamp, err := k.fileStamp()
	if err != nil {
		return nil, err
	}
	if err := k.load(stamp); err != nil {
		return nil, err
	}
	k.checked = time.Now()
	return k, nil
}

func (k *keyPair) fileStamp() (string, error) {
	var s string
	for _, p := range []struct{ field, path string }{{"cert_file", k.certFile}, {"key_file", k.keyFile}} {
		st, err := os.Stat(p.path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", p.field, err)
		}
		s += fmt.Sprintf("%d/%d;", st.ModTime().UnixNano(), st.Size())
	}
	return s, nil
}

func (k *keyPair) load(stamp string) error {
	c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		// tls errors about PEM blocks never quote key material.
		return fmt.Errorf("cert_file/key_file %s, %s: %w", k.certFile, k.keyFile, err)
	}
	k.cert, k.stamp = &c, stamp
	return nil
}

// get returns the current certificate, reloading it when its files
// changed.
func (k *keyPair) get() *tls.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Since(k.checked) < recheck {
		return k.cert
	}
	k.checked = time.Now()
	stamp, err := k.fileStamp()
	if err == nil && stamp == k.stamp {
		return k.cert
	}
	if err == nil {
		err = k.load(stamp)
	}
	if err != nil {
		// Do not report the same broken state at every handshake.
		if k.stamp != "broken:"+stamp {
			if k.onErr != nil {
				k.onErr(err)
			}
		}
		// Keep serving the old pair; remember the broken state.
		k.stamp = "broken:" + stamp
	}
	return k.cert
}

// Join turns problems into one error, each prefixed with prefix and a dot
// ("tls" gives "tls.cert_file: …"); nil when there are none.
func Join(prefix string, ps []Problem) error {
	var errs []error
	for _, p := range ps {
		if prefix != "" {
			p.Field = prefix + "." + p.Field
		}
		errs = append(errs, p)
	}
	return errors.Join(errs...)
}

var _ error = Problem{}
