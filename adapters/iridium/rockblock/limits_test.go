package rockblock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/netguard"
)

// postFrom posts from a given loopback address and returns the status, or
// 0 when the connection was closed without an answer.
func postFrom(t *testing.T, local, url string, body []byte) int {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestAllowedSourcesAndConnectionLimit(t *testing.T) {
	h := start(t, t.TempDir(), func(c *Config) {
		c.AllowedSources = []string{"127.0.0.1"}
		c.MaxConnections = 2
	})
	notAllowed := errorsCounter(h, netguard.RefusedNotAllowed)
	if code := postFrom(t, "127.0.0.9", h.url, sampleBody(t)); code != 0 {
		t.Fatalf("post from a source not allowed answered %d", code)
	}
	if d := errorsCounter(h, netguard.RefusedNotAllowed) - notAllowed; d != 1 {
		t.Fatalf("not_allowed counted %v", d)
	}
	h.noEmit(t, 50*time.Millisecond)

	// Two silent connections take both slots; a third is closed at once.
	addr := h.w.Addr().String()
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(50 * time.Millisecond)
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	_ = c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("third connection not closed")
	}
	// read_timeout frees the held slots (the default is 10s; they are
	// closed here to keep the test short).
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ch := h.post("application/json", sampleBody(t))
		select {
		case e := <-h.sink.ch:
			e.reply <- nil
		case r := <-ch:
			if r.code == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			// The sample has no valid JWT for our key: refused 403, but
			// served.
			if r.code != http.StatusForbidden && r.code != http.StatusOK {
				t.Fatalf("post after the slots were freed: %d %s", r.code, r.body)
			}
		}
		break
	}
}

// errorsCounter reads vigd_iridium_errors_total for this adapter and
// reason from the default registry.
func errorsCounter(h *harness, reason string) float64 {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vigd_iridium_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			lbl := map[string]string{}
			for _, lp := range m.GetLabel() {
				lbl[lp.GetName()] = lp.GetValue()
			}
			if lbl["adapter"] == h.w.name && lbl["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestLimitsConfig(t *testing.T) {
	c := DefaultConfig()
	c.PublicKeyFile = "k.pem"
	if c.MaxConnections != 128 {
		t.Fatalf("default max_connections %d", c.MaxConnections)
	}
	c.AllowedSources = []string{"nope"}
	c.MaxConnections = 0
	err := c.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *adapters.FieldError
		if errors.As(e, &fe) {
			fields = append(fields, fe.Field)
		}
	}
	if strings.Join(fields, " ") != "allowed_sources max_connections" {
		t.Fatalf("fields %v (%v)", fields, err)
	}
}
