package hostile

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
)

// A full run at trace level (every log line there is) with every kind of
// secret configured and used — the API secret (first refused by the
// eventstore, then accepted), an MQTT password (Mosquitto), an IMAP
// password (Dovecot), HTTP ingest bearer tokens and an HMAC secret (with
// forged attempts), an ORBCOMM access id and password (the gateway first
// answering 500 with the query string echoed back) — and then every log
// line, /metrics and `vigd check` are searched for each secret: none may
// appear. RockBLOCK holds no secret (a public key), so it is not here.
func TestNoSecretInLogsMetricsOrCheck(t *testing.T) {
	mosqPasswd := testpeers.Require(t, "mosquitto_passwd", "mosquitto")
	e := newEnv(t)
	secrets := map[string]string{"api secret": e.secret}

	// MQTT with a password.
	mqttPass := "mqtt-pw-" + randHex(t, 8)
	secrets["mqtt password"] = mqttPass
	mqttPassFile := e.write("mqtt-password", mqttPass+"\n", 0o600)
	mosqUsers := filepath.Join(e.dir, "mosquitto-users")
	if out, err := exec.Command(mosqPasswd, "-b", "-c", mosqUsers, "vigd", mqttPass).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	_ = os.Chmod(mosqUsers, 0o644)
	broker := testpeers.StartMosquitto(t, testpeers.MosquittoOptions{NoAnonymous: true, Config: []string{"password_file " + mosqUsers}})

	// IMAP.
	imap := testpeers.StartDovecot(t, testpeers.DovecotOptions{})
	secrets["imap password"] = imap.Password

	// HTTP ingest.
	const token = "ingest-token-" + "0123456789abcdef"
	secrets["ingest token"] = token
	tokens := e.write("tokens", "dev "+token+"\n", 0o600)
	ingestSecret := "ingest-hmac-" + randHex(t, 8)
	secrets["ingest hmac secret"] = ingestSecret
	ingestSecretFile := e.write("ingest-secret", ingestSecret+"\n", 0o600)

	// ORBCOMM: a gateway that first fails, echoing what it was sent.
	orbPass := "orb-pw-" + randHex(t, 8)
	orbAccess := "orb-access-" + randHex(t, 6)
	secrets["orbcomm password"], secrets["orbcomm access id"] = orbPass, orbAccess
	orbPassFile := e.write("orbcomm-password", orbPass+"\n", 0o600)
	var orbCalls atomic.Int64
	orb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if orbCalls.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "internal error handling %s (access_id=%s)", r.URL.String(), r.URL.Query().Get("access_id"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ErrorID":0,"More":false,"NextStartUTC":"","NextStartID":-1,"Messages":null}`)
	}))
	defer orb.Close()

	// Phase 1: the eventstore refuses the signature (it knows another
	// secret): the forwarder's error paths log.
	wrong := sim.StartTest(t, sim.Config{DataDir: filepath.Join(e.dir, "wrong-sim"),
		Services: map[string]signer.Secret{serviceID: signer.NewSecret("not-" + e.secret)}})
	e.simURL = wrong.URL()
	e.simClient = &sim.Client{BaseURL: e.simURL, HTTP: httpc}
	httpAddr, tcpAddr, ingestAddr, hmacAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t), testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	adapters := fmt.Sprintf(`adapters:
  - name: lines
    kind: tcp
    decoder: counter
    customer_id: c1
    listen: %s
    identity: payload
    reply: "ACK\n"
  - name: broker
    kind: mqtt
    decoder: counter
    customer_id: c1
    brokers: [%s]
    username: vigd
    password_file: %s
    topics: [{topic: devices/+/up, qos: 1, identity: {segment: 1}}]
  - name: mail
    kind: sbdmail
    customer_id: c1
    address: %s
    tls: {mode: none}
    username: %s
    password_file: %s
    idle: false
    poll_interval: 200ms
  - name: ingest
    kind: http
    decoder: counter
    customer_id: c1
    listen: %s
    device_id: none
    auth: {mode: bearer, tokens_file: %s}
  - name: signed
    kind: http
    decoder: counter
    customer_id: c1
    listen: %s
    device_id: none
    auth:
      mode: hmac
      services: {field-gw: %s}
  - name: orb
    kind: orbcomm
    customer_id: c1
    url: %s/GLGW/2/RestMessages.svc/JSON/get_return_messages/
    access_id: %s
    password_file: %s
    poll_interval: 200ms
    calls_per_minute: 600
    retry_min: 100ms
    retry_max: 200ms
`, tcpAddr, broker.URL(), mqttPassFile, imap.Addr(), imap.User, imap.PasswordFile,
		ingestAddr, tokens, hmacAddr, ingestSecretFile, orb.URL, orbAccess, orbPassFile)
	config := func() string {
		b := e.baseConfig(httpAddr, "trace")
		return b + adapters
	}
	d := e.startVigd(config(), httpAddr)
	dev, err := dialFrom("127.0.0.1", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := sendLines(dev, "tcp-1,1,1"); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	waitUntil(t, "the eventstore's 401 in the log", 10*time.Second, func() bool {
		return strings.Contains(d.log(), `"status":401`) || strings.Contains(d.log(), "401")
	})
	d.stop()

	// Phase 2: the right eventstore; every input used, with forgeries.
	e.startSim()
	d = e.startVigd(config(), httpAddr)
	dev, err = dialFrom("127.0.0.1", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := sendLines(dev, "tcp-1,2,2"); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	pub := exec.Command(testpeers.Require(t, "mosquitto_pub", "mosquitto-clients"), "-h", "127.0.0.1", "-p", fmt.Sprint(broker.Port),
		"-u", "vigd", "-P", mqttPass, "-q", "1", "-t", "devices/mq-1/up", "-m", "mq-1,3,3")
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	for _, p := range []struct {
		url  string
		hdr  map[string]string
		c    *http.Client
		want int
	}{
		{"http://" + ingestAddr + "/ingest", map[string]string{"Authorization": "Bearer " + token}, httpc, 202},
		{"http://" + ingestAddr + "/ingest", map[string]string{"Authorization": "Bearer " + token[:len(token)-1] + "X"}, httpc, 401},
		{"http://" + hmacAddr + "/ingest", nil, &http.Client{Transport: &signer.Transport{Base: httpc.Transport, Config: signer.DefaultConfig(),
			ServiceID: "field-gw", Secret: signer.NewSecret(ingestSecret)}}, 202},
		{"http://" + hmacAddr + "/ingest", nil, &http.Client{Transport: &signer.Transport{Base: httpc.Transport, Config: signer.DefaultConfig(),
			ServiceID: "field-gw", Secret: signer.NewSecret(ingestSecret + "x")}}, 401},
	} {
		if code := postWith(t, p.c, p.url, "text/plain", []byte(fmt.Sprintf("in-%d,4,4", p.want)), p.hdr); code != p.want {
			t.Errorf("POST %s: %d, want %d", p.url, code, p.want)
		}
	}
	if sd := testpeers.SharedDir(); sd != "" {
		if b, err := os.ReadFile(filepath.Join(sd, "samples", "email_mo_with_location.eml")); err == nil {
			imap.Deliver("INBOX", b)
			waitUntil(t, "the SBD mail taken", 15*time.Second, func() bool {
				ms := imap.Messages("INBOX")
				return len(ms) == 1 && ms[0].Seen()
			})
		}
	}
	// The first tcp line (queued in phase 1), the new one, MQTT, two
	// ingest posts.
	waitUntil(t, "5 observations at the simulator", 15*time.Second, func() bool { return e.accepted() >= 5 })
	waitUntil(t, "two ORBCOMM calls", 10*time.Second, func() bool { return orbCalls.Load() >= 2 })
	_, metrics := d.get("/metrics")
	d.stop()

	bin := testpeers.Binary(t, "vigd")
	check, _ := exec.Command(bin, "check", "-c", filepath.Join(e.dir, "vigd.yaml")).CombinedOutput()

	log := d.log()
	// The paths that could leak did run: the eventstore's 401, the
	// ORBCOMM error with the query echoed back (redacted).
	for _, want := range []string{"INVALID_SIGNATURE", "access_id=[redacted]", "imap connecting"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log has no %q: the test did not exercise that path", want)
		}
	}
	lines := strings.Count(log, "\n")
	if lines < 50 {
		t.Fatalf("only %d log lines: is the level trace?", lines)
	}
	for what, s := range secrets {
		for place, text := range map[string]string{"log": log, "/metrics": metrics, "vigd check": string(check)} {
			for _, form := range []string{s, url.QueryEscape(s)} {
				if i := strings.Index(text, form); i >= 0 {
					line := text[max(0, strings.LastIndex(text[:i], "\n")+1):]
					if j := strings.IndexByte(line, '\n'); j >= 0 {
						line = line[:j]
					}
					t.Errorf("%s shows the %s: %s", place, what, bytes.ReplaceAll([]byte(line), []byte(s), []byte("<SECRET>")))
				}
			}
		}
	}
	t.Logf("%d log lines at trace level, %d bytes of /metrics, `vigd check` %q: no secret in any (%d secrets searched)",
		lines, len(metrics), strings.TrimSpace(string(check)), len(secrets))
}

// A secret file every user can read is named in a warning at every start
// and by `vigd check`, without its content.
func TestWorldReadableSecretWarned(t *testing.T) {
	e := newEnv(t)
	e.startSim()
	if err := os.Chmod(e.secretFile, 0o644); err != nil {
		t.Fatal(err)
	}
	httpAddr := testpeers.FreeAddr(t)
	d := e.startVigd(e.baseConfig(httpAddr, "info")+fmt.Sprintf(`adapters:
  - name: lines
    kind: tcp
    decoder: counter
    listen: %s
`, testpeers.FreeAddr(t)), httpAddr)
	d.stop()
	warned := logLines(d.log(), "secret file readable by every user")
	if len(warned) != 1 || warned[0]["level"] != "warning" || warned[0]["file"] != e.secretFile || warned[0]["key"] != "forwarder.secret_file" {
		t.Fatalf("start warnings %v", warned)
	}
	out, err := exec.Command(testpeers.Binary(t, "vigd"), "check", "-c", filepath.Join(e.dir, "vigd.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("vigd check: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "warning: "+e.secretFile+" (forwarder.secret_file) holds a secret and is readable by every user (mode 0644)") {
		t.Fatalf("vigd check said %q", out)
	}
	if strings.Contains(d.log()+string(out), e.secret) {
		t.Fatal("the secret itself was printed")
	}
}
