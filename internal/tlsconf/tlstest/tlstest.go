// Package tlstest makes a throw-away certificate authority for tests: a CA,
// a server certificate for 127.0.0.1/localhost and a client certificate,
// written as PEM files into a test's folder.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI holds the paths of the files New wrote.
type PKI struct {
	Dir string
	// CAFile is the CA certificate (trust it to verify the others).
	CAFile string
	// ServerCert/ServerKey: CN "vigd-test-server", SANs 127.0.0.1, ::1,
	// localhost.
	ServerCert, ServerKey string
	// ClientCert/ClientKey: CN ClientCN, for client authentication.
	ClientCert, ClientKey string
	// OtherCAFile is a second CA that signed nothing here (a client or
	// server trusting only it must fail verification), and OtherCert/
	// OtherKey a client certificate it signed.
	OtherCAFile         string
	OtherCert, OtherKey string
	// CA is the CA certificate.
	CA *x509.Certificate

	caKey, otherKey     *ecdsa.PrivateKey
	other               *x509.Certificate
	serial              int64
	notBefore, notAfter time.Time
	writeMode           os.FileMode
	t                   testing.TB
}

// ClientCN is the common name of the client certificate.
const ClientCN = "device-42"

// New writes a CA, a server and a client certificate into a new folder
// under t.TempDir().
func New(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), t: t, notBefore: time.Now().Add(-time.Hour), notAfter: time.Now().Add(24 * time.Hour), writeMode: 0o600}
	p.CA, p.caKey = p.selfSigned("vigd-test-ca")
	p.CAFile = p.write("ca.pem", "CERTIFICATE", p.CA.Raw)
	p.other, p.otherKey = p.selfSigned("other-ca")
	p.OtherCAFile = p.write("other-ca.pem", "CERTIFICATE", p.other.Raw)
	p.ServerCert, p.ServerKey = p.Issue("server", "vigd-test-server", true)
	p.ClientCert, p.ClientKey = p.Issue("client", ClientCN, false)
	p.OtherCert, p.OtherKey = p.issue(p.other, p.otherKey, "other-client", "stranger", false)
	return p
}

func (p *PKI) key() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	return k
}

func (p *PKI) selfSigned(cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	k := p.key()
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(p.serial),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             p.notBefore,
		NotAfter:              p.notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return c, k
}

// Issue signs a new certificate with the CA and writes NAME.pem and
// NAME-key.pem; server certificates get the loopback SANs.
func (p *PKI) Issue(name, cn string, server bool) (certFile, keyFile string) {
	return p.issue(p.CA, p.caKey, name, cn, server)
}

func (p *PKI) issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name, cn string, server bool) (string, string) {
	p.t.Helper()
	k := p.key()
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    p.notBefore,
		NotAfter:     p.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name+".pem", "CERTIFICATE", der), p.write(name+"-key.pem", "PRIVATE KEY", kb)
}

func (p *PKI) write(name, typ string, der []byte) string {
	path := filepath.Join(p.Dir, name)
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, p.writeMode); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// Pool is a pool holding the CA.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	return pool
}

// ClientConfig is a client configuration trusting the CA, with the client
// certificate when withCert.
func (p *PKI) ClientConfig(withCert bool) *tls.Config {
	p.t.Helper()
	tc := &tls.Config{RootCAs: p.Pool(), MinVersion: tls.VersionTLS12}
	if withCert {
		c, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
		if err != nil {
			p.t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc
}

// ServerConfig is a server configuration with the server certificate.
func (p *PKI) ServerConfig() *tls.Config {
	p.t.Helper()
	c, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		p.t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
}
