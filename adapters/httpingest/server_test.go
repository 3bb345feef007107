package httpingest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
)

// 202 comes only once Emit returned nil: while the sink holds the frame,
// the client has no answer.
func TestAcceptedOnlyAfterDurableEmit(t *testing.T) {
	h := start(t, nil)
	payload := []byte("\x00\x01\xfe\xffraw bytes\r\n")
	req := h.post(t, "/pump-7", "application/octet-stream", tokenA, payload)
	// The first byte of the answer (the status line), not only the whole
	// answer, must wait for the sink.
	firstByte := make(chan struct{})
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotFirstResponseByte: func() { close(firstByte) },
	}))
	res := h.do(req)
	e := h.next(t)
	select {
	case <-firstByte:
		t.Fatal("the answer started before the frame was durable")
	case <-time.After(150 * time.Millisecond):
	}
	f := e.frame
	if f.Kind != "http" || f.Adapter != h.s.name || f.Identity != "pump-7" || f.Offset != -1 || f.Decoder != "" || f.Received.IsZero() {
		t.Errorf("frame %+v", f)
	}
	if !bytes.Equal(f.Payload, payload) {
		t.Errorf("payload %q", f.Payload)
	}
	host, _, err := net.SplitHostPort(f.Source)
	if err != nil || host != "127.0.0.1" || f.Meta[MetaRemoteAddr] != f.Source {
		t.Errorf("source %q meta %v", f.Source, f.Meta)
	}
	if f.Meta[MetaContentType] != "application/octet-stream" || f.Meta[MetaAuthName] != "sensor-a" || len(f.Meta) != 3 {
		t.Errorf("meta %v", f.Meta)
	}
	e.reply <- nil
	r := wait(t, res)
	if r.code != http.StatusAccepted || r.answer(t).Status != "ACCEPTED" {
		t.Errorf("answer %d %s", r.code, r.body)
	}
	if value(h.s.m.frames) != 1 || h.requests(202) != 1 {
		t.Errorf("metrics frames %v requests %v", value(h.s.m.frames), h.requests(202))
	}

	// JSON and text with the second token.
	for _, ct := range []string{"application/json", "text/plain; charset=utf-8", "application/vnd.acme+json"} {
		res := h.do(h.post(t, "/pump-8", ct, tokenB, []byte(`{"a":1}`)))
		e := h.next(t)
		if e.frame.Meta[MetaContentType] != ct || e.frame.Meta[MetaAuthName] != "sensor-b" || e.frame.Identity != "pump-8" {
			t.Errorf("%s: meta %v", ct, e.frame.Meta)
		}
		e.reply <- nil
		if r := wait(t, res); r.code != http.StatusAccepted {
			t.Errorf("%s: %d", ct, r.code)
		}
	}
	noSecrets(t, h.logs.String())
}

// A frame the pipeline dead-lettered: 422 with the decoder's message.
func TestRejectedIs422WithReason(t *testing.T) {
	h := start(t, nil)
	res := h.do(h.post(t, "/pump-7", "text/plain", tokenA, []byte("garbage")))
	e := h.next(t)
	e.reply <- &adapters.RejectedError{Reason: `decoder toa5-station: line 1: "garbage" is not a TOA5 header`}
	r := wait(t, res)
	a := r.answer(t)
	if r.code != http.StatusUnprocessableEntity || a.Status != "REJECTED" || a.Error != `decoder toa5-station: line 1: "garbage" is not a TOA5 header` {
		t.Errorf("answer %d %s", r.code, r.body)
	}
	if r.header.Get("Content-Type") != "application/json" {
		t.Errorf("content type %q", r.header.Get("Content-Type"))
	}
	if value(h.s.m.frames) != 1 {
		t.Error("a dead-lettered frame is durable and counts as delivered")
	}
}

// Anything else from Emit (disk full, queue full past emit_timeout): 503
// with Retry-After, nothing claimed.
func TestNotQueuedIs503(t *testing.T) {
	h := start(t, func(c *Config) { c.EmitTimeout = 100 * time.Millisecond; c.RetryAfter = 45 * time.Second })
	res := h.do(h.post(t, "/pump-7", "", tokenA, []byte("x")))
	h.next(t).reply <- errors.New("queue: write segment: no space left on device")
	r := wait(t, res)
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "45" || r.answer(t).Status != "" {
		t.Errorf("answer %d %v %s", r.code, r.header, r.body)
	}
	if !strings.Contains(h.logs.String(), "no space left on device") {
		t.Error("the cause is not logged")
	}

	// The queue stays full past emit_timeout: 503 too.
	start := time.Now()
	res = h.do(h.post(t, "/pump-7", "", tokenA, []byte("y")))
	e := h.next(t) // never answered
	r = wait(t, res)
	if r.code != http.StatusServiceUnavailable {
		t.Errorf("after emit_timeout: %d", r.code)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("answered after %s, before emit_timeout", d)
	}
	_ = e
	if value(h.s.m.frames) != 0 || value(h.s.m.frameErrors.WithLabelValues("not_queued")) != 2 {
		t.Error("metrics")
	}
}

// Without a valid token: 401 and the sink never sees the request; no
// token is ever logged.
func TestUnauthenticatedIs401(t *testing.T) {
	h := start(t, nil)
	wrong := "tZZZZZZZZZZZZZZZZZZZZZZ"
	cases := []struct {
		name string
		auth string
	}{
		{"no header", ""},
		{"wrong token", "Bearer " + wrong},
		{"token prefix", "Bearer " + tokenA[:10]},
		{"token with more", "Bearer " + tokenA + "x"},
		{"basic scheme", "Basic " + tokenA},
		{"bare token", tokenA},
		{"empty bearer", "Bearer "},
	}
	for _, tc := range cases {
		req := h.post(t, "/pump-7", "text/plain", "", []byte("data"))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		r := wait(t, h.do(req))
		if r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != `Bearer realm="vigd"` || r.answer(t).Error != "unauthorized" {
			t.Errorf("%s: %d %v %s", tc.name, r.code, r.header, r.body)
		}
	}
	h.noEmit(t, 50*time.Millisecond)
	// Lower-case scheme is fine (RFC 7235: case-insensitive).
	req := h.post(t, "/pump-7", "text/plain", "", []byte("data"))
	req.Header.Set("Authorization", "bearer "+tokenA)
	res := h.do(req)
	h.next(t).reply <- nil
	if r := wait(t, res); r.code != http.StatusAccepted {
		t.Errorf("lower-case bearer: %d", r.code)
	}
	logs := h.logs.String()
	noSecrets(t, logs, wrong, tokenA[:10])
	if strings.Count(logs, "level=warning") != 1 || !strings.Contains(logs, "not authenticated") {
		t.Errorf("want one warning for the refusals, then debug:\n%s", logs)
	}
	if h.requests(401) != float64(len(cases)) {
		t.Errorf("401 count %v", h.requests(401))
	}
}

func TestBodyLimit413(t *testing.T) {
	h := start(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	big := bytes.Repeat([]byte("a"), 1025)
	r := wait(t, h.do(h.post(t, "/d1", "", tokenA, big)))
	if r.code != http.StatusRequestEntityTooLarge || !strings.Contains(r.answer(t).Error, "1024") {
		t.Errorf("known length: %d %s", r.code, r.body)
	}
	// Chunked, so the server learns the size only while reading.
	req := h.post(t, "/d1", "", tokenA, nil)
	req.Body = readerOnly{bytes.NewReader(bytes.Repeat([]byte("b"), 5000))}
	req.ContentLength = -1
	r = wait(t, h.do(req))
	if r.code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked: %d %s", r.code, r.body)
	}
	h.noEmit(t, 30*time.Millisecond)
	res := h.do(h.post(t, "/d1", "", tokenA, big[:1024]))
	e := h.next(t)
	if len(e.frame.Payload) != 1024 {
		t.Errorf("payload %d bytes", len(e.frame.Payload))
	}
	e.reply <- nil
	if r := wait(t, res); r.code != http.StatusAccepted {
		t.Errorf("at the limit: %d", r.code)
	}
	if value(h.s.m.frameErrors.WithLabelValues("too_large")) != 2 {
		t.Error("too_large not counted")
	}
}

type readerOnly struct{ r *bytes.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }
func (readerOnly) Close() error                 { return nil }

// Requests the adapter refuses before the sink: 4xx with a message.
func TestRequestErrors(t *testing.T) {
	h := start(t, func(c *Config) { c.AllowedDecoders = []string{"nmea-gps", "firmware-update"} })
	cases := []struct {
		name, method, suffix, ctype string
		body                        string
		code                        int
		msg                         string
	}{
		{"GET", http.MethodGet, "/d1", "", "", 405, "use POST"},
		{"no device id", http.MethodPost, "", "text/plain", "x", 404, "post to /ingest/{deviceId}"},
		{"empty device id", http.MethodPost, "/", "text/plain", "x", 404, "post to /ingest/{deviceId}"},
		{"two segments", http.MethodPost, "/a/b", "text/plain", "x", 404, "post to /ingest/{deviceId}"},
		{"escaped slash", http.MethodPost, "/a%2Fb", "text/plain", "x", 400, "device id must not contain"},
		{"escaped space", http.MethodPost, "/a%20b", "text/plain", "x", 400, "device id must not contain"},
		{"long device id", http.MethodPost, "/" + strings.Repeat("x", 129), "text/plain", "x", 400, "longer than 128"},
		{"form content", http.MethodPost, "/d1", "application/x-www-form-urlencoded", "a=1", 415, "content type must be one of"},
		{"bad content type", http.MethodPost, "/d1", "text/", "x", 415, "content type"},
		{"decoder not allowed", http.MethodPost, "/d1?decoder=toa5-station", "text/plain", "x", 400, `decoder "toa5-station" is not allowed here`},
		{"empty decoder", http.MethodPost, "/d1?decoder=", "text/plain", "x", 400, "not allowed"},
		{"empty body", http.MethodPost, "/d1", "text/plain", "", 400, "empty body"},
	}
	for _, tc := range cases {
		req := h.post(t, tc.suffix, tc.ctype, tokenA, []byte(tc.body))
		req.Method = tc.method
		r := wait(t, h.do(req))
		if r.code != tc.code || !strings.Contains(r.answer(t).Error, tc.msg) {
			t.Errorf("%s: %d %s", tc.name, r.code, r.body)
		}
	}
	h.noEmit(t, 30*time.Millisecond)
	// An allowed decoder and an escaped device id.
	res := h.do(h.post(t, "/FST%40300234?decoder=nmea-gps", "text/plain", tokenA, []byte("$GPGGA")))
	e := h.next(t)
	if e.frame.Decoder != "nmea-gps" || e.frame.Identity != "FST@300234" {
		t.Errorf("frame %+v", e.frame)
	}
	e.reply <- nil
	if r := wait(t, res); r.code != 202 {
		t.Errorf("allowed decoder: %d", r.code)
	}
}

func TestDeviceIDFromHeaderQueryOrNone(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		prepare func(*http.Request)
		want    string
	}{
		{"header:X-Device-Id", func(r *http.Request) { r.Header.Set("X-Device-Id", "pump-9") }, "pump-9"},
		{"query:device", func(r *http.Request) { r.URL.RawQuery = "device=pump-10" }, "pump-10"},
		{"none", func(*http.Request) {}, ""},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			h := start(t, func(c *Config) { c.DeviceID = tc.mode })
			req := h.post(t, "", "application/json", tokenA, []byte(`{"deviceId":"x"}`))
			tc.prepare(req)
			res := h.do(req)
			e := h.next(t)
			if e.frame.Identity != tc.want {
				t.Errorf("identity %q", e.frame.Identity)
			}
			e.reply <- nil
			if r := wait(t, res); r.code != 202 {
				t.Errorf("%d %s", r.code, r.body)
			}
			if tc.mode != "none" {
				r := wait(t, h.do(h.post(t, "", "application/json", tokenA, []byte(`{}`))))
				if r.code != 400 || !strings.Contains(r.answer(t).Error, "(the device id) is missing") {
					t.Errorf("missing id: %d %s", r.code, r.body)
				}
			}
			// The path form is not served in these modes.
			if r := wait(t, h.do(h.post(t, "/pump-1", "application/json", tokenA, []byte(`{}`)))); r.code != 404 {
				t.Errorf("path form: %d", r.code)
			}
		})
	}
}

// With max_in_flight requests in the sink, the next gets 503 at once.
func TestBusyIs503(t *testing.T) {
	h := start(t, func(c *Config) { c.MaxInFlight = 1 })
	first := h.do(h.post(t, "/d1", "", tokenA, []byte("1")))
	e := h.next(t)
	r := wait(t, h.do(h.post(t, "/d2", "", tokenA, []byte("2"))))
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "30" {
		t.Errorf("second: %d %v", r.code, r.header)
	}
	if value(h.s.m.inFlight) != 1 {
		t.Errorf("in flight %v", value(h.s.m.inFlight))
	}
	e.reply <- nil
	if r := wait(t, first); r.code != 202 {
		t.Errorf("first: %d", r.code)
	}
}

// Stopping while a request waits in Emit: the request gets 503 and Run
// returns.
func TestShutdownWhileEmitting(t *testing.T) {
	h := start(t, nil)
	res := h.do(h.post(t, "/d1", "", tokenA, []byte("1")))
	h.next(t) // never answered
	h.stop(t)
	if r := wait(t, res); r.code != http.StatusServiceUnavailable {
		t.Errorf("%d", r.code)
	}
	if st := h.s.Status(); st.OK {
		t.Errorf("status %+v", st)
	}
}

func TestRunFailsOnBadFilesOrTakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"port taken", func(c *Config) { c.Listen = ln.Addr().String() }, "listen on"},
		{"tokens file missing", func(c *Config) { c.Auth.TokensFile = "/nonexistent/tokens" }, "auth.tokens_file"},
		{"short token", func(c *Config) { c.Auth.TokensFile = writeFile(t, "t", "a short\n") }, "shorter than 16"},
		{"token file missing", func(c *Config) {
			c.Auth.TokensFile = ""
			c.Auth.TokenFiles = map[string]string{"a": "/nonexistent/tok"}
		}, "auth.token_files.a"},
		{"hmac secret missing", func(c *Config) {
			c.Auth = AuthConfig{Mode: AuthHMAC, Services: map[string]string{"svc": "/nonexistent/s"}, MaxSkew: time.Minute}
		}, "auth.services.svc"},
		{"tls files missing", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = "/nonexistent/c", "/nonexistent/k" }, "tls"},
	} {
		cfg := DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.Auth.TokensFile = writeFile(t, "tokens", "a "+tokenA+"\n")
		tc.mutate(cfg)
		s, err := New("bad", cfg, adapters.Env{})
		if err != nil {
			t.Fatalf("%s: New: %v", tc.name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.Run(ctx, &chanSink{})
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Run: %v", tc.name, err)
		}
		if s.Status().OK {
			t.Errorf("%s: status OK", tc.name)
		}
	}
}

// Per-token files work beside (or instead of) the tokens file.
func TestTokenFiles(t *testing.T) {
	h := start(t, func(c *Config) {
		c.Auth.TokensFile = ""
		c.Auth.TokenFiles = map[string]string{"logger-3": writeFile(t, "tok", "  tC-0123456789abcdef\n")}
	})
	res := h.do(h.post(t, "/d1", "", "tC-0123456789abcdef", []byte("1")))
	e := h.next(t)
	if e.frame.Meta[MetaAuthName] != "logger-3" {
		t.Errorf("auth_name %q", e.frame.Meta[MetaAuthName])
	}
	e.reply <- nil
	wait(t, res)
	if r := wait(t, h.do(h.post(t, "/d1", "", tokenA, []byte("1")))); r.code != 401 {
		t.Errorf("token of the unused file: %d", r.code)
	}
	noSecrets(t, h.logs.String(), "tC-0123456789abcdef")
}

func TestCheckDeviceID(t *testing.T) {
	for id, ok := range map[string]bool{"pump-7": true, "FST300234030000001": true, "a@b.c": true, "é-unicode": true,
		"": false, "a b": false, "a\tb": false, "a/b": false, "a\x00": false, "\xff": false, strings.Repeat("x", 129): false} {
		if got := checkDeviceID(id) == ""; got != ok {
			t.Errorf("%q: ok %v", id, got)
		}
	}
}
