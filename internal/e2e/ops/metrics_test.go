package ops

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/sim"
	"github.com/vigd/vigd/internal/testpeers"
)

// TestMetricsMatchTraffic sends known traffic through two TCP adapters —
// good lines and lines no decoder reads — first to an eventstore that
// answers 503, then to one that works, and checks /metrics (parsed with the
// Prometheus text parser) figure by figure against what was sent and what
// the simulator logged.
func TestMetricsMatchTraffic(t *testing.T) {
	w := newWorld(t)
	c := w.sim.Client()
	ctx := context.Background()
	if _, err := c.InjectFault(ctx, sim.Fault{Kind: sim.FaultDown, Mode: "503", Duration: sim.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	httpAddr, addrA, addrB := testpeers.FreeAddr(t), testpeers.FreeAddr(t), testpeers.FreeAddr(t)
	cfg := w.writeConfig(conf{HTTP: httpAddr, Adapters: tcpAdapter("tcp-a", addrA) + tcpAdapter("tcp-b", addrB)})
	v := w.startVigd(cfg, httpAddr, runOpts{})
	v.waitReady()
	start := time.Now()

	const goodA, goodB, bad = 12, 7, 3
	da, db := dial(t, addrA), dial(t, addrB)
	for i := 1; i <= goodA; i++ {
		da.mustSend(t, csv("dev-a", i), "ACK")
	}
	for i := 1; i <= goodB; i++ {
		db.mustSend(t, csv("dev-b", i), "ACK")
	}
	for i := 1; i <= bad; i++ {
		db.mustSend(t, "this is not a counter line "+strconv.Itoa(i), "NAK")
	}

	// While the server is down everything waits in the queue. The
	// oldest-age gauge is refreshed every 10s by the queue.
	var m metrics
	waitFor(t, 25*time.Second, "vigd_queue_oldest_age_seconds{queue=data} > 0 and a retry", func() bool {
		m = v.scrape(t)
		age, _ := m.get("vigd_queue_oldest_age_seconds", "queue", "data")
		retries, _ := m.get("vigd_forwarder_retries_total")
		return age > 0 && retries > 0
	})
	elapsed := time.Since(start).Seconds()
	want := []struct {
		name   string
		labels []string
		v      float64
	}{
		{"vigd_pipeline_frames_total", []string{"adapter", "tcp-a", "result", "decoded"}, goodA},
		{"vigd_pipeline_frames_total", []string{"adapter", "tcp-b", "result", "decoded"}, goodB},
		{"vigd_pipeline_frames_total", []string{"adapter", "tcp-b", "result", "deadlettered"}, bad},
		{"vigd_pipeline_frames_total", []string{"adapter", "tcp-a", "result", "deadlettered"}, 0},
		{"vigd_adapter_frames_total", []string{"adapter", "tcp-a", "kind", "tcp"}, goodA},
		{"vigd_adapter_frames_total", []string{"adapter", "tcp-b", "kind", "tcp"}, goodB + bad},
		{"vigd_decoder_frames_total", []string{"decoder", "counter", "result", "ok"}, goodA + goodB},
		{"vigd_decoder_frames_total", []string{"decoder", "counter", "result", "error"}, bad},
		{"vigd_pipeline_records_total", nil, goodA + goodB},
		{"vigd_deadletters_total", []string{"class", "frame"}, bad},
		{"vigd_queue_records", []string{"queue", "data"}, goodA + goodB},
		{"vigd_queue_records", []string{"queue", "alarms"}, 0},
		{"vigd_queue_evicted_records_total", []string{"queue", "data"}, 0},
		{"vigd_forwarder_records_total", []string{"result", "accepted"}, 0},
		{"vigd_ready", nil, 1},
		{"vigd_readiness_check", []string{"check", "adapter/tcp-a"}, 1},
		{"vigd_readiness_check", []string{"check", "queue/data"}, 1},
	}
	check := func(m metrics) {
		t.Helper()
		for _, x := range want {
			got, found := m.get(x.name, x.labels...)
			if !found && x.v != 0 {
				t.Errorf("%s%v: no sample", x.name, x.labels)
				continue
			}
			if got != x.v {
				t.Errorf("%s%v = %v, want %v", x.name, x.labels, got, x.v)
			}
		}
	}
	check(m)
	if age, _ := m.get("vigd_queue_oldest_age_seconds", "queue", "data"); age > elapsed+1 {
		t.Errorf("oldest age %.1fs, but the first frame was sent %.1fs ago", age, elapsed)
	}
	if b, _ := m.get("vigd_queue_bytes", "queue", "data"); b < goodA+goodB || b > 1<<20 {
		t.Errorf("vigd_queue_bytes{queue=data} = %v for %d records", b, goodA+goodB)
	}
	if n, _ := m.get("vigd_forwarder_requests_total", "status", "503"); n < 1 {
		t.Errorf("no 503 counted in vigd_forwarder_requests_total: %v", m.series("vigd_forwarder_requests_total", "status"))
	}
	if _, found := m.get("vigd_build_info"); !found {
		t.Error("no vigd_build_info")
	}

	// The server comes back: everything is delivered.
	if err := c.ClearFaults(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "queue empty and all observations stored", func() bool {
		m = v.scrape(t)
		n, _ := m.get("vigd_queue_records", "queue", "data")
		return n == 0 && len(w.observations(t)) == goodA+goodB
	})
	// Let any request in flight finish before comparing request counts.
	time.Sleep(300 * time.Millisecond)
	m = v.scrape(t)
	for i := range want {
		switch {
		case want[i].name == "vigd_queue_records":
			want[i].v = 0
		case want[i].name == "vigd_forwarder_records_total":
			want[i].labels = []string{"kind", "observation", "result", "accepted"}
			want[i].v = goodA + goodB
		}
	}
	check(m)
	if age, _ := m.get("vigd_queue_oldest_age_seconds", "queue", "data"); age != 0 {
		t.Errorf("empty queue with oldest age %v", age)
	}
	last, _ := m.get("vigd_forwarder_last_success_timestamp_seconds")
	if last < float64(start.Unix()) || last > float64(time.Now().Unix()+1) {
		t.Errorf("vigd_forwarder_last_success_timestamp_seconds = %v, not within the test", last)
	}

	// Requests by endpoint and status, exactly as the simulator logged them.
	logged, err := c.Requests(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	simCounts := map[string]float64{}
	for _, r := range logged {
		st := strconv.Itoa(r.Status)
		if r.Status == 0 {
			st = "error"
		}
		simCounts[r.Endpoint+" "+st]++
	}
	vigdCounts := map[string]float64{}
	if f := m["vigd_forwarder_requests_total"]; f != nil {
		for _, s := range f.GetMetric() {
			var ep, st string
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "endpoint":
					ep = l.GetValue()
				case "status":
					st = l.GetValue()
				}
			}
			if v := s.GetCounter().GetValue(); v > 0 {
				vigdCounts[ep+" "+st] = v
			}
		}
	}
	if fmt.Sprint(sorted(vigdCounts)) != fmt.Sprint(sorted(simCounts)) {
		t.Errorf("requests by endpoint and status:\n vigd %v\n sim  %v", sorted(vigdCounts), sorted(simCounts))
	}
	t.Logf("requests: %v", sorted(vigdCounts))
}

func sorted(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+strconv.FormatFloat(v, 'f', -1, 64))
	}
	sort.Strings(out)
	return out
}
