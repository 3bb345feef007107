package ops

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigd/vigd/internal/testpeers"
)

// stream sends numbered frames until stopped; sent is the last seq sent
// and acknowledged.
type stream struct {
	sent atomic.Int64
	err  atomic.Value // error: why it stopped early
	stop chan struct{}
	done chan struct{}
}

func newStream() *stream { return &stream{stop: make(chan struct{}), done: make(chan struct{})} }

func (s *stream) run(send func(seq int) error) {
	go func() {
		defer close(s.done)
		for seq := 1; ; seq++ {
			select {
			case <-s.stop:
				return
			default:
			}
			if err := send(seq); err != nil {
				s.err.Store(err)
				return
			}
			s.sent.Store(int64(seq))
			time.Sleep(5 * time.Millisecond)
		}
	}()
}

func (s *stream) end(t testing.TB) int {
	t.Helper()
	close(s.stop)
	<-s.done
	if err, _ := s.err.Load().(error); err != nil {
		t.Fatalf("stream broke: %v", err)
	}
	return int(s.sent.Load())
}

// TestReloadUnderTraffic streams frames over TCP and MQTT (a real
// Mosquitto with passwords) while the decoder changes three times, the
// second change invalid. Every frame arrives at the simulator; the
// invalid change is refused with its file:line in the log and the running
// decoder stays; the MQTT session and the TCP connection, whose adapters
// did not change, are never dropped; a new adapter starts; the queue is
// not reopened. The same run checks the logs: JSON, levels per component,
// and no secret (the API secret, given as a systemd credential, and the
// MQTT password file's content) on any line.
func TestReloadUnderTraffic(t *testing.T) {
	w := newWorld(t)
	mqttPass := "mq-" + w.secret[:16]
	pubPass := "pub-" + w.secret[16:32]
	pwFile := filepath.Join(w.dir, "mosquitto.passwd")
	passwd := testpeers.Require(t, "mosquitto_passwd", "mosquitto")
	for i, up := range [][2]string{{"vigd", mqttPass}, {"pub", pubPass}} {
		args := []string{"-b", pwFile, up[0], up[1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	broker := testpeers.StartMosquitto(t, testpeers.MosquittoOptions{NoAnonymous: true, Config: []string{"password_file " + pwFile}})
	w.write("mqtt.password", mqttPass+"\n")

	httpAddr, tcpAddr, newAddr := testpeers.FreeAddr(t), testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	mqttAdapter := fmt.Sprintf(`  - name: mqtt-in
    kind: mqtt
    decoder: counter
    customer_id: "c1"
    brokers: [%s]
    client_id: vigd-ops-mqtt
    username: vigd
    password_file: %s
    topics:
      - topic: devices/+/up
        qos: 1
`, broker.URL(), filepath.Join(w.dir, "mqtt.password"))
	logConf := `  level: warn
  format: json
  components:
    daemon: info
    queue: info
    forwarder: debug
    adapter: info`
	c := conf{HTTP: httpAddr, Credential: true, Log: logConf, Adapters: tcpAdapter("devices", tcpAddr) + mqttAdapter}
	cfg := w.writeConfig(c)
	v := w.startVigd(cfg, httpAddr, runOpts{creds: filepath.Join(w.dir, "creds")})
	v.waitReady()
	// QoS 1 messages wait in the broker only for a session that exists.
	waitFor(t, 15*time.Second, "vigd_mqtt_connected{adapter=mqtt-in} = 1", func() bool {
		n, _ := v.scrape(t).get("vigd_mqtt_connected", "adapter", "mqtt-in")
		return n == 1
	})

	// The streams.
	dev := dial(t, tcpAddr)
	tcpStream := newStream()
	tcpStream.run(func(seq int) error {
		r, err := dev.send(csv("tcp1", seq))
		if err == nil && r != "ACK" {
			err = fmt.Errorf("reply %q to seq %d", r, seq)
		}
		return err
	})
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("ops-publisher").
		SetUsername("pub").SetPassword(pubPass).SetAutoReconnect(false).SetConnectRetry(false))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	mqttStream := newStream()
	mqttStream.run(func(seq int) error {
		tok := pub.Publish("devices/mq1/up", 1, false, csv("mq1", seq))
		if !tok.WaitTimeout(10 * time.Second) {
			return fmt.Errorf("publish %d: no PUBACK", seq)
		}
		return tok.Error()
	})
	defer func() {
		select {
		case <-tcpStream.stop:
		default:
			close(tcpStream.stop)
		}
		select {
		case <-mqttStream.stop:
		default:
			close(mqttStream.stop)
		}
		<-tcpStream.done
		<-mqttStream.done
		pub.Disconnect(250)
	}()

	// revSeen waits until both devices have a record with rev.
	revSeen := func(rev int) {
		t.Helper()
		waitFor(t, 20*time.Second, fmt.Sprintf("records with rev %d from both devices", rev), func() bool {
			v.alive()
			var tcp, mq bool
			for _, o := range w.observations(t) {
				tcp = tcp || (o.dev == "tcp1" && o.rev == rev)
				mq = mq || (o.dev == "mq1" && o.rev == rev)
			}
			return tcp && mq
		})
	}
	logCount := func(msg string) int { return strings.Count(v.log(), `"msg":"`+msg+`"`) }
	hup := func() {
		t.Helper()
		if err := v.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	revSeen(1)

	// 1: a valid change.
	w.writeDecoder("2")
	hup()
	waitFor(t, 10*time.Second, "first reload", func() bool { return logCount("reloaded") == 1 })
	revSeen(2)

	// 2: an invalid change: refused, with file:line, the running set stays.
	w.writeDecoder("2 +")
	hup()
	waitFor(t, 10*time.Second, "refused reload", func() bool {
		return strings.Contains(v.log(), "reload refused")
	})
	where := fmt.Sprintf("%s:%d:", filepath.Join(w.decDir, "counter.yaml"), revLine)
	refusal := ""
	for _, l := range strings.Split(v.log(), "\n") {
		if strings.Contains(l, "reload refused") {
			refusal = l
		}
	}
	if !strings.Contains(refusal, where) {
		t.Fatalf("the refusal does not name %s:\n%s", where, refusal)
	}
	mark := int(tcpStream.sent.Load())
	waitFor(t, 10*time.Second, "more tcp records after the refusal", func() bool {
		for _, o := range w.observations(t) {
			if o.dev == "tcp1" && o.seq > mark+10 {
				return true
			}
		}
		return false
	})
	for _, o := range w.observations(t) {
		if o.rev > 2 || o.rev < 1 {
			t.Fatalf("a record with rev %d after the refused reload", o.rev)
		}
	}

	// 3: a valid change, and a new adapter beside the running ones.
	w.writeDecoder("3")
	c.Adapters += tcpAdapter("tcp-new", newAddr)
	w.writeConfig(c)
	hup()
	waitFor(t, 10*time.Second, "third reload", func() bool { return logCount("reloaded") == 2 })
	revSeen(3)
	nd := dial(t, newAddr)
	nd.mustSend(t, csv("new1", 1), "ACK")
	nd.mustSend(t, "not a counter line", "NAK")

	// Stop the streams: every frame sent must arrive.
	nTCP, nMQTT := tcpStream.end(t), mqttStream.end(t)
	pub.Disconnect(250)
	t.Logf("sent %d frames over TCP, %d over MQTT, across 3 reloads", nTCP, nMQTT)
	waitFor(t, 30*time.Second, "every frame at the simulator", func() bool {
		all := w.observations(t)
		return len(missing(seqsOf(all, "tcp1"), nTCP)) == 0 && len(missing(seqsOf(all, "mq1"), nMQTT)) == 0 &&
			len(seqsOf(all, "new1")) == 1
	})
	all := w.observations(t)
	// TCP frames go one at a time: the revision never goes back.
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	revs := map[string]map[int]bool{"tcp1": {}, "mq1": {}}
	lastRev := 0
	for _, o := range all {
		if revs[o.dev] != nil {
			revs[o.dev][o.rev] = true
		}
		if o.dev == "tcp1" {
			if o.rev < lastRev {
				t.Errorf("tcp1 seq %d has rev %d after rev %d", o.seq, o.rev, lastRev)
			}
			lastRev = o.rev
		}
	}
	for d, rs := range revs {
		if len(rs) != 3 || !rs[1] || !rs[2] || !rs[3] {
			t.Errorf("%s records with revs %v, want 1, 2 and 3", d, rs)
		}
	}

	// Connections kept, queue untouched.
	m := v.scrape(t)
	if n, _ := m.get("vigd_mqtt_reconnects_total", "adapter", "mqtt-in"); n != 0 {
		t.Errorf("vigd_mqtt_reconnects_total{adapter=mqtt-in} = %v, want 0", n)
	}
	if n := strings.Count(broker.Log(), "as vigd-ops-mqtt"); n != 1 {
		t.Errorf("the broker saw vigd connect %d times, want 1:\n%s", n, tail(broker.Log(), 20))
	}
	if n, _ := m.get("vigd_reloads_total", "result", "ok"); n != 2 {
		t.Errorf("vigd_reloads_total{result=ok} = %v, want 2", n)
	}
	if n, _ := m.get("vigd_reloads_total", "result", "refused"); n != 1 {
		t.Errorf("vigd_reloads_total{result=refused} = %v, want 1", n)
	}
	if n := logCount("queue opened"); n != 2 {
		t.Errorf("%d \"queue opened\" lines, want 2 (data and alarms, once)", n)
	}
	if n, _ := m.get("vigd_readiness_check", "check", "adapter/mqtt-in"); n != 1 {
		t.Errorf("vigd_readiness_check{check=adapter/mqtt-in} = %v while connected", n)
	}
	// The adapter's connection state follows the broker.
	broker.Stop()
	waitFor(t, 20*time.Second, "mqtt-in reported down in /metrics", func() bool {
		m := v.scrape(t)
		up, _ := m.get("vigd_readiness_check", "check", "adapter/mqtt-in")
		conn, _ := m.get("vigd_mqtt_connected", "adapter", "mqtt-in")
		ready, _ := m.get("vigd_ready")
		return up == 0 && conn == 0 && ready == 0
	})
	v.stop()

	checkLogs(t, v.log(), map[string]string{"API secret": w.secret, "MQTT password": mqttPass, "publisher password": pubPass})
}

// checkLogs reads every line of a JSON log: each is JSON, none holds a
// secret, and the levels follow log.level warn with components daemon,
// queue and adapter at info and forwarder at debug.
func checkLogs(t *testing.T, log string, secrets map[string]string) {
	t.Helper()
	var n int
	byComp := map[string]map[string]int{}
	for i, line := range strings.Split(strings.TrimRight(log, "\n"), "\n") {
		for what, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("log line %d holds the %s: %s", i+1, what, line)
			}
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Errorf("log line %d is not JSON: %s", i+1, line)
			continue
		}
		n++
		comp, _ := e["component"].(string)
		lvl, _ := e["level"].(string)
		if byComp[comp] == nil {
			byComp[comp] = map[string]int{}
		}
		byComp[comp][lvl]++
		allowed := map[string]bool{"warning": true, "error": true}
		switch comp {
		case "daemon", "queue", "adapter":
			allowed["info"] = true
		case "forwarder":
			allowed["info"], allowed["debug"] = true, true
		}
		if !allowed[lvl] {
			t.Errorf("log line %d: %s at %s passes log.level warn without a component level: %s", i+1, comp, lvl, line)
		}
	}
	t.Logf("%d log lines, by component and level: %v", n, byComp)
	if byComp["forwarder"]["debug"] == 0 {
		t.Error("no debug line from the forwarder although log.components.forwarder is debug")
	}
	for _, c := range []string{"daemon", "queue", "adapter"} {
		if byComp[c]["info"] == 0 {
			t.Errorf("no info line from %s although log.components.%s is info", c, c)
		}
	}
}
