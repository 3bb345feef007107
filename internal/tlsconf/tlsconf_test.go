package tlsconf_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigd/vigd/internal/tlsconf"
	"github.com/vigd/vigd/internal/tlsconf/tlstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []tlsconf.Problem
		want []string
	}{
		{"server off", tlsconf.Server{}.Check(), nil},
		{"server cert only", tlsconf.Server{CertFile: "a"}.Check(), []string{"cert_file: cert_file and key_file go together"}},
		{"server ca without tls", tlsconf.Server{ClientCAFile: "ca"}.Check(), []string{"client_ca_file: needs cert_file and key_file (client certificates are a TLS feature)"}},
		{"server full", tlsconf.Server{CertFile: "a", KeyFile: "b", ClientCAFile: "c"}.Check(), nil},
		{"client key only", tlsconf.Client{KeyFile: "k"}.Check(), []string{"cert_file: cert_file and key_file go together"}},
		{"client ca only", tlsconf.Client{CAFile: "ca"}.Check(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range tc.got {
				got = append(got, p.Error())
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	err := tlsconf.Join("tls", tlsconf.Server{KeyFile: "k"}.Check())
	if err == nil || err.Error() != "tls.cert_file: cert_file and key_file go together" {
		t.Fatalf("Join: %v", err)
	}
	var p tlsconf.Problem
	if !errors.As(err, &p) || p.Field != "tls.cert_file" {
		t.Fatalf("Join does not keep Problem: %#v", err)
	}
}

// serve accepts one connection on a TLS listener, reads a line and
// answers "ok".
func serve(t *testing.T, cfg *tls.Config) (addr string, errc <-chan error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 3)
		if _, err := io.ReadFull(c, buf); err != nil {
			ch <- err
			return
		}
		_, err = c.Write([]byte("ok\n"))
		ch <- err
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), ch
}

func talk(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hi\n")); err != nil {
		return err
	}
	b := make([]byte, 3)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "ok\n" {
		return errors.New("bad answer " + string(b))
	}
	return nil
}

func TestServerWithClientCertificates(t *testing.T) {
	pki := tlstest.New(t)
	srv := tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile}
	cfg, err := srv.Load(tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("min version %x, client auth %v", cfg.MinVersion, cfg.ClientAuth)
	}

	addr, errc := serve(t, cfg)
	if err := talk(addr, pki.ClientConfig(true)); err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server side: %v", err)
	}

	addr, errc = serve(t, cfg)
	if err := talk(addr, pki.ClientConfig(false)); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	if err := <-errc; err == nil {
		t.Fatal("server accepted a client without a certificate")
	}

	// A certificate from another CA is refused too.
	other := pki.ClientConfig(false)
	c, err := tls.LoadX509KeyPair(pki.OtherCert, pki.OtherKey)
	if err != nil {
		t.Fatal(err)
	}
	other.Certificates = []tls.Certificate{c}
	addr, errc = serve(t, cfg)
	if err := talk(addr, other); err == nil {
		t.Fatal("a client with a certificate from another CA was served")
	}
	<-errc

	// TLS 1.1 is refused.
	old := pki.ClientConfig(true)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	addr, errc = serve(t, cfg)
	if err := talk(addr, old); err == nil {
		t.Fatal("TLS 1.1 was accepted")
	}
	<-errc
}

func TestClientVerification(t *testing.T) {
	pki := tlstest.New(t)
	srvCfg, err := tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}.Load(tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    tlsconf.Client
		ok   bool
	}{
		{"ca file", tlsconf.Client{CAFile: pki.CAFile}, true},
		{"system roots", tlsconf.Client{}, false},
		{"wrong ca", tlsconf.Client{CAFile: pki.OtherCAFile}, false},
		{"wrong server name", tlsconf.Client{CAFile: pki.CAFile, ServerName: "xcloud.example.com"}, false},
		{"insecure", tlsconf.Client{InsecureSkipVerify: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := tc.c.Load(tlsconf.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if cc.MinVersion != tls.VersionTLS12 {
				t.Fatalf("min version %x", cc.MinVersion)
			}
			addr, errc := serve(t, srvCfg)
			err = talk(addr, cc)
			<-errc
			if tc.ok && err != nil {
				t.Fatalf("want success: %v", err)
			}
			if !tc.ok {
				var ve *tls.CertificateVerificationError
				if !errors.As(err, &ve) {
					t.Fatalf("want a verification error, got %v", err)
				}
			}
		})
	}
}

func TestClientCertificateSent(t *testing.T) {
	pki := tlstest.New(t)
	srvCfg, err := tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile}.Load(tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tlsconf.Client{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}.Load(tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr, errc := serve(t, srvCfg)
	if err := talk(addr, cc); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrorsNameFilesNotContent(t *testing.T) {
	pki := tlstest.New(t)
	keyPEM, err := os.ReadFile(pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		load func() error
		want string
	}{
		{"missing cert", func() error {
			_, err := tlsconf.Server{CertFile: pki.Dir + "/nope.pem", KeyFile: pki.ServerKey}.Load(tlsconf.Options{})
			return err
		}, "cert_file: stat " + pki.Dir + "/nope.pem"},
		{"key as cert", func() error {
			_, err := tlsconf.Server{CertFile: pki.ServerKey, KeyFile: pki.ServerKey}.Load(tlsconf.Options{})
			return err
		}, "cert_file/key_file " + pki.ServerKey},
		{"ca not pem", func() error {
			_, err := tlsconf.Client{CAFile: pki.ServerKey}.Load(tlsconf.Options{})
			return err
		}, "ca_file " + pki.ServerKey + ": no PEM certificate in it"},
		{"missing client ca", func() error {
			_, err := tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.Dir + "/x"}.Load(tlsconf.Options{})
			return err
		}, "client_ca_file: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.load()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want it to contain %q", err, tc.want)
			}
			body := strings.Split(string(keyPEM), "\n")[1]
			if strings.Contains(err.Error(), body[:20]) {
				t.Fatalf("error shows key material: %v", err)
			}
		})
	}
}

// A renewed certificate is served without a restart; a broken renewal
// keeps the old one and is reported once.
func TestServerCertificateReload(t *testing.T) {
	pki := tlstest.New(t)
	var reported []error
	var mu sync.Mutex
	cfg, err := tlsconf.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}.Load(tlsconf.Options{
		OnReloadError: func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		leaf := c.Leaf
		if leaf == nil {
			t.Fatal("no leaf")
		}
		return leaf.SerialNumber.Int64()
	}
	first := serial()
	// Renew: a new pair written over the old files.
	cert, key := pki.Issue("renewed", "vigd-test-server", true)
	time.Sleep(1100 * time.Millisecond) // the recheck interval
	mustCopy(t, cert, pki.ServerCert)
	mustCopy(t, key, pki.ServerKey)
	second := serial()
	if second == first {
		t.Fatalf("certificate not reloaded (serial %d)", second)
	}
	// Broken: the key file no longer matches.
	time.Sleep(1100 * time.Millisecond)
	if err := os.WriteFile(pki.ServerKey, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != second {
		t.Fatalf("broken renewal replaced the certificate: %d", got)
	}
	time.Sleep(1100 * time.Millisecond)
	_ = serial()
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 {
		t.Fatalf("reload errors reported %d times, want 1: %v", len(reported), reported)
	}
}

func mustCopy(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
