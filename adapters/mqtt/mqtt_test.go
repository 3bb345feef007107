package mqtt

import (
	"testing"
	"time"

	"github.com/vigd/vigd/internal/testpeers"
)

// Frames carry the topic level as Identity, the topic's decoder (or the
// adapter's default), and the transport metadata.
func TestFrameIdentityDecoderMeta(t *testing.T) {
	t.Parallel()
	mq := requireMosquitto(t, testpeers.MosquittoOptions{})
	cfg := baseConfig(t, mq.URL())
	cfg.Decoder = "fallback"
	cfg.CustomerID = "cust-9"
	cfg.Topics = []Topic{
		{Topic: "devices/+/up", QoS: 1, Decoder: "dev", Identity: Identity{From: IdentitySegment, Segment: 1}},
		{Topic: "sensors/#", QoS: 0, Identity: Identity{From: IdentitySegment, Segment: 2}},
		{Topic: "plain/up", QoS: 2, Decoder: "plain", Identity: Identity{From: IdentityPayload}},
	}
	sink := newRecSink()
	name := adapterName(t, "")
	r := start(t, name, cfg, sink)
	r.waitReady(t)
	if got := connectedGauge(name); got != 1 {
		t.Fatalf("vigd_mqtt_connected = %v, want 1", got)
	}

	p := newPublisher(t, mq.URL())
	p.mustPub(t, "devices/pump-7/up", 1, false, "a")
	p.mustPub(t, "sensors/site1/lvl-3/x", 1, false, "b") // subscribed at QoS 0: delivered at 0
	p.mustPub(t, "plain/up", 2, false, "c")
	waitPayloads(t, sink, 5*time.Second, []string{"a", "b", "c"})

	byPayload := map[string]int{}
	frames := sink.snapshot()
	for i, f := range frames {
		byPayload[string(f.Payload)] = i
	}
	type want struct {
		source, identity, decoder, qos string
	}
	for payload, w := range map[string]want{
		"a": {"devices/pump-7/up", "pump-7", "dev", "1"},
		"b": {"sensors/site1/lvl-3/x", "lvl-3", "fallback", "0"},
		"c": {"plain/up", "", "plain", "2"},
	} {
		f := frames[byPayload[payload]]
		if f.Adapter != name || f.Kind != "mqtt" || f.Offset != -1 || f.CustomerID != "cust-9" {
			t.Errorf("%s: adapter/kind/offset/customer = %q/%q/%d/%q", payload, f.Adapter, f.Kind, f.Offset, f.CustomerID)
		}
		if f.Source != w.source || f.Identity != w.identity || f.Decoder != w.decoder {
			t.Errorf("%s: source/identity/decoder = %q/%q/%q, want %q/%q/%q",
				payload, f.Source, f.Identity, f.Decoder, w.source, w.identity, w.decoder)
		}
		if f.Meta["topic"] != w.source || f.Meta["qos"] != w.qos || f.Meta["retained"] != "false" {
			t.Errorf("%s: meta = %v, want topic %s qos %s retained false", payload, f.Meta, w.source, w.qos)
		}
		if w.qos != "0" && (f.Meta["message_id"] == "" || f.Meta["message_id"] == "0") {
			t.Errorf("%s: message_id = %q for qos %s", payload, f.Meta["message_id"], w.qos)
		}
		if f.Received.IsZero() || f.Received.Location() != time.UTC {
			t.Errorf("%s: received %v, want UTC time", payload, f.Received)
		}
	}
	if n := len(frames); n != 3 {
		t.Errorf("%d frames, want 3", n)
	}
}
