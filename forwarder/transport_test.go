package forwarder

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vigd/vigd/internal/tlsconf"
	"github.com/vigd/vigd/internal/tlsconf/tlstest"
)

func TestTransportConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"defaults", func(c *Config) {}, ""},
		{"tls half", func(c *Config) { c.TLS.CertFile = "c.pem" }, "tls.cert_file: cert_file and key_file go together"},
		{"proxy none", func(c *Config) { c.Proxy = ProxyNone }, ""},
		{"proxy url", func(c *Config) { c.Proxy = "http://user:pw@proxy.example:3128" }, ""},
		{"proxy socks", func(c *Config) { c.Proxy = "socks5://10.0.0.1:1080" }, ""},
		{"proxy not a url", func(c *Config) { c.Proxy = "proxy.example" }, "proxy: must be"},
		{"proxy bad scheme", func(c *Config) { c.Proxy = "ftp://user:hunter2@proxy:21" }, `proxy: scheme "ftp"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.URL, c.ServiceID, c.SecretFile = "https://xcloud.example", "svc", "/run/secret"
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error shows the proxy password: %v", err)
			}
		})
	}
	if got := redactedProxy("http://user:hunter2@proxy:3128"); strings.Contains(got, "hunter2") || !strings.Contains(got, "proxy:3128") {
		t.Fatalf("redactedProxy = %q", got)
	}
}

func TestTransportProxyChoice(t *testing.T) {
	c := DefaultConfig()
	tr, err := newTransport(c)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(tr.Proxy).Pointer() != reflect.ValueOf(http.ProxyFromEnvironment).Pointer() {
		t.Fatal("default proxy is not http.ProxyFromEnvironment (HTTPS_PROXY/NO_PROXY)")
	}
	if tr.TLSClientConfig.MinVersion != tls.VersionTLS12 || tr.TLSClientConfig.InsecureSkipVerify {
		t.Fatalf("tls %+v", tr.TLSClientConfig)
	}
	c.Proxy = ProxyNone
	if tr, _ := newTransport(c); tr.Proxy != nil {
		t.Fatal("proxy none still proxies")
	}
}

// startTLS serves the fake eventstore over HTTPS with the test PKI's
// server certificate; requireClientCert asks for a client certificate.
func (e *env) startTLS(pki *tlstest.PKI, requireClientCert bool) {
	e.t.Helper()
	e.srv.Close()
	e.srv = httptest.NewUnstartedServer(e.fs)
	e.srv.TLS = pki.ServerConfig()
	if requireClientCert {
		e.srv.TLS.ClientCAs = pki.Pool()
		e.srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	}
	e.srv.StartTLS()
	e.t.Cleanup(e.srv.Close)
	e.cfg.URL = e.srv.URL
}

// Without ca_file the test CA is unknown: every request fails
// verification, the error is logged and reported, and the records stay
// queued; with ca_file they are delivered.
func TestTLSVerification(t *testing.T) {
	pki := tlstest.New(t)
	e := newEnv(t)
	e.startTLS(pki, false)
	e.entities("FST1")
	e.obs("FST1", 1, 2, 3)
	e.start()
	e.waitFor("a certificate error", func() bool {
		return strings.Contains(e.fwd.Status().LastError, "certificate")
	})
	if n := len(e.fs.requests()); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
	if len(e.logs.lines("insecure_skip_verify")) != 0 {
		t.Fatal("insecure warning without the setting")
	}
	e.stop()
	if n := backlog(e.data); n != 3 {
		t.Fatalf("backlog %d after failed verification, want 3 (nothing lost)", n)
	}

	e.cfg.TLS = tlsconf.Client{CAFile: pki.CAFile}
	e.start()
	e.drained()
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2, 3})
}

func TestTLSInsecureSkipVerifyWarns(t *testing.T) {
	pki := tlstest.New(t)
	e := newEnv(t)
	e.startTLS(pki, false)
	e.cfg.TLS = tlsconf.Client{InsecureSkipVerify: true}
	e.entities("FST1")
	e.obs("FST1", 7)
	e.start()
	e.drained()
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{7})
	w := e.logs.lines("insecure_skip_verify")
	if len(w) != 1 || w[0]["level"] != "warning" {
		t.Fatalf("warning lines %v", w)
	}
}

func TestTLSClientCertificate(t *testing.T) {
	pki := tlstest.New(t)
	e := newEnv(t)
	e.startTLS(pki, true)
	e.cfg.TLS = tlsconf.Client{CAFile: pki.CAFile}
	e.entities("FST1")
	e.obs("FST1", 1)
	e.start()
	e.waitFor("a refused handshake", func() bool { return e.fwd.Status().LastError != "" })
	e.stop()
	if n := backlog(e.data); n != 1 {
		t.Fatalf("backlog %d", n)
	}
	e.cfg.TLS.CertFile, e.cfg.TLS.KeyFile = pki.ClientCert, pki.ClientKey
	e.start()
	e.drained()
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1})
}

func TestTLSBadCAFileIsAConfigError(t *testing.T) {
	e := newEnv(t)
	e.cfg.TLS = tlsconf.Client{CAFile: e.dir + "/secret"} // not a certificate
	_, err := New(e.cfg, Deps{Data: e.data, Alarms: e.alarms, State: e.state, DeadLetters: e.dl})
	if err == nil || !strings.Contains(err.Error(), "tls: ca_file") {
		t.Fatalf("New: %v", err)
	}
	if strings.Contains(err.Error(), testSecret) {
		t.Fatalf("error shows the file's content: %v", err)
	}
}

// An explicit proxy URL carries every request.
func TestExplicitProxy(t *testing.T) {
	e := newEnv(t)
	var proxied atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		if !r.URL.IsAbs() {
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			_, _ = w.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}))
	defer proxy.Close()
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	e.cfg.Proxy = proxy.URL
	e.entities("FST1")
	e.obs("FST1", 1, 2)
	e.start()
	e.drained()
	e.stop()
	assertSeqs(t, "observations", e.fs.seqs("observations"), []int{1, 2})
	if n := int(proxied.Load()); n != len(e.fs.requests()) || n == 0 {
		t.Fatalf("%d requests through the proxy, %d at the server", n, len(e.fs.requests()))
	}
}
