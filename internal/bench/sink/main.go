// Command sink is the upstream of `make bench`: a lean eventstore that does
// what costs the forwarder something to satisfy — it verifies every
// request's signature and Content-MD5, inflates gzip bodies — but counts
// records instead of parsing JSON (occurrences of a key each record has
// once: "phenomenonTime" for observations), and answers with the contract's
// success bodies. eventstore-sim (internal/sim) is not used: it stores and
// validates every record, and would measure itself rather than vigd.
//
//	sink -listen 127.0.0.1:0 -service-id vigd-bench -secret-file FILE
//
// It prints "listening ADDR" on stdout once it accepts connections. GET
// /stats returns the counters as JSON; POST /reset zeroes them (?latency=1
// also records, per observation, the time from its phenomenonTime to the
// moment its request was accepted: the load generator writes the send time
// into that column).
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigd/vigd/forwarder"
	"github.com/vigd/vigd/forwarder/signer"
)

// Stats is what GET /stats returns.
type Stats struct {
	Observations int64 `json:"observations"`
	Things       int64 `json:"things"`
	Datastreams  int64 `json:"datastreams"`
	Alarms       int64 `json:"alarms"`
	Raw          int64 `json:"raw"`
	Requests     int64 `json:"requests"`
	Refused      int64 `json:"refused"`
	BodyBytes    int64 `json:"bodyBytes"` // as sent (compressed when gzip)
	// FirstNS and LastNS are the wall-clock times (UnixNano) of the first
	// and the last accepted observation request.
	FirstNS int64 `json:"firstNs"`
	LastNS  int64 `json:"lastNs"`
	// Latency over the observations accepted since a reset with latency on.
	LatencyN     int     `json:"latencyN"`
	LatencyP50ms float64 `json:"latencyP50ms"`
	LatencyP99ms float64 `json:"latencyP99ms"`
	LatencyMaxms float64 `json:"latencyMaxms"`
	LastRefusal  string  `json:"lastRefusal,omitempty"`
}

type sink struct {
	verifier *signer.Verifier

	obs, things, ds, alarms, raw, reqs, refused, bytes atomic.Int64
	first, last                                        atomic.Int64

	latencyOn atomic.Bool
	mu        sync.Mutex
	latencies []time.Duration
	refusal   string

	bufs sync.Pool
	zrs  sync.Pool
}

var (
	keyPhenomenon = []byte(`"phenomenonTime"`)
	keyObsType    = []byte(`"observationType"`)
	keySensusID   = []byte(`"sensusID"`)
	keyAlarmID    = []byte(`"alarmId"`)
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	serviceID := flag.String("service-id", "vigd-bench", "the service id requests must be signed with")
	secretFile := flag.String("secret-file", "", "file holding the API secret")
	flag.Parse()
	secret, err := signer.LoadSecret(signer.SecretSpec{File: *secretFile})
	if err != nil {
		log.Fatal(err)
	}
	s := &sink{verifier: &signer.Verifier{
		Config: signer.DefaultConfig(),
		Lookup: func(id string) (signer.Secret, bool) { return secret, id == *serviceID },
	}}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+forwarder.DefaultObservationsPath, s.ingest("observations", keyPhenomenon, &s.obs))
	mux.HandleFunc("POST "+forwarder.DefaultThingsPath, s.ingest("things", keySensusID, &s.things))
	mux.HandleFunc("POST "+forwarder.DefaultDatastreamsPath, s.ingest("datastreams", keyObsType, &s.ds))
	mux.HandleFunc("POST "+forwarder.DefaultAlarmsPath, s.ingest("alarms", keyAlarmID, &s.alarms))
	mux.HandleFunc("POST "+forwarder.DefaultRawPath, s.ingest("raw", nil, &s.raw))
	mux.HandleFunc("GET /stats", s.stats)
	mux.HandleFunc("POST /reset", s.reset)
	fmt.Printf("listening %s\n", l.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(l))
}

func (s *sink) refuse(w http.ResponseWriter, status int, code, msg string) {
	s.refused.Add(1)
	s.mu.Lock()
	s.refusal = code + ": " + msg
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"message":%q}`, code, msg)
}

// ingest handles one endpoint: verify, inflate, count, answer.
func (s *sink) ingest(name string, key []byte, counter *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.reqs.Add(1)
		if _, err := s.verifier.VerifyRequest(r); err != nil {
			s.refuse(w, http.StatusUnauthorized, "UNAUTHORIZED", err.Error())
			return
		}
		buf, _ := s.bufs.Get().(*bytes.Buffer)
		if buf == nil {
			buf = new(bytes.Buffer)
		}
		defer s.bufs.Put(buf)
		buf.Reset()
		if _, err := buf.ReadFrom(io.LimitReader(r.Body, 64<<20)); err != nil {
			s.refuse(w, http.StatusBadRequest, "BAD_BODY", err.Error())
			return
		}
		wire := buf.Bytes()
		s.bytes.Add(int64(len(wire)))
		sum := md5.Sum(wire)
		if got := r.Header.Get("Content-MD5"); got != base64.StdEncoding.EncodeToString(sum[:]) {
			s.refuse(w, http.StatusBadRequest, "CONTENT_MD5_MISMATCH", "Content-MD5 does not match the body")
			return
		}
		body := wire
		if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
			var err error
			if body, err = s.gunzip(wire); err != nil {
				s.refuse(w, http.StatusBadRequest, "BAD_GZIP", err.Error())
				return
			}
		}
		n := int64(1)
		if key != nil {
			n = int64(bytes.Count(body, key))
		}
		now := time.Now()
		if name == "observations" {
			if s.latencyOn.Load() {
				s.recordLatency(body, now)
			}
			s.first.CompareAndSwap(0, now.UnixNano())
		}
		counter.Add(n)
		if name == "observations" {
			s.last.Store(now.UnixNano())
		}
		ts := now.UTC().Format(time.RFC3339)
		w.Header().Set("Content-Type", "application/json")
		switch name {
		case "alarms":
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"batchId":"bench","status":"PROCESSED","recordsProcessed":%d,"recordsAccepted":%d,"recordsRejected":0,"processedAt":%q}`, n, n, ts)
		case "raw":
			fmt.Fprintf(w, `{"status":"ACCEPTED","rawDataId":%d,"timestamp":%q}`, s.raw.Load(), ts)
		default:
			fmt.Fprintf(w, `{"status":"ACCEPTED","%sProcessed":%d,"timestamp":%q}`, name, n, ts)
		}
	}
}

func (s *sink) gunzip(wire []byte) ([]byte, error) {
	zr, _ := s.zrs.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(wire))
	} else {
		err = zr.Reset(bytes.NewReader(wire))
	}
	if err != nil {
		return nil, err
	}
	defer s.zrs.Put(zr)
	return io.ReadAll(zr)
}

// recordLatency notes, for each observation, accept time minus
// phenomenonTime.
func (s *sink) recordLatency(body []byte, now time.Time) {
	var ds []time.Duration
	prefix := []byte(`"phenomenonTime":"`)
	for rest := body; ; {
		i := bytes.Index(rest, prefix)
		if i < 0 {
			break
		}
		rest = rest[i+len(prefix):]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			break
		}
		if t, err := time.Parse(time.RFC3339Nano, string(rest[:j])); err == nil {
			ds = append(ds, now.Sub(t))
		}
		rest = rest[j:]
	}
	s.mu.Lock()
	s.latencies = append(s.latencies, ds...)
	s.mu.Unlock()
}

func (s *sink) stats(w http.ResponseWriter, _ *http.Request) {
	st := Stats{
		Observations: s.obs.Load(), Things: s.things.Load(), Datastreams: s.ds.Load(),
		Alarms: s.alarms.Load(), Raw: s.raw.Load(), Requests: s.reqs.Load(), Refused: s.refused.Load(),
		BodyBytes: s.bytes.Load(), FirstNS: s.first.Load(), LastNS: s.last.Load(),
	}
	s.mu.Lock()
	lat := slices.Clone(s.latencies)
	st.LastRefusal = s.refusal
	s.mu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		st.LatencyN = len(lat)
		st.LatencyP50ms = ms(lat[len(lat)*50/100])
		st.LatencyP99ms = ms(lat[min(len(lat)-1, len(lat)*99/100)])
		st.LatencyMaxms = ms(lat[len(lat)-1])
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

func (s *sink) reset(w http.ResponseWriter, r *http.Request) {
	for _, c := range []*atomic.Int64{&s.obs, &s.things, &s.ds, &s.alarms, &s.raw, &s.reqs, &s.refused, &s.bytes, &s.first, &s.last} {
		c.Store(0)
	}
	on, _ := strconv.ParseBool(r.URL.Query().Get("latency"))
	s.mu.Lock()
	s.latencies = nil
	s.refusal = ""
	s.mu.Unlock()
	s.latencyOn.Store(on)
	w.WriteHeader(http.StatusNoContent)
}
