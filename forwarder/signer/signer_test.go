package signer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/testpeers"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type vector struct {
	Name         string `json:"name"`
	Method       string `json:"method"`
	Path         string `json:"path"`
	ContentType  string `json:"content_type"`
	Date         string `json:"date"`
	ServiceID    string `json:"service_id"`
	Secret       string `json:"secret"`
	Body         string `json:"body"`
	ContentMD5   string `json:"content_md5"`
	StringToSign string `json:"string_to_sign"`
	Signature    string `json:"signature"`
	Auth         string `json:"authorization"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	d := testpeers.SharedDir()
	if d == "" {
		if testpeers.InCI() {
			t.Fatal("../shared is missing in CI")
		}
		t.Skip("skipped: ../shared/contract not found beside the repository")
	}
	b, err := os.ReadFile(filepath.Join(d, "contract", "auth-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []vector }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return f.Vectors
}

func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			if got := BodyMD5([]byte(v.Body)); got != v.ContentMD5 {
				t.Errorf("content-md5 = %q, want %q", got, v.ContentMD5)
			}
			date, err := DefaultConfig().ParseDate(v.Date)
			if err != nil {
				t.Fatal(err)
			}
			h, err := Sign(Config{}, v.Method, v.Path, v.ContentType, v.ContentMD5, date, v.ServiceID, NewSecret(v.Secret))
			if err != nil {
				t.Fatal(err)
			}
			if h.StringToSign != v.StringToSign {
				t.Errorf("string to sign\n got %q\nwant %q", h.StringToSign, v.StringToSign)
			}
			if got := Signature(NewSecret(v.Secret), v.StringToSign); got != v.Signature {
				t.Errorf("signature = %q, want %q", got, v.Signature)
			}
			if h.Authorization != v.Auth {
				t.Errorf("authorization = %q, want %q", h.Authorization, v.Auth)
			}
			if h.Date != v.Date || h.ContentMD5 != v.ContentMD5 || h.ContentType != v.ContentType {
				t.Errorf("headers = %+v", h)
			}
			// The server side accepts it at that time.
			ver := &Verifier{
				Lookup: func(id string) (Secret, bool) { return NewSecret(v.Secret), id == v.ServiceID },
				Now:    func() time.Time { return date.Add(time.Minute) },
			}
			id, err := ver.Verify(Request{Method: v.Method, Path: v.Path, ContentType: v.ContentType,
				ContentMD5: v.ContentMD5, Date: v.Date}, v.Auth)
			if err != nil || id != v.ServiceID {
				t.Errorf("verify = %q, %v", id, err)
			}
		})
	}
}

// TestTransportVectors sends each vector through the RoundTripper and checks
// the bytes that arrive.
func TestTransportVectors(t *testing.T) {
	type got struct {
		uri  string
		h    http.Header
		body []byte
	}
	ch := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ch <- got{r.RequestURI, r.Header.Clone(), b}
	}))
	defer srv.Close()
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			date, _ := DefaultConfig().ParseDate(v.Date)
			tr := &Transport{Base: srv.Client().Transport, ServiceID: v.ServiceID,
				Secret: NewSecret(v.Secret), Now: func() time.Time { return date.In(time.FixedZone("X", 3600)) }}
			var body io.Reader
			if v.Body != "" {
				body = strings.NewReader(v.Body)
			}
			req, _ := http.NewRequest(v.Method, srv.URL+v.Path, body)
			if v.ContentType != "" {
				req.Header.Set("Content-Type", v.ContentType)
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			g := <-ch
			if g.uri != v.Path || string(g.body) != v.Body {
				t.Errorf("uri %q body %q", g.uri, g.body)
			}
			for k, want := range map[string]string{"Date": v.Date, "Content-MD5": v.ContentMD5,
				"Content-Type": v.ContentType, "Authorization": v.Auth} {
				if g.h.Get(k) != want {
					t.Errorf("%s = %q, want %q", k, g.h.Get(k), want)
				}
			}
			if req.Header.Get("Authorization") != "" {
				t.Error("caller's request was modified")
			}
		})
	}
}

func TestLayoutAndDateFormatHonoured(t *testing.T) {
	cfg := Config{Lines: []string{"date", "path", "method"}, DateFormat: http.TimeFormat}
	date := time.Date(2026, 12, 3, 17, 21, 27, 0, time.FixedZone("CET", 3600))
	h, err := Sign(cfg, "POST", "/p?q=1", "application/json", "md5==", date, "svc", NewSecret("k"))
	if err != nil {
		t.Fatal(err)
	}
	wantSTS := "Thu, 03 Dec 2026 16:21:27 GMT\n/p?q=1\nPOST"
	if h.StringToSign != wantSTS || h.Date != "Thu, 03 Dec 2026 16:21:27 GMT" {
		t.Fatalf("sts %q date %q", h.StringToSign, h.Date)
	}
	if want := Authorization("svc", Signature(NewSecret("k"), wantSTS)); h.Authorization != want {
		t.Fatalf("auth %q want %q", h.Authorization, want)
	}
	// Same inputs under the default layout sign differently.
	d, _ := Sign(Config{}, "POST", "/p?q=1", "application/json", "md5==", date, "svc", NewSecret("k"))
	if d.Authorization == h.Authorization || d.Date != "2026-12-03T16:21:27Z" {
		t.Fatalf("default %+v", d)
	}
	// The verifier with the same config accepts; with the default config it
	// cannot even read the date.
	v := &Verifier{Config: cfg, Lookup: func(string) (Secret, bool) { return NewSecret("k"), true },
		Now: func() time.Time { return date }}
	r := Request{Method: "POST", Path: "/p?q=1", ContentType: "application/json", ContentMD5: "md5==", Date: h.Date}
	if _, err := v.Verify(r, h.Authorization); err != nil {
		t.Fatal(err)
	}
	v.Config = Config{}
	if _, err := v.Verify(r, h.Authorization); !errors.Is(err, ErrMalformed) {
		t.Fatalf("default config: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]Config{
		"unknown line": {Lines: []string{"method", "body"}},
		"repeated":     {Lines: []string{"method", "method"}},
		"no seconds":   {DateFormat: "2006-01-02"},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := Sign(c, "GET", "/", "", "", time.Now(), "s", NewSecret("k")); err == nil {
			t.Errorf("%s: Sign accepted an invalid config", name)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRejects(t *testing.T) {
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	secret := NewSecret("s3cr3t-value")
	v := &Verifier{Lookup: func(id string) (Secret, bool) { return secret, id == "svc" },
		Now: func() time.Time { return now }}
	sign := func(id string, s Secret, at time.Time) (Request, string) {
		h, err := Sign(Config{}, "POST", "/x?y=1", "application/json", "abc=", at, id, s)
		if err != nil {
			t.Fatal(err)
		}
		return Request{Method: "POST", Path: "/x?y=1", ContentType: "application/json", ContentMD5: "abc=", Date: h.Date}, h.Authorization
	}
	good, goodAuth := sign("svc", secret, now)
	if id, err := v.Verify(good, goodAuth); err != nil || id != "svc" {
		t.Fatalf("good: %q %v", id, err)
	}
	tampered := good
	tampered.Path = "/x?y=2"
	r14, a14 := sign("svc", secret, now.Add(-14*time.Minute))
	if _, err := v.Verify(r14, a14); err != nil {
		t.Fatalf("14 minutes old: %v", err)
	}
	cases := []struct {
		name string
		req  Request
		auth string
		want error
	}{
		{"wrong secret", good, func() string { _, a := sign("svc", NewSecret("other"), now); return a }(), ErrBadSignature},
		{"tampered path", tampered, goodAuth, ErrBadSignature},
		{"unknown service", good, func() string { _, a := sign("nobody", secret, now); return a }(), ErrUnknownService},
		{"stale past", func() Request { r, _ := sign("svc", secret, now.Add(-16*time.Minute)); return r }(),
			func() string { _, a := sign("svc", secret, now.Add(-16*time.Minute)); return a }(), ErrStaleDate},
		{"stale future", func() Request { r, _ := sign("svc", secret, now.Add(16*time.Minute)); return r }(),
			func() string { _, a := sign("svc", secret, now.Add(16*time.Minute)); return a }(), ErrStaleDate},
		{"no header", good, "", ErrMalformed},
		{"wrong scheme", good, "Bearer abc", ErrMalformed},
		{"no colon", good, "xCloud c3Zj", ErrMalformed},
		{"id not base64", good, "xCloud !!!:sig", ErrMalformed},
		{"bad date", func() Request { r := good; r.Date = "yesterday"; return r }(), goodAuth, ErrMalformed},
		{"no date", func() Request { r := good; r.Date = ""; return r }(), goodAuth, ErrMalformed},
	}
	all := []error{ErrBadSignature, ErrUnknownService, ErrStaleDate, ErrMalformed}
	for _, c := range cases {
		_, err := v.Verify(c.req, c.auth)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
		for _, o := range all {
			if o != c.want && errors.Is(err, o) {
				t.Errorf("%s: also matches %v", c.name, o)
			}
		}
		if err != nil && strings.Contains(err.Error(), secret.Reveal()) {
			t.Errorf("%s: error holds the secret", c.name)
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	const raw = "Sup3r-s3cret-XYZ"
	s := NewSecret(raw)
	type holder struct {
		Name   string
		Secret Secret
		Ptr    *Secret
	}
	h := holder{"x", s, &s}
	outs := []string{s.String(), s.GoString()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j), fmt.Sprint(s), fmt.Sprintln(h))
	for _, o := range outs {
		if strings.Contains(o, raw) || strings.Contains(o, fmt.Sprintf("%x", raw)) ||
			strings.Contains(o, fmt.Sprint([]byte(raw))) {
			t.Errorf("secret leaked: %s", o)
		}
	}
	if !strings.Contains(string(j), `"Secret":"[redacted]"`) {
		t.Errorf("json = %s", j)
	}
	if s.Reveal() != raw {
		t.Fatal("reveal")
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, c := range map[string]struct{ content, want string }{
		"plain":       {"abc", "abc"},
		"newline":     {"abc\n", "abc"},
		"crlf":        {"abc\r\n", "abc"},
		"two newline": {"abc\n\n", "abc\n"},
		"spaces kept": {" abc \n", " abc "},
		"base64 kept": {"c2VjcmV0LWZvci10ZXN0cw==\n", "c2VjcmV0LWZvci10ZXN0cw=="},
	} {
		s, err := LoadSecret(SecretSpec{File: write(name, c.content)})
		if err != nil || s.Reveal() != c.want {
			t.Errorf("%s: %q %v", name, s.Reveal(), err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	write("apisecret", "from-systemd\n")
	s, err := LoadSecret(SecretSpec{Credential: "apisecret"})
	if err != nil || s.Reveal() != "from-systemd" {
		t.Fatalf("credential: %q %v", s.Reveal(), err)
	}

	secretText := "TOPSECRET-do-not-print"
	bad := write("empty", "\n")
	errs := map[string]error{}
	_, errs["both"] = LoadSecret(SecretSpec{File: "x", Credential: "y"})
	_, errs["none"] = LoadSecret(SecretSpec{})
	_, errs["missing"] = LoadSecret(SecretSpec{File: filepath.Join(dir, "nope")})
	_, errs["empty"] = LoadSecret(SecretSpec{File: bad})
	_, errs["slash"] = LoadSecret(SecretSpec{Credential: "../apisecret"})
	_, errs["dir"] = LoadSecret(SecretSpec{File: dir})
	write("apisecret2", secretText)
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	_, errs["nodir"] = LoadSecret(SecretSpec{Credential: "apisecret2"})
	for name, err := range errs {
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if strings.Contains(err.Error(), secretText) || strings.Contains(err.Error(), "from-systemd") {
			t.Errorf("%s: error holds a secret: %v", name, err)
		}
	}
	if !errors.Is(errs["nodir"], ErrNoCredDir) || !errors.Is(errs["empty"], ErrEmptySecret) ||
		!errors.Is(errs["both"], ErrSecretSpec) || !errors.Is(errs["missing"], os.ErrNotExist) {
		t.Errorf("classification: %v", errs)
	}
}

func TestTransportBodies(t *testing.T) {
	var gotMD5, gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotMD5, gotBody = r.Header.Get("Content-MD5"), string(b)
	}))
	defer srv.Close()
	tr := &Transport{Base: srv.Client().Transport, ServiceID: "s", Secret: NewSecret("k")}
	c := &http.Client{Transport: tr}

	// A body with no GetBody is refused rather than consumed.
	req, _ := http.NewRequest("POST", srv.URL+"/a", io.NopCloser(strings.NewReader("x")))
	req.GetBody = nil
	if _, err := c.Do(req); !errors.Is(err, ErrBodyNotReplayable) {
		t.Fatalf("err = %v", err)
	}
	// bytes.Reader: hashed from a replay, sent whole.
	req, _ = http.NewRequest("POST", srv.URL+"/a", bytes.NewReader([]byte("hello")))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotBody != "hello" || gotMD5 != BodyMD5([]byte("hello")) {
		t.Fatalf("body %q md5 %q", gotBody, gotMD5)
	}
	// A caller-set Content-MD5 (e.g. of gzip bytes computed once) is kept and
	// a non-replayable body is then fine.
	req, _ = http.NewRequest("POST", srv.URL+"/a", io.NopCloser(strings.NewReader("zz")))
	req.Header.Set("Content-MD5", BodyMD5([]byte("zz")))
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotBody != "zz" || gotMD5 != BodyMD5([]byte("zz")) {
		t.Fatalf("body %q md5 %q", gotBody, gotMD5)
	}
}
