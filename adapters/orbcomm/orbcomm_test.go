package orbcomm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
)

// Both messages of the sample page arrive with the right payload and Meta,
// the first call starts at start_time with the credentials and
// include_raw_payload, and the next call continues from NextStartID.
func TestSamplePageEmitted(t *testing.T) {
	gw := newGateway(t, step{body: sample(t, "orbcomm_get_return_messages_page1.json")})
	sink := newSink()
	state := t.TempDir()
	h := run(t, testConfig(t, gw.url()), state, sink)
	sink.wait(t, 2)
	gw.waitCalls(t, 2)
	h.stop(t)

	fs := sink.all()
	if len(fs) != 2 {
		t.Fatalf("%d frames", len(fs))
	}
	pos, raw := fs[0], fs[1]
	for _, f := range fs {
		if f.Kind != "orbcomm" || f.Identity != "01000001TESTA1B" || f.Source != "01000001TESTA1B" || f.Offset != -1 || f.Received.IsZero() {
			t.Errorf("frame header %+v", f)
		}
	}
	wantPos := map[string]string{
		"message_id": "10482351123", "sin": "0", "min": "72", "mobile_id": "01000001TESTA1B",
		"message_utc": "2024-05-23 10:14:05", "receive_utc": "2024-05-23 10:14:05", "region_name": "AMERRB16",
		"ota_message_size": "12", "payload_name": "position", "payload_format": "json",
		"field.fixStatus": "1", "field.latitude": "2739420", "field.longitude": "-4455000", "field.altitude": "112",
		"field.speed": "0", "field.heading": "0", "field.dayOfMonth": "23", "field.minuteOfDay": "613",
	}
	checkMeta(t, pos.Meta, wantPos)
	// The payload is the Payload object, so a JSON decoder can read it.
	var p struct {
		Name   string
		SIN    int
		MIN    int
		Fields []struct{ Name, Value, Type string }
	}
	if err := json.Unmarshal(pos.Payload, &p); err != nil {
		t.Fatalf("payload is not the Payload JSON: %v: %s", err, pos.Payload)
	}
	if p.Name != "position" || p.SIN != 0 || p.MIN != 72 || len(p.Fields) != 8 || p.Fields[1].Name != "latitude" || p.Fields[1].Value != "2739420" {
		t.Errorf("payload %s", pos.Payload)
	}
	checkMeta(t, raw.Meta, map[string]string{
		"message_id": "10482351124", "sin": "128", "min": "1", "mobile_id": "01000001TESTA1B",
		"message_utc": "2024-05-23 10:14:09", "receive_utc": "2024-05-23 10:14:08", "region_name": "AMERRB16",
		"ota_message_size": "6", "payload_format": "raw",
	})
	if !bytes.Equal(raw.Payload, []byte{0x80, 0x01, 0x00, 0x2A, 0xFF, 0x07}) {
		t.Errorf("raw payload % X", raw.Payload)
	}

	q := gw.queries()
	first := q[0]
	for k, v := range map[string]string{"access_id": testAccessID, "password": testPassword, "start_utc": "2024-05-23 00:00:00", "include_raw_payload": "true"} {
		if first.Get(k) != v {
			t.Errorf("first call %s = %q, want %q", k, first.Get(k), v)
		}
	}
	if first.Has("from_id") {
		t.Error("first call has from_id")
	}
	if !strings.Contains(gw.rawQ[0], "start_utc=2024-05-23%2000%3A00%3A00") {
		t.Errorf("space not sent as %%20: %s", gw.rawQ[0])
	}
	if markOf(q[1]) != "from_id=10482351125" || q[1].Has("start_utc") {
		t.Errorf("second call %v", q[1])
	}
	if m, ok := savedMark(t, state); !ok || m.FromID != 10482351125 || m.StartUTC != "2024-05-23 10:14:09" {
		t.Errorf("saved mark %+v %v", m, ok)
	}
	if got := value(h.p.m.messages.WithLabelValues("queued")); got != 2 {
		t.Errorf("queued metric %v", got)
	}
	if got := value(h.p.m.highWater); got != 10482351125 {
		t.Errorf("high water metric %v", got)
	}
	noSecrets(t, "log", h.logs.String())
}

func checkMeta(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("meta has %d keys, want %d: %v", len(got), len(want), got)
	}
}

// A sink that cannot queue leaves the mark unsaved; the page comes again
// and is emitted again; once queued, the mark moves.
func TestMarkSavedOnlyAfterDurableEmit(t *testing.T) {
	page1 := sample(t, "orbcomm_get_return_messages_page1.json")
	state := t.TempDir()
	cfg := testConfig(t, "")

	// Run 1: the queue is full and refuses every frame.
	gw := newGateway(t)
	gw.endless = func(int, url.Values) step { return step{body: page1} }
	cfg.URL = gw.url()
	bad := newSink()
	bad.result = func(int, *adapters.Frame) error { return errors.New("queue: disk full") }
	h := run(t, cfg, state, bad)
	gw.waitCalls(t, 3)
	h.stop(t)
	for i, q := range gw.queries() {
		if markOf(q) != "start_utc=2024-05-23 00:00:00" {
			t.Errorf("call %d moved on to %s although nothing was queued", i, markOf(q))
		}
	}
	if m, ok := savedMark(t, state); ok {
		t.Fatalf("mark saved without a durable emit: %+v", m)
	}
	// Only the first message is tried each time: the page stops there.
	for _, id := range bad.ids() {
		if id != "10482351123" {
			t.Errorf("emitted %s after a refused frame", id)
		}
	}
	if len(bad.ids()) < 2 {
		t.Errorf("the refused message was not emitted again: %v", bad.ids())
	}
	if !strings.Contains(h.logs.String(), "disk full") {
		t.Error("the sink's error is not logged")
	}

	// Run 2, same state: the queue takes the first message, then refuses
	// the second once: the first is not sent again, the mark waits for
	// the second.
	gw2 := newGateway(t, step{body: page1}, step{body: page1})
	cfg.URL = gw2.url()
	sink := newSink()
	sink.result = func(n int, f *adapters.Frame) error {
		if n == 2 {
			return context.DeadlineExceeded
		}
		return nil
	}
	h2 := run(t, cfg, state, sink)
	sink.wait(t, 3)
	gw2.waitCalls(t, 3)
	h2.stop(t)
	if got := strings.Join(sink.ids(), ","); got != "10482351123,10482351124,10482351124" {
		t.Errorf("emitted %s", got)
	}
	q := gw2.queries()
	if markOf(q[0]) != "start_utc=2024-05-23 00:00:00" || markOf(q[1]) != "start_utc=2024-05-23 00:00:00" || markOf(q[2]) != "from_id=10482351125" {
		t.Errorf("marks %s, %s, %s", markOf(q[0]), markOf(q[1]), markOf(q[2]))
	}
	if m, _ := savedMark(t, state); m.FromID != 10482351125 {
		t.Errorf("saved mark %+v", m)
	}
}

// A frame the pipeline dead-lettered (RejectedError) is durable: the mark
// moves on.
func TestRejectedFrameIsAcknowledged(t *testing.T) {
	gw := newGateway(t, step{body: sample(t, "orbcomm_get_return_messages_page1.json")})
	sink := newSink()
	sink.result = func(int, *adapters.Frame) error {
		return &adapters.RejectedError{Reason: "decoder orbcomm-position: SIN 128 / MIN 1 is not a core modem position report"}
	}
	state := t.TempDir()
	h := run(t, testConfig(t, gw.url()), state, sink)
	gw.waitCalls(t, 2)
	h.stop(t)
	if q := gw.queries(); markOf(q[1]) != "from_id=10482351125" {
		t.Errorf("second call %s", markOf(q[1]))
	}
	if got := value(h.p.m.messages.WithLabelValues("rejected")); got != 2 {
		t.Errorf("rejected metric %v", got)
	}
}

// A restart resumes from the saved mark, and a page served again after
// the restart is not queued twice.
func TestRestartResumesFromMark(t *testing.T) {
	page1 := sample(t, "orbcomm_get_return_messages_page1.json")
	state := t.TempDir()
	cfg := testConfig(t, "")
	gw := newGateway(t, step{body: page1})
	cfg.URL = gw.url()
	sink := newSink()
	h := run(t, cfg, state, sink)
	sink.wait(t, 2)
	gw.waitCalls(t, 2)
	h.stop(t)

	gw2 := newGateway(t, step{body: page1}, step{body: pageJSON(false, 10482351126, "2024-05-23 11:00:00", msgJSON(10482351125, "01000001TESTA1B", 128, 2, 9))})
	cfg.URL = gw2.url()
	cfg.StartTime = "2020-01-01 00:00:00" // ignored: there is a saved mark
	sink2 := newSink()
	h2 := run(t, cfg, state, sink2)
	sink2.wait(t, 1)
	gw2.waitCalls(t, 3)
	h2.stop(t)
	q := gw2.queries()
	if markOf(q[0]) != "from_id=10482351125" {
		t.Errorf("restart began at %s", markOf(q[0]))
	}
	if got := strings.Join(sink2.ids(), ","); got != "10482351125" {
		t.Errorf("after restart emitted %s", got)
	}
	if got := value(h2.p.m.messages.WithLabelValues("duplicate")); got != 2 {
		t.Errorf("duplicate metric %v", got)
	}
	if m, _ := savedMark(t, state); m.FromID != 10482351126 {
		t.Errorf("mark %+v", m)
	}
}

// The same message twice in a page and across pages is queued once; More
// pages follow at once (poll_interval is an hour here).
func TestRepeatsAndMore(t *testing.T) {
	const mob = "01000001TESTA1B"
	gw := newGateway(t,
		step{body: pageJSON(true, 12, "2024-05-23 11:00:01", msgJSON(10, mob, 128, 1, 1), msgJSON(11, mob, 128, 1, 2), msgJSON(11, mob, 128, 1, 2))},
		step{body: pageJSON(true, 14, "2024-05-23 11:00:02", msgJSON(11, mob, 128, 1, 2), msgJSON(12, mob, 128, 1, 3), msgJSON(13, mob, 128, 1, 4))},
		step{body: pageJSON(false, 15, "2024-05-23 11:00:03", msgJSON(13, mob, 128, 1, 4), msgJSON(14, mob, 128, 1, 5))},
	)
	cfg := testConfig(t, gw.url())
	cfg.PollInterval = time.Hour
	sink := newSink()
	h := run(t, cfg, t.TempDir(), sink)
	sink.wait(t, 5)
	gw.waitCalls(t, 3)
	time.Sleep(50 * time.Millisecond) // a fourth call would come now if More were not honoured
	h.stop(t)
	if got := strings.Join(sink.ids(), ","); got != "10,11,12,13,14" {
		t.Errorf("emitted %s", got)
	}
	for i, f := range sink.all() {
		if want := []byte{128, 1, byte(i + 1)}; !bytes.Equal(f.Payload, want) {
			t.Errorf("frame %d payload % X", i, f.Payload)
		}
	}
	var marks []string
	for _, q := range gw.queries() {
		marks = append(marks, markOf(q))
	}
	// Three calls and no fourth: the last page had no More.
	if got := strings.Join(marks, " "); got != "start_utc=2024-05-23 00:00:00 from_id=12 from_id=14" {
		t.Errorf("calls %s", got)
	}
	if got := value(h.p.m.messages.WithLabelValues("duplicate")); got != 3 {
		t.Errorf("duplicate metric %v", got)
	}
}

// Messages: null keeps the mark: by from_id after a page, by start_utc
// before the first.
func TestNullPageKeepsMark(t *testing.T) {
	empty := sample(t, "orbcomm_get_return_messages_empty.json")
	page1 := sample(t, "orbcomm_get_return_messages_page1.json")
	gw := newGateway(t, step{body: empty}, step{body: empty}, step{body: page1}, step{body: empty}, step{body: empty})
	sink := newSink()
	state := t.TempDir()
	h := run(t, testConfig(t, gw.url()), state, sink)
	gw.waitCalls(t, 6)
	h.stop(t)
	var marks []string
	for _, q := range gw.queries()[:6] {
		marks = append(marks, markOf(q))
	}
	want := "start_utc=2024-05-23 00:00:00,start_utc=2024-05-23 00:00:00,start_utc=2024-05-23 00:00:00,from_id=10482351125,from_id=10482351125,from_id=10482351125"
	if got := strings.Join(marks, ","); got != want {
		t.Errorf("marks\n got %s\nwant %s", got, want)
	}
	if len(sink.all()) != 2 {
		t.Errorf("%d frames", len(sink.all()))
	}
	if m, _ := savedMark(t, state); m.FromID != 10482351125 {
		t.Errorf("mark %+v", m)
	}
}

// ErrorID != 0, a 500, a timeout and an unreadable page each back off and
// retry from the same mark; the page after them is queued once.
func TestErrorsBackOff(t *testing.T) {
	page1 := sample(t, "orbcomm_get_return_messages_page1.json")
	gw := newGateway(t,
		step{body: `{"ErrorID":21785,"More":false,"NextStartUTC":"","NextStartID":-1,"Messages":null}`},
		step{status: http.StatusInternalServerError, body: "<html>Internal error for access_id=" + url.QueryEscape(testAccessID) + "</html>"},
		step{delay: 3 * time.Second, body: page1},
		step{body: `{"ErrorID":0,"More":tr`},
		step{body: page1},
	)
	cfg := testConfig(t, gw.url())
	cfg.Timeout = 150 * time.Millisecond
	cfg.RetryMin = 60 * time.Millisecond
	cfg.RetryMax = 120 * time.Millisecond
	sink := newSink()
	h := run(t, cfg, t.TempDir(), sink)
	sink.wait(t, 2)
	gw.waitCalls(t, 6)
	h.stop(t)

	q, at := gw.queries(), gw.times()
	for i := 0; i < 5; i++ {
		if markOf(q[i]) != "start_utc=2024-05-23 00:00:00" {
			t.Errorf("call %d from %s", i, markOf(q[i]))
		}
	}
	if markOf(q[5]) != "from_id=10482351125" {
		t.Errorf("call 6 from %s", markOf(q[5]))
	}
	// Each failure waits at least half of retry_min (the jitter's floor)
	// before the next call; without back-off the calls come at once.
	for i := 1; i <= 4; i++ {
		gap := at[i].Sub(at[i-1])
		if i == 3 {
			gap -= cfg.Timeout // the timed-out call itself took that long
		}
		if gap < cfg.RetryMin/2-5*time.Millisecond {
			t.Errorf("call %d came %s after a failure (retry_min %s)", i+1, gap, cfg.RetryMin)
		}
	}
	if len(sink.all()) != 2 {
		t.Errorf("%d frames", len(sink.all()))
	}
	logs := h.logs.String()
	for _, want := range []string{"error_id=21785", "status=500", "Client.Timeout|context deadline exceeded", "not a get_return_messages page", "gateway polls work again"} {
		found := false
		for _, alt := range strings.Split(want, "|") {
			found = found || strings.Contains(logs, alt)
		}
		if !found {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Count(logs, "level=warning msg=\"gateway poll failed; retrying with backoff\"") != 1 {
		t.Errorf("want one warning for the streak, got:\n%s", logs)
	}
	noSecrets(t, "log", logs)
	if st := h.p.Status(); st.OK || st.Detail != "stopped" {
		t.Errorf("status after stop %+v", st)
	}
	for _, r := range []string{"gateway_error", "http_error", "bad_page", "ok"} {
		if value(h.p.m.calls.WithLabelValues(r)) < 1 {
			t.Errorf("calls{result=%s} not counted", r)
		}
	}
}

// calls_per_minute bounds the calls even when every page says More.
func TestCallRateRespected(t *testing.T) {
	gw := newGateway(t)
	gw.endless = func(n int, _ url.Values) step {
		return step{body: pageJSON(true, int64(100+n), "2024-05-23 11:00:00")}
	}
	cfg := testConfig(t, gw.url())
	cfg.CallsPerMinute = 120 // one call every 500ms, burst 1
	h := run(t, cfg, t.TempDir(), newSink())
	time.Sleep(1200 * time.Millisecond)
	h.stop(t)
	n := len(gw.queries())
	// t=0, 0.5s, 1.0s: 3 calls; 4 leaves room for a slow machine's
	// scheduling, while an unlimited poller makes hundreds.
	if n < 2 || n > 4 {
		t.Errorf("%d calls in 1.2s at 120 calls/minute", n)
	}
	at := gw.times()
	for i := 1; i < len(at); i++ {
		if d := at[i].Sub(at[i-1]); d < 300*time.Millisecond { // 500ms apart at the limiter; the server sees scheduling jitter
			t.Errorf("calls %d and %d only %s apart", i, i+1, d)
		}
	}
}

// Neither credential appears in errors (net/http's url.Error prints the
// whole URL), logs or status, whatever fails.
func TestCredentialsRedacted(t *testing.T) {
	// A server that is gone: connection refused, an url.Error.
	gone := newGateway(t)
	deadURL := gone.url()
	gone.srv.Close()
	cfg := testConfig(t, deadURL)
	h := run(t, cfg, t.TempDir(), newSink())
	time.Sleep(150 * time.Millisecond)
	st := h.p.Status()
	h.stop(t)
	logs := h.logs.String()
	if !strings.Contains(logs, "connection refused") || !strings.Contains(logs, gwPath) {
		t.Errorf("the failure is not logged usefully:\n%s", logs)
	}
	noSecrets(t, "log", logs)
	noSecrets(t, "status", st.Detail)
	if !strings.Contains(st.Detail, "connection refused") {
		t.Errorf("status %+v", st)
	}

	// The error values themselves, and what they wrap.
	c := &call{p: h.p, red: newRedactor(testAccessID, testPassword), password: testPassword, client: &http.Client{}}
	_, err := c.fetch(context.Background(), Mark{StartUTC: "2024-05-23 00:00:00"})
	if err == nil {
		t.Fatal("no error from a closed server")
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		noSecrets(t, fmt.Sprintf("error %T", e), e.Error())
	}
	var ue *url.Error
	if !errors.As(err, &ue) || ue.URL != deadURL {
		t.Errorf("url.Error not kept for classification: %#v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.fetch(ctx, Mark{FromID: 5}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancellation not classifiable: %v", err)
	}
	noSecrets(t, "error", fmt.Sprintf("%v %+v %#v", err, err, err))
}

func TestRedactorForms(t *testing.T) {
	r := newRedactor("id", "a b+c/d")
	for _, in := range []string{"a b+c/d", "a+b%2Bc%2Fd", "a%20b%2Bc%2Fd", "a%20b+c%2Fd"} {
		if got := r.String("x=" + in + "&"); got != "x=[redacted]&" {
			t.Errorf("%q -> %q", in, got)
		}
	}
	if got := r.String("user=id"); got != "user=[redacted]" {
		t.Errorf("access id: %q", got)
	}
}

// A message the adapter cannot read in full goes on with its JSON and the
// reason, so it ends in the dead letters; the page is still acknowledged.
func TestUnreadableMessageHandedOn(t *testing.T) {
	bad := `{"ID":77,"MessageUTC":"2024-05-23 11:00:00","SIN":128,"MobileID":"01000001TESTA1B","RawPayload":[128,300]}`
	gw := newGateway(t, step{body: pageJSON(false, 78, "2024-05-23 11:00:00", bad, msgJSON(78, "01000001TESTA1B", 128, 2))})
	sink := newSink()
	h := run(t, testConfig(t, gw.url()), t.TempDir(), sink)
	sink.wait(t, 2)
	gw.waitCalls(t, 2)
	h.stop(t)
	f := sink.all()[0]
	if f.Meta[MetaPayloadFormat] != "message" || !strings.Contains(f.Meta[MetaParseError], "RawPayload[1] = 300 is not a byte") || string(f.Payload) != bad {
		t.Errorf("frame %+v payload %s", f.Meta, f.Payload)
	}
	if f.Identity != "01000001TESTA1B" || f.Meta[MetaMessageID] != "77" {
		t.Errorf("frame %+v", f)
	}
	if q := gw.queries(); markOf(q[1]) != "from_id=78" {
		t.Errorf("mark %s", markOf(q[1]))
	}
}

func TestRunFailsWithoutPassword(t *testing.T) {
	cfg := testConfig(t, "http://127.0.0.1:1/x")
	cfg.PasswordFile = "/nonexistent/orbcomm-password"
	p, err := New("nopw", cfg, adapters.Env{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(context.Background(), newSink())
	if err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Errorf("Run: %v", err)
	}
	if p.Status().OK {
		t.Error("status OK")
	}
}

// The first start without start_time goes back lookback from now.
func TestFirstStartLookback(t *testing.T) {
	gw := newGateway(t)
	cfg := testConfig(t, gw.url())
	cfg.StartTime = ""
	cfg.Lookback = 90 * time.Minute
	p, err := New("lookback", cfg, adapters.Env{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p.now = func() time.Time { return time.Date(2024, 5, 23, 12, 0, 0, 0, time.FixedZone("x", 3600)) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, newSink()) }()
	gw.waitCalls(t, 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := markOf(gw.queries()[0]); got != "start_utc=2024-05-23 09:30:00" {
		t.Errorf("first call %s", got)
	}
}

func TestNextMark(t *testing.T) {
	cur := Mark{FromID: 5, StartUTC: "2024-05-23 10:00:00"}
	log := discardLog()
	cases := []struct {
		name string
		page Page
		want Mark
	}{
		{"id wins", Page{NextStartID: 9, NextStartUTC: "2024-05-23 11:00:00"}, Mark{FromID: 9, StartUTC: "2024-05-23 11:00:00"}},
		{"id without utc keeps the old utc", Page{NextStartID: 9}, Mark{FromID: 9, StartUTC: "2024-05-23 10:00:00"}},
		{"utc only", Page{NextStartID: -1, NextStartUTC: "2024-05-23 11:00:00"}, Mark{StartUTC: "2024-05-23 11:00:00"}},
		{"nothing keeps the mark", Page{NextStartID: -1}, cur},
		{"zero id is none", Page{NextStartID: 0}, cur},
		{"unreadable utc ignored", Page{NextStartID: -1, NextStartUTC: "yesterday"}, cur},
	}
	for _, tc := range cases {
		if got := nextMark(cur, &tc.page, log); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestStoreBoundAndMark(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir+"/s.db", 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if err := st.Commit([]string{strconv.Itoa(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Commit([]string{"5", "6"}, &Mark{FromID: 7}); err != nil {
		t.Fatal(err)
	}
	if st.Len() != 3 {
		t.Errorf("len %d", st.Len())
	}
	st.Close()
	st, err = openStore(dir+"/s.db", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for k, want := range map[string]bool{"1": false, "3": false, "4": true, "5": true, "6": true} {
		if got, _ := st.Seen(k); got != want {
			t.Errorf("seen(%s) = %v", k, got)
		}
	}
	if m, ok, _ := st.Mark(); !ok || m.FromID != 7 {
		t.Errorf("mark %+v", m)
	}
}

// A long streak of failures is logged at error once, for the operator.
func TestLongFailureStreakEscalates(t *testing.T) {
	gw := newGateway(t)
	gw.endless = func(int, url.Values) step { return step{status: http.StatusServiceUnavailable, body: "down"} }
	cfg := testConfig(t, gw.url())
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 2*time.Millisecond
	h := run(t, cfg, t.TempDir(), newSink())
	gw.waitCalls(t, escalateAfter+3)
	h.stop(t)
	logs := h.logs.String()
	if n := strings.Count(logs, `level=error msg="gateway polls keep failing"`); n != 1 {
		t.Errorf("%d error lines:\n%s", n, logs)
	}
	if n := strings.Count(logs, "level=warning"); n != 1 {
		t.Errorf("%d warnings", n)
	}
}
