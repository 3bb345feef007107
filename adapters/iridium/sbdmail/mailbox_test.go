package sbdmail

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/internal/testpeers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const samplePayload = "Thanks for your amazing sbd-rs repo @someuser!"

var runs atomic.Int64

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

type emission struct {
	frame *adapters.Frame
	reply chan error
}

type gateSink struct{ ch chan emission }

func (s gateSink) Emit(ctx context.Context, f *adapters.Frame) error {
	e := emission{frame: f, reply: make(chan error, 1)}
	select {
	case s.ch <- e:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-e.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type harness struct {
	m    *Mailbox
	d    *testpeers.Dovecot
	sink gateSink
	stop func()
}

func baseConfig(d *testpeers.Dovecot) *Config {
	cfg := DefaultConfig()
	cfg.Address = d.Addr()
	cfg.TLS.Mode = TLSNone
	cfg.Username = d.User
	cfg.PasswordFile = d.PasswordFile
	cfg.PollInterval = 300 * time.Millisecond
	cfg.Timeout = 5 * time.Second
	return cfg
}

func start(t *testing.T, d *testpeers.Dovecot, stateDir string, mutate func(*Config)) *harness {
	t.Helper()
	cfg := baseConfig(d)
	if mutate != nil {
		mutate(cfg)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	if testing.Verbose() {
		log.SetOutput(os.Stderr)
		log.SetLevel(logrus.DebugLevel)
	}
	m, err := New(fmt.Sprintf("mail-%s-%d", t.Name(), runs.Add(1)), cfg, adapters.Env{Log: logrus.NewEntry(log), StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	m.backoff = adapters.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{m: m, d: d, sink: gateSink{ch: make(chan emission)}}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, h.sink) }()
	stopped := false
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return")
		}
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) next(t *testing.T) emission {
	t.Helper()
	select {
	case e := <-h.sink.ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("no frame emitted (status %+v)", h.m.Status())
		return emission{}
	}
}

func (h *harness) noEmit(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case e := <-h.sink.ch:
		t.Fatalf("unexpected frame %+v", e.frame)
	case <-time.After(d):
	}
}

// waitScans waits until n more scans have finished.
func (h *harness) waitScans(t *testing.T, n uint64) {
	t.Helper()
	h.waitScansFrom(t, h.m.Scans(), n)
}

// waitScansFrom waits until n scans after the count from have finished.
func (h *harness) waitScansFrom(t *testing.T, from, n uint64) {
	t.Helper()
	eventually(t, func() bool { return h.m.Scans() >= from+n }, "scans")
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func sample(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(testpeers.Sample(t, "email_mo_with_location.eml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func inbox(t *testing.T, d *testpeers.Dovecot) []testpeers.DovecotMessage {
	t.Helper()
	return d.Messages("INBOX")
}

func TestSampleSeenOnlyAfterDurable(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	d.Deliver("INBOX", sample(t))
	h := start(t, d, t.TempDir(), nil)
	e := h.next(t)
	f := e.frame
	if f.Kind != "sbdmail" || f.Identity != "300234010000020" || string(f.Payload) != samplePayload || len(f.Payload) != 46 ||
		f.Source != "INBOX/1" || f.Offset != -1 {
		t.Errorf("frame %+v", f)
	}
	want := map[string]string{
		"transport": "sbdmail", "imei": "300234010000020", "momsn": "7", "mtmsn": "0",
		"session_status": "0", "session_status_text": "Transfer OK", "session_time": "2025-09-14T23:30:40Z",
		"message_size": "46", "lat": "-43.52117", "lon": "172.60487", "cep_km": "2",
	}
	for k, v := range want {
		if f.Meta[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, f.Meta[k], v)
		}
	}
	if len(f.Meta) != len(want) {
		t.Errorf("meta %v", f.Meta)
	}
	// The sink holds the frame: the mail must still be unseen.
	time.Sleep(200 * time.Millisecond)
	if ms := inbox(t, d); len(ms) != 1 || ms[0].Seen() {
		t.Fatalf("before durable: %+v", ms)
	}
	e.reply <- nil
	eventually(t, func() bool { ms := inbox(t, d); return len(ms) == 1 && ms[0].Seen() }, `\Seen`)
	h.waitScans(t, 2)
	h.noEmit(t, 50*time.Millisecond)
	if !h.m.Status().OK || counter(h.m.metrics.Frames) != 1 {
		t.Errorf("status %+v frames %v", h.m.Status(), counter(h.m.metrics.Frames))
	}
}

func TestFailedEmitLeavesUnseenAndRetries(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	d.Deliver("INBOX", sample(t))
	h := start(t, d, t.TempDir(), nil)
	e := h.next(t)
	// Read the count before answering: the scan ends as soon as the sink
	// answers.
	before := h.m.Scans()
	e.reply <- errors.New("disk full")
	h.waitScansFrom(t, before, 1)
	if ms := inbox(t, d); len(ms) != 1 || ms[0].Seen() {
		t.Fatalf("after failed emit: %+v", ms)
	}
	// Next poll: emitted again.
	e = h.next(t)
	if string(e.frame.Payload) != samplePayload {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- &adapters.RejectedError{Reason: "unknown device"} // dead-lettered: durable
	eventually(t, func() bool { ms := inbox(t, d); return len(ms) == 1 && ms[0].Seen() }, `\Seen`)
}

func mail(subject, body string, attachment []byte) []byte {
	var b strings.Builder
	b.WriteString("From: sbdservice@sbd.iridium.com\r\nSubject: " + subject + "\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: multipart/mixed; boundary=\"SBD.Boundary.1\"\r\n\r\n--SBD.Boundary.1\r\nContent-Type: text/plain\r\n\r\n")
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	if attachment != nil {
		b.WriteString("\r\n--SBD.Boundary.1\r\nContent-Type: application/x-zip-compressed; name=\"x.SBD\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
		b.WriteString(b64(attachment) + "\r\n")
	}
	b.WriteString("\r\n--SBD.Boundary.1--\r\n")
	return []byte(b.String())
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Mails without attachment are session records; body variations parse.
func TestSessionMailsAndBodyVariations(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	d.Deliver("INBOX", mail("SBD Msg From Unit: 300234010000030",
		"MOMSN: 12\nMTMSN: 0\nTime of Session (UTC): Fri Jul  8 00:12:55 2005\nSession Status: 13 - Incomplete Transfer\nMessage Size (bytes): 0\n", nil))
	d.Append("INBOX", mail("SBD Msg From Unit: 300234010000030",
		"\n  momsn :  13\ntime of session (utc):  fri jul 8 01:00:00 2005\nSESSION STATUS: 00 - TRANSFER OK\nmessage size (bytes): 2\nUNIT LOCATION: LAT = 52.38670 LONG = -0.29380\nCEPRADIUS = 8\n", []byte{0xCA, 0xFE}))
	h := start(t, d, t.TempDir(), nil)

	e := h.next(t)
	if len(e.frame.Payload) != 0 || e.frame.Payload == nil || e.frame.Meta["session_status"] != "13" || e.frame.Meta["momsn"] != "12" ||
		e.frame.Meta["session_time"] != "2005-07-08T00:12:55Z" || e.frame.Meta["lat"] != "" || e.frame.Meta["parse_error"] != "" {
		t.Errorf("session frame %+v", e.frame)
	}
	e.reply <- nil
	e = h.next(t)
	if !bytes.Equal(e.frame.Payload, []byte{0xCA, 0xFE}) || e.frame.Meta["momsn"] != "13" || e.frame.Meta["session_time"] != "2005-07-08T01:00:00Z" ||
		e.frame.Meta["lat"] != "52.38670" || e.frame.Meta["lon"] != "-0.29380" || e.frame.Meta["cep_km"] != "8" {
		t.Errorf("variation frame %+v", e.frame)
	}
	e.reply <- nil
	eventually(t, func() bool {
		ms := inbox(t, d)
		return len(ms) == 2 && ms[0].Seen() && ms[1].Seen()
	}, "both seen")
}

func TestMoveAfterDurable(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	d.Deliver("INBOX", sample(t))
	h := start(t, d, t.TempDir(), func(c *Config) { c.OnSuccess = OnSuccessMove; c.MoveTo = "Iridium/Done" })
	e := h.next(t)
	time.Sleep(150 * time.Millisecond)
	if ms := inbox(t, d); len(ms) != 1 {
		t.Fatalf("moved before durable: %+v", ms)
	}
	e.reply <- nil
	eventually(t, func() bool { return len(inbox(t, d)) == 0 && len(d.Messages("Iridium/Done")) == 1 }, "move")
	// A seen mail in the folder is still taken in move mode.
	d.Append("INBOX", mail("SBD Msg From Unit: 300234010000030",
		"MOMSN: 1\nTime of Session (UTC): Fri Jul 8 00:12:55 2005\nSession Status: 0\n", nil), `\Seen`)
	h.next(t).reply <- nil
	eventually(t, func() bool { return len(inbox(t, d)) == 0 && len(d.Messages("Iridium/Done")) == 2 }, "second move")
}

// The same SBD message twice (and across a restart): emitted once, both
// acknowledged.
func TestDuplicateMails(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	state := t.TempDir()
	d.Deliver("INBOX", sample(t))
	d.Deliver("INBOX", sample(t))
	h := start(t, d, state, nil)
	h.next(t).reply <- nil
	eventually(t, func() bool {
		ms := inbox(t, d)
		return len(ms) == 2 && ms[0].Seen() && ms[1].Seen()
	}, "both seen")
	h.noEmit(t, 100*time.Millisecond)
	if counter(h.m.metrics.Duplicates) != 1 {
		t.Errorf("duplicates %v", counter(h.m.metrics.Duplicates))
	}
	h.stop()

	d.Deliver("INBOX", sample(t))
	h = start(t, d, state, nil)
	eventually(t, func() bool { ms := inbox(t, d); return len(ms) == 3 && ms[2].Seen() }, "third seen")
	h.noEmit(t, 50*time.Millisecond)
}

func TestUnparseableAndForeignMails(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	bad := mail("SBD Msg From Unit: 300234010000020", "Hello, no fields here\n", nil)
	d.Deliver("INBOX", mail("Re: SBD Msg From Unit: 300234010000020", "thanks\n", nil))
	d.Deliver("INBOX", bad)
	h := start(t, d, t.TempDir(), nil)
	e := h.next(t)
	if !bytes.Equal(bytes.ReplaceAll(e.frame.Payload, []byte("\r\n"), []byte("\n")), bytes.ReplaceAll(bad, []byte("\r\n"), []byte("\n"))) ||
		!strings.Contains(e.frame.Meta["parse_error"], "MOMSN") || e.frame.Identity != "300234010000020" {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- &adapters.RejectedError{Reason: "parse error"}
	eventually(t, func() bool { ms := inbox(t, d); return len(ms) == 2 && ms[1].Seen() }, "bad mail seen")
	h.waitScans(t, 2)
	h.noEmit(t, 50*time.Millisecond)
	if ms := inbox(t, d); ms[0].Seen() {
		t.Error("the reply was marked seen")
	}
}

func TestTooLargeReportedWithoutPayload(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	big := mail("SBD Msg From Unit: 300234010000020",
		"MOMSN: 1\nTime of Session (UTC): Fri Jul 8 00:12:55 2005\nSession Status: 0\n"+strings.Repeat("x", 5000)+"\n", nil)
	d.Deliver("INBOX", big)
	h := start(t, d, t.TempDir(), func(c *Config) { c.MaxMessageBytes = 4096 })
	e := h.next(t)
	if len(e.frame.Payload) != 0 || !strings.Contains(e.frame.Meta["parse_error"], "max_message_bytes") {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- nil
	eventually(t, func() bool { ms := inbox(t, d); return len(ms) == 1 && ms[0].Seen() }, "seen")
}

// With IDLE a new mail is taken at once, long before the poll interval.
func TestIdleWakesOnNewMail(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	h := start(t, d, t.TempDir(), func(c *Config) { c.PollInterval = time.Hour })
	h.waitScansFrom(t, 0, 1)
	time.Sleep(200 * time.Millisecond) // let IDLE start
	d.Append("INBOX", sample(t))
	e := h.next(t)
	e.reply <- nil
	if string(e.frame.Payload) != samplePayload {
		t.Errorf("frame %+v", e.frame)
	}
}

// The server goes away and comes back; a wrong password heals once the
// file is fixed (it is read at each connect).
func TestReconnect(t *testing.T) {
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := start(t, d, t.TempDir(), func(c *Config) { c.PasswordFile = pw })
	eventually(t, func() bool { return strings.Contains(h.m.Status().Detail, "login") }, "login failure status")
	if h.m.Status().OK {
		t.Error("status OK with a wrong password")
	}
	if err := os.WriteFile(pw, []byte(d.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return h.m.Status().OK }, "connected")

	d.Stop()
	eventually(t, func() bool { return !h.m.Status().OK }, "disconnect noticed")
	d.Deliver("INBOX", sample(t))
	d.Start()
	e := h.next(t)
	e.reply <- nil
	eventually(t, func() bool { ms := inbox(t, d); return len(ms) == 1 && ms[0].Seen() }, "seen after reconnect")
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vigd test imap"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"imap.test"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "vigd-imap-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644)
	return certFile, keyFile
}

func TestTLSModes(t *testing.T) {
	cert, key := selfSigned(t)
	d := testpeers.StartDovecot(t, testpeers.DovecotOptions{TLS: &testpeers.DovecotTLS{CertFile: cert, KeyFile: key}})
	d.Deliver("INBOX", sample(t))
	d.Deliver("INBOX", mail("SBD Msg From Unit: 300234010000030", "MOMSN: 1\nTime of Session (UTC): Fri Jul 8 00:12:55 2005\nSession Status: 0\n", nil))
	state := t.TempDir()
	h := start(t, d, state, func(c *Config) {
		c.Address = d.TLSAddr()
		c.TLS = TLSConfig{Mode: TLSImplicit, CAFile: cert}
	})
	h.next(t).reply <- nil
	h.stop()
	h = start(t, d, state, func(c *Config) {
		c.TLS = TLSConfig{Mode: TLSStart, CAFile: cert, ServerName: "imap.test"}
	})
	e := h.next(t)
	if e.frame.Meta["momsn"] != "1" {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- nil
	eventually(t, func() bool {
		ms := inbox(t, d)
		return len(ms) == 2 && ms[0].Seen() && ms[1].Seen()
	}, "both seen")
	h.stop()
	// An unknown CA is refused.
	h = start(t, d, state, func(c *Config) {
		c.Address = d.TLSAddr()
		c.TLS = TLSConfig{Mode: TLSImplicit}
	})
	eventually(t, func() bool { return strings.Contains(h.m.Status().Detail, "certificate") }, "certificate error")
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.Address, c.Username, c.PasswordFile = "imap.example.org:993", "u", "/p"
	if err := c.Validate(); err != nil {
		t.Fatalf("valid: %v", err)
	}
	c = DefaultConfig()
	c.Address = "x"
	c.TLS.Mode = "ssl"
	c.Folder = " "
	c.PollInterval = time.Millisecond
	c.OnSuccess = OnSuccessMove
	c.BatchSize = 0
	c.MaxMessageBytes = 10
	c.Timeout = 0
	c.DedupSize = 0
	var fields []string
	for _, e := range c.Validate().(interface{ Unwrap() []error }).Unwrap() {
		var fe *adapters.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a FieldError", e)
		}
		fields = append(fields, fe.Field)
	}
	want := "address tls.mode username password_file folder poll_interval move_to batch_size max_message_bytes timeout dedup_size"
	if got := strings.Join(fields, " "); got != want {
		t.Errorf("fields %s\nwant   %s", got, want)
	}
	if _, ok := adapters.Lookup("sbdmail"); !ok {
		t.Error("kind not registered")
	}
}
