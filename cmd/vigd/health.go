package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Daemon-level metrics. The pipeline, queue, forwarder, dead-letter and
// adapter packages register their own; these cover what only the daemon
// sees: reloads, the watchdog, and every readiness check as a number.
var (
	reloadsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "vigd_reloads_total",
		Help: "Reloads (SIGHUP) by result: ok, or refused (the running configuration stays; the log has every error with file:line).",
	}, []string{"result"})
	lastReload = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "vigd_reload_last_success_timestamp_seconds",
		Help: "Unix time of the last reload that was applied.",
	})
	watchdogWithheld = promauto.NewCounter(prometheus.CounterOpts{
		Name: "vigd_watchdog_withheld_total",
		Help: "Watchdog ticks without a ping because the pipeline did not move (queue not writable or forwarder loop stuck).",
	})
	buildInfo = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigd_build_info",
		Help: "Always 1; the labels say which build runs.",
	}, []string{"version", "go_version"})
)

func init() {
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	prometheus.MustRegister(checksCollector{})
}

// current is the health of the running daemon, for checksCollector (the
// collector is registered once per process; Run may run several times in
// tests).
var current atomic.Pointer[health]

// checksCollector exports every readiness check at scrape time:
// vigd_readiness_check{check="adapter/NAME"} is the adapter's connection
// state whatever its kind, "queue/data" whether the queue can be written,
// and so on; vigd_ready is /readyz as a number.
type checksCollector struct{}

var (
	checkDesc = prometheus.NewDesc("vigd_readiness_check",
		"1 when a readiness check passes, 0 when it fails (adapter connections, queues, forwarder); /readyz has the reasons.",
		[]string{"check"}, nil)
	readyDesc = prometheus.NewDesc("vigd_ready", "1 when every readiness check passes (/readyz answers 200).", nil, nil)
)

func (checksCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- checkDesc
	ch <- readyDesc
}

func (checksCollector) Collect(ch chan<- prometheus.Metric) {
	h := current.Load()
	if h == nil {
		return
	}
	all := 1.0
	for _, r := range h.results() {
		v := 0.0
		if r.ok {
			v = 1
		} else {
			all = 0
		}
		ch <- prometheus.MustNewConstMetric(checkDesc, prometheus.GaugeValue, v, r.name)
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, all)
}

// check is one readiness condition: ok, and a short reason either way.
type check func() (bool, string)

// health serves /metrics, /healthz and /readyz on the local address.
// /healthz says the process is alive (it answers); /readyz says it can take
// and deliver data, listing every check with its reason so an operator sees
// at a glance what is wrong.
type health struct {
	mu     sync.RWMutex
	checks map[string]check
}

func newHealth() *health { return &health{checks: map[string]check{}} }

func (h *health) set(name string, c check) {
	h.mu.Lock()
	h.checks[name] = c
	h.mu.Unlock()
}

func (h *health) remove(prefix string) {
	h.mu.Lock()
	for k := range h.checks {
		if strings.HasPrefix(k, prefix) {
			delete(h.checks, k)
		}
	}
	h.mu.Unlock()
}

type result struct {
	name, why string
	ok        bool
}

// results runs every check, sorted by name.
func (h *health) results() []result {
	h.mu.RLock()
	defer h.mu.RUnlock()
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]result, 0, len(names))
	for _, n := range names {
		ok, why := h.checks[n]()
		out = append(out, result{name: n, why: why, ok: ok})
	}
	return out
}

// ready runs every check; the report lists failures first.
func (h *health) ready() (bool, string) {
	var bad, good []string
	for _, r := range h.results() {
		line := fmt.Sprintf("%s: %s", r.name, r.why)
		if r.ok {
			good = append(good, "ok   "+line)
		} else {
			bad = append(bad, "FAIL "+line)
		}
	}
	return len(bad) == 0, strings.Join(append(bad, good...), "\n") + "\n"
}

func (h *health) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, body := h.ready()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, body)
	})
	if os.Getenv("VIGD_PPROF") == "1" {
		// Opt-in profiling for `make bench` and field diagnosis: off by
		// default, and only ever on the local endpoint.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// serve runs the endpoint until ctx ends, over HTTPS when tc is not nil.
func (h *health) serve(ctx context.Context, addr string, tc *tls.Config) (net.Addr, <-chan error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("http listen %s: %w", addr, err)
	}
	if tc != nil {
		l = tls.NewListener(l, tc)
	}
	// Timeouts and a small header limit: the endpoint may be reachable
	// from the network, and a stalled scraper must not hold it.
	srv := &http.Server{Handler: h.handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		// net/http would print failed handshakes (port scanners, scrapers
		// without a certificate) outside the daemon's log format; the
		// scraper reports its own failure.
		ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(l)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return l.Addr(), done, nil
}
