// Package sim is eventstore-sim: an in-process implementation of the XCloud
// eventstore contract (../shared/contract/v2-eventstore.md) that the
// forwarder's tests and the demo post to over real HTTP.
//
// It verifies signatures (forwarder/signer), Content-MD5, gzip, size and rate
// limits, validates every record, enforces referential integrity (thing →
// datastream → observation), de-duplicates by batchId, and keeps what it
// accepted under a data folder as JSON lines that survive a restart. Only
// what dedupe and integrity need (batch ids, things, datastreams, counts) is
// held in memory, so a drain of millions of records stays small.
//
// Everything under /_sim/ is an unsigned admin API: injected faults (fail the
// next N requests, latency, down, reject matching records), the stored
// records, counters and a request log, so a test can assert what a user
// would check at the server. Client wraps that API for tests.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/vigd/vigd/forwarder/signer"
)

// Endpoint (record kind) names, as used in fault rules, queries and counts.
const (
	Things       = "things"
	Datastreams  = "datastreams"
	Observations = "observations"
	Alarms       = "alarms"
	Raw          = "raw"
)

// Kinds lists every endpoint.
var Kinds = []string{Things, Datastreams, Observations, Alarms, Raw}

var kindPaths = map[string]string{
	Things:       "/xcloud/v2/eventstore/data/parsed/things",
	Datastreams:  "/xcloud/v2/eventstore/data/parsed/datastreams",
	Observations: "/xcloud/v2/eventstore/data/parsed/observations",
	Alarms:       "/xcloud/v2/eventstore/data/parsed/alarms",
	Raw:          "/xcloud/v1/eventstore/data/raw",
}

var pathKinds = func() map[string]string {
	m := map[string]string{}
	for k, p := range kindPaths {
		m[p] = k
	}
	return m
}()

// Path returns the URL path of an endpoint, "" for an unknown one.
func Path(kind string) string { return kindPaths[kind] }

// Defaults of Config.
const (
	DefaultMaxRecords     = 1000
	DefaultMaxBytes       = 4 << 20
	DefaultRate           = 20 // what the binary uses; Config's zero means no limit
	DefaultRequestLogSize = 100000
)

// Config of a Server. Zero values mean the defaults noted.
type Config struct {
	// DataDir holds the accepted records; required.
	DataDir string
	// Services maps service ids to their secrets.
	Services map[string]signer.Secret
	// Signer is the string-to-sign layout (zero: the contract's default).
	Signer signer.Config
	// Skew is the accepted |Date - clock|: 0 means 15m, negative no check.
	Skew time.Duration
	// Rate is requests per second per service id; 0 means unlimited.
	Rate float64
	// Burst is the rate limiter's bucket; 0 means max(1, Rate).
	Burst int
	// MaxRecords per request (0: 1000) and MaxBytes before compression
	// (0: 4 MiB); beyond either the answer is 413.
	MaxRecords int
	MaxBytes   int64
	// RequestLogSize bounds the in-memory request log (0: 100000).
	RequestLogSize int
	// Faults are installed at start, as if posted to /_sim/faults.
	Faults []Fault
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Log receives lifecycle and per-request debug lines (nil: discarded).
	Log *logrus.Entry
}

// Server is the simulator. Create it with New; serve it with Start or as an
// http.Handler; Close it to flush and release the data folder.
type Server struct {
	cfg      Config
	log      *logrus.Entry
	verifier *signer.Verifier
	st       *store
	faults   *faultSet
	stats    *stats

	limMu    sync.Mutex
	limiters map[string]*rate.Limiter

	muxOnce sync.Once
	mux     *http.ServeMux

	httpSrv *http.Server
	ln      net.Listener
	done    chan struct{}
	serveMu sync.Mutex
	closed  bool
}

// New validates cfg, opens the data folder and reloads what it holds.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("sim: data dir is required")
	}
	if err := cfg.Signer.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = DefaultMaxRecords
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.RequestLogSize <= 0 {
		cfg.RequestLogSize = DefaultRequestLogSize
	}
	if cfg.Rate < 0 {
		return nil, fmt.Errorf("sim: rate %v: must be >= 0", cfg.Rate)
	}
	if cfg.Burst <= 0 {
		cfg.Burst = int(math.Max(1, math.Ceil(cfg.Rate)))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		cfg.Log = logrus.NewEntry(l)
	}
	services := map[string]signer.Secret{}
	for id, sec := range cfg.Services {
		services[id] = sec
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Log,
		faults:   newFaultSet(cfg.Now),
		stats:    newStats(cfg.RequestLogSize),
		limiters: map[string]*rate.Limiter{},
	}
	s.verifier = &signer.Verifier{
		Config: cfg.Signer,
		Lookup: func(id string) (signer.Secret, bool) { sec, ok := services[id]; return sec, ok },
		Skew:   cfg.Skew,
		Now:    cfg.Now,
	}
	for i, f := range cfg.Faults {
		if _, err := s.faults.add(f); err != nil {
			return nil, fmt.Errorf("sim: faults[%d]: %w", i, err)
		}
	}
	st, err := openStore(cfg.DataDir, s.log)
	if err != nil {
		return nil, err
	}
	s.st = st
	c := st.counts()
	s.log.WithFields(logrus.Fields{"data_dir": cfg.DataDir, "things": c.Entities[Things],
		"datastreams": c.Entities[Datastreams], "observations": c.Accepted[Observations],
		"alarms": c.Accepted[Alarms], "raw": c.Accepted[Raw]}).Info("data reloaded")
	return s, nil
}

// Start listens on addr ("127.0.0.1:0" for a free port) and serves in the
// background until Close.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sim: listen: %w", err)
	}
	s.serveMu.Lock()
	defer s.serveMu.Unlock()
	s.ln = ln
	s.httpSrv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.WithError(err).Error("serve failed")
		}
	}()
	s.log.WithField("address", ln.Addr().String()).Info("listening")
	return nil
}

// Addr is the listening address after Start ("127.0.0.1:PORT").
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the base URL after Start ("http://127.0.0.1:PORT").
func (s *Server) URL() string { return "http://" + s.Addr() }

// Client returns an admin and posting client for this server.
func (s *Server) Client() *Client { return &Client{BaseURL: s.URL()} }

// Close stops serving (waiting up to 5 s for requests in flight) and flushes
// and closes the data files. It is safe to call twice.
func (s *Server) Close() error {
	s.serveMu.Lock()
	defer s.serveMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, err, s.httpSrv.Close())
		}
		<-s.done
	}
	errs = append(errs, s.st.close())
	return errors.Join(errs...)
}

// Run starts the server on addr, calls ready with its URL, and serves until
// ctx is cancelled; then it closes cleanly.
func (s *Server) Run(ctx context.Context, addr string, ready func(url string)) error {
	if err := s.Start(addr); err != nil {
		return err
	}
	if ready != nil {
		ready(s.URL())
	}
	<-ctx.Done()
	return s.Close()
}

// ServeHTTP routes admin requests under /_sim/ and eventstore requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Path) >= 6 && r.URL.Path[:6] == "/_sim/" {
		s.serveAdmin(w, r)
		return
	}
	s.serveAPI(w, r)
}

func (s *Server) allow(serviceID string) (bool, time.Duration) {
	if s.cfg.Rate <= 0 {
		return true, 0
	}
	s.limMu.Lock()
	lim, ok := s.limiters[serviceID]
	if !ok {
		lim = rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
		s.limiters[serviceID] = lim
	}
	s.limMu.Unlock()
	now := s.cfg.Now()
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

var _ http.Handler = (*Server)(nil)
