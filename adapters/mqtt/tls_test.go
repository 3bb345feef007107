package mqtt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigd/vigd/internal/testpeers"
)

// pki is a throw-away CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files into a test folder.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey := genKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vigd test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := genKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	srvDER, srvKey := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliDER, cliKey := leaf(3, "vigd-gateway", x509.ExtKeyUsageClientAuth, nil)
	p := pki{
		caFile:     filepath.Join(dir, "ca.pem"),
		serverCert: filepath.Join(dir, "server.pem"),
		serverKey:  filepath.Join(dir, "server.key"),
		clientCert: filepath.Join(dir, "client.pem"),
		clientKey:  filepath.Join(dir, "client.key"),
	}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	writePEM(t, p.serverCert, "CERTIFICATE", srvDER)
	writePEM(t, p.serverKey, "EC PRIVATE KEY", ecDER(t, srvKey))
	writePEM(t, p.clientCert, "CERTIFICATE", cliDER)
	writePEM(t, p.clientKey, "EC PRIVATE KEY", ecDER(t, cliKey))
	return p
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ecDER(t *testing.T, k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Mosquitto requires a client certificate: the adapter connects over
// ssl:// with its certificate and receives; without one it is refused and
// stays not ready.
func TestTLSClientCertificate(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	mq := requireMosquitto(t, testpeers.MosquittoOptions{TLS: &testpeers.MosquittoTLS{
		CAFile: p.caFile, CertFile: p.serverCert, KeyFile: p.serverKey, RequireCertificate: true,
	}})

	cfg := baseConfig(t, mq.TLSURL())
	cfg.TLS = TLSConfig{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}
	name := adapterName(t, "")
	sink := newRecSink()
	r := start(t, name, cfg, sink)
	r.waitReady(t)
	if d := r.a.Status().Detail; !strings.Contains(d, "ssl://127.0.0.1") {
		t.Errorf("status detail %q does not name the ssl broker", d)
	}
	newPublisher(t, mq.URL()).mustPub(t, "devices/tls-1/up", 1, false, "over-tls")
	waitPayloads(t, sink, 5*time.Second, []string{"over-tls"})

	// No client certificate: the handshake fails, the adapter keeps trying.
	noCert := baseConfig(t, mq.TLSURL())
	noCert.ClientID += "-nocert"
	noCert.TLS = TLSConfig{CAFile: p.caFile}
	nname := adapterName(t, "-nocert")
	r2 := start(t, nname, noCert, newRecSink())
	waitFor(t, 10*time.Second, "a refused connect", func() bool {
		return value(mErrors.WithLabelValues(nname, "connect")) >= 1
	})
	if st := r2.a.Status(); st.OK || !strings.Contains(st.Detail, "connect") {
		t.Errorf("status without client certificate = %+v, want not OK with the connect error", st)
	}

	// Server not signed by the configured CA: refused too.
	other := newPKI(t)
	wrongCA := baseConfig(t, mq.TLSURL())
	wrongCA.ClientID += "-wrongca"
	wrongCA.TLS = TLSConfig{CAFile: other.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}
	wname := adapterName(t, "-wrongca")
	start(t, wname, wrongCA, newRecSink())
	waitFor(t, 10*time.Second, "a refused connect", func() bool {
		return value(mErrors.WithLabelValues(wname, "connect")) >= 1
	})
}

// Username and password_file: the password comes from the file (trailing
// newline ignored) and never shows in the log; a wrong one is refused.
func TestPasswordFile(t *testing.T) {
	t.Parallel()
	passwd := testpeers.Require(t, "mosquitto_passwd", "mosquitto")
	dir := t.TempDir()
	pwdb := filepath.Join(dir, "passwd")
	const secret = "s3cret-Pa55"
	if out, err := exec.Command(passwd, "-b", "-c", pwdb, "gateway", secret).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	mq := requireMosquitto(t, testpeers.MosquittoOptions{NoAnonymous: true, Config: []string{"password_file " + pwdb}})

	good := filepath.Join(dir, "good")
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := baseConfig(t, mq.URL())
	cfg.Username, cfg.PasswordFile = "gateway", good
	name := adapterName(t, "")
	sink := newRecSink()
	r := start(t, name, cfg, sink)
	r.waitReady(t)
	pub := newPublisher(t, mq.URL(), func(o *paho.ClientOptions) { o.SetUsername("gateway").SetPassword(secret) })
	pub.mustPub(t, "devices/pw/up", 1, false, "authed")
	waitPayloads(t, sink, 5*time.Second, []string{"authed"})

	wrong := baseConfig(t, mq.URL())
	wrong.ClientID += "-wrong"
	wrong.Username, wrong.PasswordFile = "gateway", bad
	wname := adapterName(t, "-wrong")
	r2 := start(t, wname, wrong, newRecSink())
	waitFor(t, 10*time.Second, "a refused connect", func() bool {
		return value(mErrors.WithLabelValues(wname, "connect")) >= 1
	})
	if st := r2.a.Status(); st.OK || !strings.Contains(st.Detail, "not Authorized") {
		t.Errorf("status with a wrong password = %+v, want not OK, not Authorized", st)
	}

	missing := baseConfig(t, mq.URL())
	missing.ClientID += "-missing"
	missing.Username, missing.PasswordFile = "gateway", filepath.Join(dir, "nope")
	mname := adapterName(t, "-missing")
	r3 := start(t, mname, missing, newRecSink())
	waitFor(t, 5*time.Second, "setup failure in status", func() bool {
		return strings.Contains(r3.a.Status().Detail, "password_file")
	})
	for _, x := range []*running{r, r2, r3} {
		if strings.Contains(x.log.String(), secret) {
			t.Error("the password appears in the log")
		}
		if !strings.Contains(x.log.String(), "level=") {
			t.Error("no log captured")
		}
	}
}
