package rockblock

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/internal/testpeers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const rbText = "There are 10 types of people who understand binary"

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

// logBuffer collects every log line (to check that tokens never appear).
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type harness struct {
	w    *Webhook
	sink gateSink
	url  string
	logs *logBuffer
	stop func()
}

func start(t *testing.T, stateDir string, mutate func(*Config)) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.PublicKeyFile = testpeers.Sample(t, "rockblock_jwt_public_key.pem")
	if mutate != nil {
		mutate(cfg)
	}
	logs := &logBuffer{}
	log := logrus.New()
	log.SetOutput(logs)
	log.SetLevel(logrus.TraceLevel)
	w, err := New(fmt.Sprintf("rb-%s-%d", t.Name(), runs.Add(1)), cfg, adapters.Env{Log: logrus.NewEntry(log), StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{w: w, sink: gateSink{ch: make(chan emission)}, logs: logs}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, h.sink) }()
	select {
	case <-w.Listening():
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("webhook did not start")
	}
	h.url = "http://" + w.Addr().String() + cfg.Path
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			http.DefaultClient.CloseIdleConnections()
		})
	}
	t.Cleanup(h.stop)
	return h
}

type result struct {
	code int
	body string
	err  error
}

// post sends asynchronously so the test can act as the sink meanwhile.
func (h *harness) post(ctype string, body []byte) <-chan result {
	out := make(chan result, 1)
	go func() {
		resp, err := http.Post(h.url, ctype, bytes.NewReader(body))
		if err != nil {
			out <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- result{code: resp.StatusCode, body: string(b)}
	}()
	return out
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no HTTP response")
		return result{}
	}
}

func (h *harness) next(t *testing.T) emission {
	t.Helper()
	select {
	case e := <-h.sink.ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no frame emitted")
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

func sampleBody(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(testpeers.Sample(t, "rockblock_webhook.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sampleFields(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(sampleBody(t)))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func formOf(m map[string]any) []byte {
	v := url.Values{}
	for k, x := range m {
		v.Set(k, fmt.Sprint(x))
	}
	return []byte(v.Encode())
}

// checkSample asserts the README's values for the sample message.
func checkSample(t *testing.T, f *adapters.Frame, jwtState string) {
	t.Helper()
	if f.Kind != "rockblock" || f.Identity != "300434010000040" || string(f.Payload) != rbText || f.Offset != -1 {
		t.Errorf("frame %+v", f)
	}
	want := map[string]string{
		"transport": "rockblock", "imei": "300434010000040", "momsn": "66", "transmit_time": "2023-09-05T04:33:24Z",
		"lat": "75.0001", "lon": "154.1209", "cep_km": "3.0", "serial": "14331", "device_type": "ROCKBLOCK", "jwt": jwtState,
	}
	for k, v := range want {
		if f.Meta[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, f.Meta[k], v)
		}
	}
	if len(f.Meta) != len(want) {
		t.Errorf("meta %v", f.Meta)
	}
}

// The real Ground Control key must not verify the sample's token (its
// signature was removed).
func TestSampleJWTRejectedWhenRequired(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	for _, tc := range []struct {
		ctype string
		body  []byte
	}{{"application/json", sampleBody(t)}, {"application/x-www-form-urlencoded", formOf(sampleFields(t))}} {
		r := wait(t, h.post(tc.ctype, tc.body))
		if r.code != http.StatusForbidden {
			t.Errorf("%s: status %d", tc.ctype, r.code)
		}
	}
	h.noEmit(t, 50*time.Millisecond)
	token := sampleFields(t)["JWT"].(string)
	logs := h.logs.String()
	if !strings.Contains(logs, "no valid jwt") || !strings.Contains(logs, "level=warning") {
		t.Errorf("refusal not logged at warn: %s", logs)
	}
	if strings.Contains(logs, token[:40]) || strings.Contains(logs, "SIGNATURE-REMOVED") {
		t.Error("token written to the log")
	}
	if counter(h.w.metrics.Frames) != 0 {
		t.Error("frame counted")
	}
}

func TestSampleAcceptedWhenJWTNotRequired(t *testing.T) {
	h := start(t, t.TempDir(), func(c *Config) { c.RequireJWT = false })
	for i, tc := range []struct {
		ctype string
		body  []byte
	}{{"application/json", sampleBody(t)}, {"application/x-www-form-urlencoded", formOf(sampleFields(t))}} {
		res := h.post(tc.ctype, tc.body)
		if i == 1 {
			// Same (imei, momsn, transmit_time): a duplicate, 200 at once.
			if r := wait(t, res); r.code != http.StatusOK {
				t.Errorf("duplicate: %d", r.code)
			}
			continue
		}
		e := h.next(t)
		checkSample(t, e.frame, JWTInvalid)
		e.reply <- nil
		if r := wait(t, res); r.code != http.StatusOK {
			t.Errorf("status %d %s", r.code, r.body)
		}
	}
	h.noEmit(t, 50*time.Millisecond)
	if !strings.Contains(h.logs.String(), "accepted without a valid jwt") {
		t.Error("no warning logged")
	}
	if counter(h.w.metrics.Duplicates) != 1 {
		t.Errorf("duplicates %v", counter(h.w.metrics.Duplicates))
	}
}

// signer is an RSA key of our own, configured as the public key.
type signer struct {
	key     *rsa.PrivateKey
	pubFile string
}

// testKeys are generated once per test binary (RSA generation is slow
// under -race); newSigner hands them out in turn.
var (
	testKeys = sync.OnceValue(func() []*rsa.PrivateKey {
		var ks []*rsa.PrivateKey
		for range 2 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			ks = append(ks, k)
		}
		return ks
	})
	signers atomic.Int64
)

func newSigner(t *testing.T) *signer {
	t.Helper()
	k := testKeys()[signers.Add(1)%2]
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &signer{key: k, pubFile: p}
}

// sign makes a token the way RockBLOCK does: RS256, iss "Rock 7", iat, and
// every field as a string.
func (s *signer) sign(t *testing.T, fields map[string]string, mutate func(jwt.MapClaims)) string {
	t.Helper()
	c := jwt.MapClaims{"iss": "Rock 7", "iat": 1693888475}
	for k, v := range fields {
		c[k] = v
	}
	if mutate != nil {
		mutate(c)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, c).SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var signedFields = map[string]string{
	"imei": "300434010000040", "momsn": "66", "transmit_time": "23-09-05 04:33:24",
	"iridium_latitude": "75.0001", "iridium_longitude": "154.1209", "iridium_cep": "3.0",
	"serial": "14331", "device_type": "ROCKBLOCK",
	"data": "546865726520617265203130207479706573206f662070656f706c652077686f20756e6465727374616e642062696e617279",
}

// A token we sign verifies, and its claims win over the unsigned body.
func TestOwnJWTVerifiesAndClaimsWin(t *testing.T) {
	s := newSigner(t)
	h := start(t, t.TempDir(), func(c *Config) { c.PublicKeyFile = s.pubFile })
	tok := s.sign(t, signedFields, nil)
	// Body fields disagree with the claims everywhere.
	form := url.Values{
		"imei": {"300434010000999"}, "momsn": {"1"}, "transmit_time": {"20-01-01 00:00:00"},
		"iridium_latitude": {"1"}, "iridium_longitude": {"2"}, "iridium_cep": {"99"},
		"serial": {"1"}, "device_type": {"FAKE"}, "data": {"00"}, "JWT": {tok},
	}
	res := h.post("application/x-www-form-urlencoded", []byte(form.Encode()))
	e := h.next(t)
	checkSample(t, e.frame, JWTValid)
	// 200 only after the sink said durable.
	select {
	case r := <-res:
		t.Fatalf("answered %d before the frame was durable", r.code)
	case <-time.After(150 * time.Millisecond):
	}
	e.reply <- nil
	if r := wait(t, res); r.code != http.StatusOK {
		t.Errorf("status %d", r.code)
	}
	if strings.Contains(h.logs.String(), tok[len(tok)-20:]) {
		t.Error("token logged")
	}

	// JSON with the token and numbers in the body.
	f2 := map[string]string{}
	for k, v := range signedFields {
		f2[k] = v
	}
	f2["momsn"] = "67"
	body, _ := json.Marshal(map[string]any{"momsn": 67, "imei": "300434010000040", "JWT": s.sign(t, f2, nil)})
	res = h.post("application/json", body)
	e = h.next(t)
	if e.frame.Meta["momsn"] != "67" || string(e.frame.Payload) != rbText || e.frame.Meta["jwt"] != JWTValid {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- &adapters.RejectedError{Reason: "unknown device"} // dead-lettered: durable
	if r := wait(t, res); r.code != http.StatusOK {
		t.Errorf("status %d", r.code)
	}
}

func TestJWTFailures(t *testing.T) {
	s := newSigner(t)
	other := newSigner(t)
	h := start(t, t.TempDir(), func(c *Config) { c.PublicKeyFile = s.pubFile })
	hs, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "Rock 7", "imei": "300434010000040"}).
		SignedString([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		token string
		code  int
	}{
		"missing":       {"", http.StatusUnauthorized},
		"other key":     {other.sign(t, signedFields, nil), http.StatusForbidden},
		"HS256":         {hs, http.StatusForbidden},
		"wrong issuer":  {s.sign(t, signedFields, func(c jwt.MapClaims) { c["iss"] = "Mallory" }), http.StatusForbidden},
		"expired":       {s.sign(t, signedFields, func(c jwt.MapClaims) { c["exp"] = 1 }), http.StatusForbidden},
		"garbage":       {"a.b.c", http.StatusForbidden},
		"sample (real)": {sampleFields(t)["JWT"].(string), http.StatusForbidden},
	}
	for name, tc := range cases {
		form := url.Values{}
		for k, v := range signedFields {
			form.Set(k, v)
		}
		if tc.token != "" {
			form.Set("JWT", tc.token)
		}
		if r := wait(t, h.post("application/x-www-form-urlencoded", []byte(form.Encode()))); r.code != tc.code {
			t.Errorf("%s: status %d, want %d", name, r.code, tc.code)
		}
	}
	h.noEmit(t, 50*time.Millisecond)
}

func TestNotDurableIs503AndRedeliveryEmitted(t *testing.T) {
	s := newSigner(t)
	h := start(t, t.TempDir(), func(c *Config) { c.PublicKeyFile = s.pubFile })
	body, _ := json.Marshal(map[string]string{"JWT": s.sign(t, signedFields, nil)})
	res := h.post("application/json", body)
	h.next(t).reply <- errors.New("disk full")
	if r := wait(t, res); r.code != http.StatusServiceUnavailable {
		t.Errorf("status %d", r.code)
	}
	res = h.post("application/json", body)
	h.next(t).reply <- nil
	if r := wait(t, res); r.code != http.StatusOK {
		t.Errorf("redelivery status %d", r.code)
	}
	if r := wait(t, h.post("application/json", body)); r.code != http.StatusOK {
		t.Errorf("duplicate status %d", r.code)
	}
	h.noEmit(t, 50*time.Millisecond)
	if counter(h.w.metrics.Frames) != 1 || counter(h.w.metrics.Duplicates) != 1 {
		t.Errorf("frames %v duplicates %v", counter(h.w.metrics.Frames), counter(h.w.metrics.Duplicates))
	}
}

// Dedup survives a restart on the same state folder.
func TestDedupAcrossRestart(t *testing.T) {
	state := t.TempDir()
	s := newSigner(t)
	body, _ := json.Marshal(map[string]string{"JWT": s.sign(t, signedFields, nil)})
	h := start(t, state, func(c *Config) { c.PublicKeyFile = s.pubFile })
	res := h.post("application/json", body)
	h.next(t).reply <- nil
	if r := wait(t, res); r.code != http.StatusOK {
		t.Fatalf("status %d", r.code)
	}
	h.stop()

	h = start(t, state, func(c *Config) { c.PublicKeyFile = s.pubFile })
	if r := wait(t, h.post("application/json", body)); r.code != http.StatusOK {
		t.Errorf("after restart: status %d", r.code)
	}
	h.noEmit(t, 100*time.Millisecond)
	if counter(h.w.metrics.Duplicates) != 1 {
		t.Errorf("duplicates %v", counter(h.w.metrics.Duplicates))
	}
}

func TestBadFieldsWithValidJWTEmittedRaw(t *testing.T) {
	s := newSigner(t)
	h := start(t, t.TempDir(), func(c *Config) { c.PublicKeyFile = s.pubFile })
	bad := map[string]string{}
	for k, v := range signedFields {
		bad[k] = v
	}
	bad["data"] = "zz"
	form := url.Values{"JWT": {s.sign(t, bad, nil)}}
	raw := []byte(form.Encode())
	res := h.post("application/x-www-form-urlencoded", raw)
	e := h.next(t)
	if !bytes.Equal(e.frame.Payload, raw) || !strings.Contains(e.frame.Meta["parse_error"], "hex") || e.frame.Identity != "300434010000040" {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- &adapters.RejectedError{Reason: "parse error"}
	if r := wait(t, res); r.code != http.StatusOK {
		t.Errorf("status %d", r.code)
	}
}

func TestRequestErrors(t *testing.T) {
	h := start(t, t.TempDir(), func(c *Config) { c.MaxBodyBytes = 1024 })
	if r := wait(t, h.post("application/json", bytes.Repeat([]byte("x"), 2048))); r.code != http.StatusRequestEntityTooLarge {
		t.Errorf("large: %d", r.code)
	}
	if r := wait(t, h.post("application/json", []byte(`{"imei":`))); r.code != http.StatusBadRequest {
		t.Errorf("bad JSON: %d", r.code)
	}
	resp, err := http.Get(h.url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	resp, err = http.Post(strings.TrimSuffix(h.url, "/rockblock")+"/other", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("other path: %d", resp.StatusCode)
	}
	h.noEmit(t, 20*time.Millisecond)
}

// Shutdown while the sink holds a frame: 503, Run returns.
func TestShutdownDuringEmit(t *testing.T) {
	s := newSigner(t)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.PublicKeyFile = s.pubFile
	log := logrus.New()
	log.SetOutput(io.Discard)
	w, err := New("rb-shutdown", cfg, adapters.Env{Log: logrus.NewEntry(log), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sink := gateSink{ch: make(chan emission)}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, sink) }()
	<-w.Listening()
	h := &harness{w: w, sink: sink, url: "http://" + w.Addr().String() + cfg.Path}
	body, _ := json.Marshal(map[string]string{"JWT": s.sign(t, signedFields, nil)})
	res := h.post("application/json", body)
	h.next(t)
	cancel()
	if r := wait(t, res); r.code != http.StatusServiceUnavailable {
		t.Errorf("status %d", r.code)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestRunErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.PublicKeyFile = filepath.Join(t.TempDir(), "missing.pem")
	w, err := New("rb-err", cfg, adapters.Env{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(context.Background(), gateSink{}); err == nil {
		t.Error("Run with a missing key returned nil")
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.PublicKeyFile = "k.pem"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c = DefaultConfig() // require_jwt without a key
	c.Listen = "x"
	c.Path = "rockblock"
	c.MaxBodyBytes = 10
	c.ReadTimeout = 0
	c.TLS.CertFile = "c.pem"
	c.DedupSize = 0
	var fields []string
	for _, e := range c.Validate().(interface{ Unwrap() []error }).Unwrap() {
		var fe *adapters.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a FieldError", e)
		}
		fields = append(fields, fe.Field)
	}
	if got := strings.Join(fields, " "); got != "listen path public_key_file max_body_bytes read_timeout tls dedup_size" {
		t.Errorf("fields %s", got)
	}
	if _, ok := adapters.Lookup("rockblock"); !ok {
		t.Error("kind not registered")
	}
}
