package httpingest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/signer"
)

const hmacSecret = "hm4c-s3cret-of-vig-tps"

func startHMAC(t *testing.T) *harness {
	t.Helper()
	file := writeFile(t, "secret", hmacSecret+"\n")
	return start(t, func(c *Config) {
		c.Auth = AuthConfig{Mode: AuthHMAC, Services: map[string]string{"vig-tps": file}, MaxSkew: 15 * time.Minute}
		c.AllowedDecoders = []string{"firmware-update"}
	})
}

// signed is a client that signs like the forwarder does.
func (h *harness) signed(id, secret string, now func() time.Time) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &signer.Transport{
		Base: h.client.Transport, ServiceID: id, Secret: signer.NewSecret(secret), Now: now,
	}}
}

func (h *harness) doWith(c *http.Client, req *http.Request) <-chan result {
	saved := h.client
	hc := *h
	hc.client = c
	defer func() { h.client = saved }()
	return hc.do(req)
}

// A request signed with the upstream contract's scheme (forwarder/signer)
// is accepted; the service id is the auth_name.
func TestHMACSignedAccepted(t *testing.T) {
	h := startHMAC(t)
	body := []byte(`{"deviceId":"FST300234030000001","state":"APPLIED"}`)
	req := h.post(t, "/FST300234030000001?decoder=firmware-update", "application/json", "", body)
	res := h.doWith(h.signed("vig-tps", hmacSecret, nil), req)
	e := h.next(t)
	if e.frame.Meta[MetaAuthName] != "vig-tps" || e.frame.Decoder != "firmware-update" || !bytes.Equal(e.frame.Payload, body) {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- nil
	if r := wait(t, res); r.code != http.StatusAccepted {
		t.Errorf("%d %s", r.code, r.body)
	}
}

func TestHMACRefused(t *testing.T) {
	h := startHMAC(t)
	body := []byte(`{"state":"FAILED"}`)
	cases := []struct {
		name   string
		client *http.Client
		prep   func(*http.Request)
		code   int
	}{
		{"wrong secret", h.signed("vig-tps", "not-the-secret", nil), nil, 401},
		{"unknown service", h.signed("other", hmacSecret, nil), nil, 401},
		{"stale date", h.signed("vig-tps", hmacSecret, func() time.Time { return time.Now().Add(-time.Hour) }), nil, 401},
		{"unsigned", h.client, nil, 401},
		{"bearer token", h.client, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tokenA) }, 401},
		// The signature covers Content-MD5; a body that does not match it
		// was changed on the way.
		{"body changed", h.signed("vig-tps", hmacSecret, nil), func(r *http.Request) { r.Header.Set("Content-MD5", signer.BodyMD5([]byte("other body"))) }, 400},
		{"signed path changed", h.signed("vig-tps", hmacSecret, nil), func(r *http.Request) {
			// Transport signs the request's URL; send it elsewhere after.
			r.URL.Path = "/ingest/FST999"
		}, 0},
	}
	for _, tc := range cases {
		req := h.post(t, "/FST300234030000001", "application/json", "", body)
		if tc.prep != nil {
			tc.prep(req)
		}
		if tc.code == 0 {
			continue // covered below with a hand-made request
		}
		r := wait(t, h.doWith(tc.client, req))
		if r.code != tc.code {
			t.Errorf("%s: %d %s", tc.name, r.code, r.body)
		}
		if tc.code == 401 && r.header.Get("WWW-Authenticate") != signer.Scheme {
			t.Errorf("%s: challenge %q", tc.name, r.header.Get("WWW-Authenticate"))
		}
	}

	// A signature over another path, and a signature without Content-MD5
	// (so the body is not covered): hand-made requests.
	now := time.Now()
	hs, err := signer.Sign(signer.Config{}, "POST", "/ingest/FST999", "application/json", signer.BodyMD5(body), now, "vig-tps", signer.NewSecret(hmacSecret))
	if err != nil {
		t.Fatal(err)
	}
	req := h.post(t, "/FST300234030000001", "", "", body)
	hs.Apply(req.Header)
	if r := wait(t, h.do(req)); r.code != 401 {
		t.Errorf("signature of another path: %d", r.code)
	}
	hs, _ = signer.Sign(signer.Config{}, "POST", "/ingest/FST300234030000001", "application/json", "", now, "vig-tps", signer.NewSecret(hmacSecret))
	req = h.post(t, "/FST300234030000001", "", "", body)
	hs.Apply(req.Header)
	r := wait(t, h.do(req))
	if r.code != 401 {
		t.Errorf("signed without Content-MD5: %d %s", r.code, r.body)
	}
	h.noEmit(t, 50*time.Millisecond)
	logs := h.logs.String()
	noSecrets(t, logs, hmacSecret, hs.Authorization)
	if !strings.Contains(logs, "signature does not verify") || !strings.Contains(logs, "unknown service id") {
		t.Errorf("reasons not logged:\n%s", logs)
	}
}

// ---- TLS ----

type pki struct {
	caFile, certFile, keyFile string
	ca                        *x509.Certificate
	caKey                     *ecdsa.PrivateKey
	pool                      *x509.CertPool
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemFile(t *testing.T, name, typ string, der []byte) string {
	return writeFile(t, name, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
}

// newPKI makes a CA and a server certificate for 127.0.0.1 it signed.
func newPKI(t *testing.T, cn string) *pki {
	t.Helper()
	p := &pki{caKey: newKey(t)}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caFile = pemFile(t, "ca.pem", "CERTIFICATE", der)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.certFile, p.keyFile = p.issue(t, "server", x509.ExtKeyUsageServerAuth)
	return p
}

// issue signs a leaf certificate and returns its cert and key files.
func (p *pki) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) (string, string) {
	t.Helper()
	k := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &k.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemFile(t, cn+".pem", "CERTIFICATE", der), pemFile(t, cn+"-key.pem", "EC PRIVATE KEY", kb)
}

func (h *harness) tlsClient(t *testing.T, roots *x509.CertPool, certFile, keyFile string) *http.Client {
	t.Helper()
	tc := &tls.Config{RootCAs: roots}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// HTTPS with a client certificate as the credential.
func TestClientCertificateAuth(t *testing.T) {
	p := newPKI(t, "vigd test CA")
	h := start(t, func(c *Config) {
		c.Auth = AuthConfig{Mode: AuthClientCert, MaxSkew: time.Minute}
		c.TLS = TLSConfig{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile}
	})
	if !strings.HasPrefix(h.base, "https://") {
		t.Fatalf("base %s", h.base)
	}
	cf, kf := p.issue(t, "logger-7", x509.ExtKeyUsageClientAuth)
	good := h.tlsClient(t, p.pool, cf, kf)
	res := h.doWith(good, h.post(t, "/d1", "text/plain", "", []byte("hello")))
	e := h.next(t)
	if e.frame.Meta[MetaAuthName] != "logger-7" {
		t.Errorf("auth_name %q", e.frame.Meta[MetaAuthName])
	}
	e.reply <- nil
	if r := wait(t, res); r.code != 202 {
		t.Errorf("%d", r.code)
	}

	// No certificate, or one from another CA: the handshake fails.
	rogue := newPKI(t, "rogue CA")
	rcf, rkf := rogue.issue(t, "intruder", x509.ExtKeyUsageClientAuth)
	for name, c := range map[string]*http.Client{"no client certificate": h.tlsClient(t, p.pool, "", ""), "rogue certificate": h.tlsClient(t, p.pool, rcf, rkf)} {
		r := <-h.doWith(c, h.post(t, "/d1", "text/plain", "", []byte("x")))
		if r.err == nil {
			t.Errorf("%s: answered %d", name, r.code)
		}
	}
	h.noEmit(t, 50*time.Millisecond)
}

// Bearer tokens over TLS with a client CA: both are needed.
func TestBearerOverMutualTLS(t *testing.T) {
	p := newPKI(t, "vigd test CA")
	h := start(t, func(c *Config) { c.TLS = TLSConfig{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile} })
	cf, kf := p.issue(t, "logger-8", x509.ExtKeyUsageClientAuth)
	c := h.tlsClient(t, p.pool, cf, kf)
	if r := wait(t, h.doWith(c, h.post(t, "/d1", "text/plain", "", []byte("x")))); r.code != 401 {
		t.Errorf("certificate without token: %d", r.code)
	}
	res := h.doWith(c, h.post(t, "/d1", "text/plain", tokenA, []byte("x")))
	e := h.next(t)
	if e.frame.Meta[MetaAuthName] != "sensor-a" {
		t.Errorf("auth_name %q", e.frame.Meta[MetaAuthName])
	}
	e.reply <- nil
	if r := wait(t, res); r.code != 202 {
		t.Errorf("%d", r.code)
	}
}

// ---- tokens file ----

var tokenCases = []struct {
	name  string
	in    string
	names []string
	err   string
}{
	{"two tokens", "a " + tokenA + "\nb " + tokenB + "\n", []string{"a", "b"}, ""},
	{"comments, blanks, tabs, CRLF", "# x\r\n\r\n  a\t" + tokenA + "  \r\n", []string{"a"}, ""},
	{"no trailing newline", "a " + tokenA, []string{"a"}, ""},
	{"empty", "", nil, ""},
	{"one field", "a\n", nil, "t:1: want \"name token\" (2 fields), got 1"},
	{"three fields", "a " + tokenA + " extra\n", nil, "t:1: want \"name token\" (2 fields), got 3"},
	{"short token", "# c\na short-token\n", nil, "t:2: the token of \"a\" is shorter than 16"},
	{"duplicate name", "a " + tokenA + "\na " + tokenB + "\n", nil, "t:2: name \"a\" is given twice"},
	{"shared token", "a " + tokenA + "\nb " + tokenA + "\n", nil, "t:2: the token of \"b\" is the token of \"a\" too"},
	{"bad name", "a/b " + tokenA + "\n", nil, "t:1: name \"a/b\""},
}

func TestParseTokens(t *testing.T) {
	for _, tc := range tokenCases {
		ts := &tokenSet{}
		err := parseTokens("t", []byte(tc.in), ts)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
			}
			if err != nil && (strings.Contains(err.Error(), tokenA) || strings.Contains(err.Error(), "short-token")) {
				t.Errorf("%s: error shows a token: %v", tc.name, err)
			}
			continue
		}
		if err != nil || strings.Join(ts.names, ",") != strings.Join(tc.names, ",") {
			t.Errorf("%s: %v %v", tc.name, ts.names, err)
		}
	}
	ts := &tokenSet{}
	_ = parseTokens("t", []byte(tokenCases[0].in), ts)
	for tok, want := range map[string]string{tokenA: "a", tokenB: "b", tokenA + " ": "", "": "", tokenA[:16]: ""} {
		if got, ok := ts.match(tok); got != want || ok != (want != "") {
			t.Errorf("match(%q) = %q %v", tok, got, ok)
		}
	}
}

// FuzzParseTokens: no panic; every token of a parsed file matches its own
// name; errors never show a token.
func FuzzParseTokens(f *testing.F) {
	for _, tc := range tokenCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ts := &tokenSet{}
		if err := parseTokens("f", b, ts); err != nil {
			// A token may only show where it is also written as a name.
			var names []string
			for _, line := range strings.Split(string(b), "\n") {
				if fs := strings.Fields(line); len(fs) > 0 {
					names = append(names, fs[0])
				}
			}
		lines:
			for _, line := range strings.Split(string(b), "\n") {
				fs := strings.Fields(line)
				if len(fs) != 2 || len(fs[1]) < 8 || !strings.Contains(err.Error(), fs[1]) {
					continue
				}
				for _, n := range names {
					if strings.Contains(n, fs[1]) {
						continue lines
					}
				}
				t.Fatalf("error shows token %q: %v", fs[1], err)
			}
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			if len(fs) != 2 || strings.HasPrefix(fs[0], "#") {
				continue
			}
			if name, ok := ts.match(fs[1]); !ok || name != fs[0] {
				t.Fatalf("token of %q matches %q %v", fs[0], name, ok)
			}
		}
	})
}
