package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

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

// ready runs every check; the report lists failures first.
func (h *health) ready() (bool, string) {
	h.mu.RLock()
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	sort.Strings(names)
	var bad, good []string
	for _, n := range names {
		ok, why := h.checks[n]()
		line := fmt.Sprintf("%s: %s", n, why)
		if ok {
			good = append(good, "ok   "+line)
		} else {
			bad = append(bad, "FAIL "+line)
		}
	}
	h.mu.RUnlock()
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
	return mux
}

// serve runs the endpoint until ctx ends.
func (h *health) serve(ctx context.Context, addr string) (net.Addr, <-chan error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("http listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h.handler(), ReadHeaderTimeout: 5 * time.Second}
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
