package hostile

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/testpeers"
)

// rsaKey makes a key pair and writes the public half as PEM (the key
// RockBLOCK's JWTs are checked with).
func (e *env) rsaKey(name string) (*rsa.PrivateKey, string) {
	e.t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		e.t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return k, e.write(name, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), 0o644)
}

// repeat is an endless stream of one byte, so that a 100 MB body costs
// the test no memory either.
type repeat byte

func (r repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

const hundredMB = 100 << 20

// A 100 MB frame is refused at the limit without vigd's memory following
// it: a line without an end over TCP (skipped, and the next line on the
// same connection is delivered), and 100 MB bodies posted to the RockBLOCK
// webhook and the HTTP ingest endpoint (413 after max_body_bytes). VmRSS is
// sampled every 10ms; the peak is printed and must stay within 32 MB of
// the start.
func TestHugeFramesRefusedAtTheLimit(t *testing.T) {
	e := newEnv(t)
	e.startSim()
	httpAddr := testpeers.FreeAddr(t)
	tcpAddr, rbAddr, inAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	_, pub := e.rsaKey("rockblock.pem")
	const token = "dev-token-0123456789abcdef"
	tokens := e.write("tokens", "dev "+token+"\n", 0o600)
	cfg := e.baseConfig(httpAddr, "info") + fmt.Sprintf(`adapters:
  - name: lines
    kind: tcp
    decoder: counter
    customer_id: c1
    listen: %s
    identity: payload
    reply: "ACK\n"
    reply_rejected: "NAK\n"
  - name: rb
    kind: rockblock
    listen: %s
    public_key_file: %s
  - name: ingest
    kind: http
    decoder: counter
    customer_id: c1
    listen: %s
    device_id: none
    auth:
      mode: bearer
      tokens_file: %s
`, tcpAddr, rbAddr, pub, inAddr, tokens)
	d := e.startVigd(cfg, httpAddr)
	base := rssKB(d.pid())
	w := watchRSS(d.pid())

	// TCP: 100 MB without a line end, then a good line.
	c, err := dialFrom("127.0.0.1", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	began := time.Now()
	_ = c.SetWriteDeadline(time.Now().Add(2 * time.Minute))
	if n, err := io.Copy(c, io.LimitReader(repeat('x'), hundredMB)); err != nil || n != hundredMB {
		t.Fatalf("sent %d bytes: %v", n, err)
	}
	// The end of the huge line gets no answer (it is skipped); the next
	// line on the same connection gets its ACK.
	if _, err := io.WriteString(c, "\npump-9,1,42\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || string(ack) != "ACK\n" {
		t.Fatalf("after the huge line: %q %v", ack, err)
	}
	tcpTime := time.Since(began)
	tooLong := d.metric("vigd_adapter_frame_errors_total", map[string]string{"adapter": "lines", "reason": "too_long"})
	if tooLong != 1 {
		t.Errorf("too_long frames counted %v, want 1", tooLong)
	}
	waitUntil(t, "the line after the huge one at the simulator", 10*time.Second, func() bool { return e.accepted() == 1 })
	tcpPeak := int(w.peak.Load())

	// HTTP: 100 MB posts.
	post := func(url, ctype string, hdr map[string]string) (int, error) {
		req, err := http.NewRequest(http.MethodPost, url, io.LimitReader(repeat('7'), hundredMB))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = hundredMB
		req.Header.Set("Content-Type", ctype)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	rbCode, rbErr := post("http://"+rbAddr+"/rockblock", "application/json", nil)
	inCode, inErr := post("http://"+inAddr+"/ingest", "text/plain", map[string]string{"Authorization": "Bearer " + token})
	peak := w.done()
	// The server answers 413 and closes; the client may see the close
	// before the answer, so the counters are the proof.
	if rbErr == nil && rbCode != http.StatusRequestEntityTooLarge {
		t.Errorf("rockblock answered %d to a 100 MB post", rbCode)
	}
	if inErr == nil && inCode != http.StatusRequestEntityTooLarge {
		t.Errorf("http ingest answered %d to a 100 MB post", inCode)
	}
	if n := d.metric("vigd_iridium_errors_total", map[string]string{"adapter": "rb", "reason": "read"}); n != 1 {
		t.Errorf("rockblock read errors %v, want 1", n)
	}
	if n := d.metric("vigd_http_ingest_requests_total", map[string]string{"adapter": "ingest", "code": "413"}); n != 1 {
		t.Errorf("http ingest 413 answers %v, want 1", n)
	}
	t.Logf("100 MB line over TCP skipped in %v (RSS peak %d kB); 100 MB posts: rockblock %d %v, http ingest %d %v; RSS start %d kB, peak %d kB (+%d kB)",
		tcpTime.Round(time.Millisecond), tcpPeak, rbCode, rbErr, inCode, inErr, base, peak, peak-base)
	if peak > base+32<<10 {
		t.Errorf("RSS peak %d kB is %d kB over the start: the frame limit is 64 KiB", peak, peak-base)
	}
	if got := e.accepted(); got != 1 {
		t.Errorf("simulator holds %d observations, want 1", got)
	}
}
