package hostile

import (
	"bytes"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/testpeers"
)

// rockblockBody is a RockBLOCK HTTP_JSON post carrying payload, signed
// with key (no JWT when key is nil).
func rockblockBody(t *testing.T, key *rsa.PrivateKey, momsn int, payload string) []byte {
	t.Helper()
	fields := map[string]string{
		"imei": "300434010000040", "momsn": fmt.Sprint(momsn), "transmit_time": "23-09-05 04:33:24",
		"iridium_latitude": "75.0001", "iridium_longitude": "154.1209", "iridium_cep": "3.0",
		"serial": "14331", "device_type": "ROCKBLOCK", "data": hex.EncodeToString([]byte(payload)),
	}
	body := map[string]any{}
	for k, v := range fields {
		body[k] = v
	}
	if key != nil {
		c := jwt.MapClaims{"iss": "Rock 7", "iat": time.Now().Unix()}
		for k, v := range fields {
			c[k] = v
		}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		body["JWT"] = tok
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func postWith(t *testing.T, client *http.Client, url, ctype string, body []byte, hdr map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// Forged and unsigned posts get 401/403 and are counted in /metrics;
// nothing of theirs reaches the simulator, while the genuine posts next to
// them are delivered. RockBLOCK: a missing JWT is 401, a JWT signed by
// another key 403. HTTP ingest: no bearer token, a wrong one, no HMAC
// signature, a signature with the wrong secret — all 401.
func TestForgedPostsRefusedAndCounted(t *testing.T) {
	e := newEnv(t)
	e.startSim()
	httpAddr := testpeers.FreeAddr(t)
	rbAddr, bearerAddr, hmacAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	rbKey, pub := e.rsaKey("rockblock.pem")
	forger, _ := e.rsaKey("forger.pem")
	const token = "dev-token-0123456789abcdef"
	tokens := e.write("tokens", "dev "+token+"\n", 0o600)
	const ingestSecret = "ingest-hmac-secret-42"
	ingestSecretFile := e.write("ingest-secret", ingestSecret+"\n", 0o600)
	cfg := e.baseConfig(httpAddr, "debug") + fmt.Sprintf(`adapters:
  - name: rb
    kind: rockblock
    decoder: counter
    customer_id: c1
    listen: %s
    public_key_file: %s
  - name: bearer
    kind: http
    decoder: counter
    customer_id: c1
    listen: %s
    device_id: none
    auth:
      mode: bearer
      tokens_file: %s
  - name: signed
    kind: http
    decoder: counter
    customer_id: c1
    listen: %s
    device_id: none
    auth:
      mode: hmac
      services:
        field-gw: %s
`, rbAddr, pub, bearerAddr, tokens, hmacAddr, ingestSecretFile)
	d := e.startVigd(cfg, httpAddr)

	// RockBLOCK.
	rbURL := "http://" + rbAddr + "/rockblock"
	if code := postWith(t, httpc, rbURL, "application/json", rockblockBody(t, nil, 1, "rb-x,1,1"), nil); code != http.StatusUnauthorized {
		t.Errorf("rockblock post without a JWT: %d, want 401", code)
	}
	if code := postWith(t, httpc, rbURL, "application/json", rockblockBody(t, forger, 2, "rb-x,2,2"), nil); code != http.StatusForbidden {
		t.Errorf("rockblock post with a forged JWT: %d, want 403", code)
	}
	if code := postWith(t, httpc, rbURL, "application/json", rockblockBody(t, rbKey, 3, "rb-1,3,3"), nil); code != http.StatusOK {
		t.Errorf("genuine rockblock post: %d, want 200", code)
	}

	// HTTP ingest with bearer tokens.
	bURL := "http://" + bearerAddr + "/ingest"
	for name, hdr := range map[string]map[string]string{
		"no token":    nil,
		"wrong token": {"Authorization": "Bearer forged-token-0123456789"},
		"basic auth":  {"Authorization": "Basic ZGV2OmRldi10b2tlbg=="},
	} {
		if code := postWith(t, httpc, bURL, "text/plain", []byte("in-x,1,1"), hdr); code != http.StatusUnauthorized {
			t.Errorf("http ingest, %s: %d, want 401", name, code)
		}
	}
	if code := postWith(t, httpc, bURL, "text/plain", []byte("in-1,4,4"), map[string]string{"Authorization": "Bearer " + token}); code != http.StatusAccepted {
		t.Errorf("http ingest with the token: %d, want 202", code)
	}

	// HTTP ingest with HMAC signatures.
	sURL := "http://" + hmacAddr + "/ingest"
	signed := func(secret string) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &signer.Transport{
			Base: httpc.Transport, Config: signer.DefaultConfig(), ServiceID: "field-gw", Secret: signer.NewSecret(secret)}}
	}
	if code := postWith(t, httpc, sURL, "text/plain", []byte("sg-x,1,1"), nil); code != http.StatusUnauthorized {
		t.Errorf("http ingest (hmac), unsigned: %d, want 401", code)
	}
	if code := postWith(t, signed("not-the-secret"), sURL, "text/plain", []byte("sg-x,2,2"), nil); code != http.StatusUnauthorized {
		t.Errorf("http ingest (hmac), wrong secret: %d, want 401", code)
	}
	if code := postWith(t, signed(ingestSecret), sURL, "text/plain", []byte("sg-1,5,5"), nil); code != http.StatusAccepted {
		t.Errorf("http ingest (hmac), signed: %d, want 202", code)
	}

	// Counted.
	for _, c := range []struct {
		what   string
		name   string
		labels map[string]string
		want   float64
	}{
		{"rockblock refusals", "vigd_iridium_errors_total", map[string]string{"adapter": "rb", "reason": "auth"}, 2},
		{"rockblock frames", "vigd_iridium_frames_total", map[string]string{"adapter": "rb"}, 1},
		{"bearer 401s", "vigd_http_ingest_requests_total", map[string]string{"adapter": "bearer", "code": "401"}, 3},
		{"bearer 202s", "vigd_http_ingest_requests_total", map[string]string{"adapter": "bearer", "code": "202"}, 1},
		{"hmac 401s", "vigd_http_ingest_requests_total", map[string]string{"adapter": "signed", "code": "401"}, 2},
		{"hmac 202s", "vigd_http_ingest_requests_total", map[string]string{"adapter": "signed", "code": "202"}, 1},
	} {
		if got := d.metric(c.name, c.labels); got != c.want {
			t.Errorf("%s: %s%v = %v, want %v", c.what, c.name, c.labels, got, c.want)
		}
	}
	// Only the genuine three arrive.
	waitUntil(t, "3 observations at the simulator", 10*time.Second, func() bool { return e.accepted() >= 3 })
	time.Sleep(300 * time.Millisecond)
	if got := e.accepted(); got != 3 {
		t.Errorf("simulator holds %d observations, want 3", got)
	}
	// The refusals are logged, without the tokens that were offered.
	log := d.log()
	for _, s := range []string{"forged-token-0123456789", token, ingestSecret, "ZGV2OmRldi10b2tlbg=="} {
		if strings.Contains(log, s) {
			t.Errorf("the log shows %q", s)
		}
	}
	if !strings.Contains(log, "rockblock post refused") {
		t.Error("rockblock refusals not logged")
	}
}
