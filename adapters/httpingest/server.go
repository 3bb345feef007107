// Package httpingest is the HTTP ingest adapter (kind "http"): devices and
// other systems POST a payload — raw bytes (application/octet-stream,
// text/plain) or JSON — to {path}/{deviceId} (or give the device id in a
// header or query parameter, or let the decoder find it in the payload),
// and the body becomes one frame.
//
// # Answers
//
// The answer follows the acknowledgement rule (package adapters): 202 only
// after Sink.Emit returned nil, i.e. the frame's records are on disk. A
// frame no decoder could read is kept in the dead letters by the pipeline
// (Emit returns a *adapters.RejectedError, which is durable): the answer is
// 422 with the decoder's message in a JSON body, so the sender learns why
// but need not send again. Any other Emit error (queue full past
// emit_timeout, disk full, shutting down) is 503 with Retry-After: nothing
// was stored. A request that fails authentication gets 401 and never
// reaches the sink; one over max_body_bytes gets 413; more than
// max_in_flight requests at once get 503 at once, so a full queue cannot
// pile bodies up in memory.
//
//	202 {"status":"ACCEPTED"}
//	422 {"status":"REJECTED","error":"decoder x: …"}
//	4xx/5xx {"error":"…"}
//
// Emit runs on the adapter's context (bounded by emit_timeout), not the
// request's: a sender hanging up does not abort a frame about to be
// queued; it sends again and the frame may be queued twice (at least
// once).
//
// # Authentication (auth.mode)
//
//   - bearer: "Authorization: Bearer <token>", tokens from a file of
//     "name token" lines and/or one file per token. Each check hashes the
//     token and compares it with every configured token in constant time.
//     The token's name is Meta auth_name; the token is never logged.
//   - hmac: the upstream eventstore contract's xCloud HMAC scheme, checked
//     with forwarder/signer's Verifier (service ids and secret files from
//     the config; Date within max_skew). A body must carry a Content-MD5
//     that matches it (401 without, 400 on a mismatch), because the
//     signature covers the body only through that header. auth_name is the
//     service id.
//   - client_cert: a client certificate verified against tls.client_ca_file;
//     auth_name is its common name. (tls.client_ca_file also adds the
//     certificate requirement to the other modes.)
//   - none: anyone who reaches the port.
//
// # Frame
//
// Kind "http", Source the remote address, Offset -1, Identity the device
// id, Decoder the ?decoder= choice when it is in allowed_decoders (empty:
// the adapter's decoder), Meta content_type, remote_addr and auth_name.
package httpingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/forwarder/signer"
)

// Meta keys of an http frame.
const (
	MetaContentType = "content_type"
	MetaRemoteAddr  = "remote_addr"
	MetaAuthName    = "auth_name"
)

// MaxDeviceIDLength bounds a device id taken from the request.
const MaxDeviceIDLength = 128

// Server is one configured http adapter.
type Server struct {
	name     string
	cfg      Config
	log      *logrus.Entry
	m        metrics
	decoders map[string]bool

	listening chan struct{}
	once      sync.Once
	mu        sync.Mutex
	addr      net.Addr
	status    adapters.Status
}

// New builds the adapter from a config; it validates and does no I/O.
func New(name string, cfg *Config, env adapters.Env) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := env.Log
	if lg == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		lg = logrus.NewEntry(l)
	}
	s := &Server{
		name:      name,
		cfg:       *cfg,
		log:       lg,
		m:         newMetrics(name),
		decoders:  map[string]bool{},
		listening: make(chan struct{}),
		status:    adapters.Status{Detail: "not started"},
	}
	for _, d := range cfg.AllowedDecoders {
		s.decoders[d] = true
	}
	return s, nil
}

// Listening is closed once the socket is bound; Addr is valid from then on.
func (s *Server) Listening() <-chan struct{} { return s.listening }

// Addr is the bound address (nil before Listening is closed).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Status reports whether the server listens.
func (s *Server) Status() adapters.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Server) setStatus(ok bool, detail string) {
	s.mu.Lock()
	s.status = adapters.Status{OK: ok, Detail: detail}
	s.mu.Unlock()
}

// tlsConfig loads the certificate and the client CA.
func (s *Server) tlsConfig() (*tls.Config, error) {
	t := s.cfg.TLS
	if t.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.client_ca_file: %s holds no PEM certificate", t.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Run serves until ctx is cancelled. It returns an error only when the
// credential or certificate files or the listen address are unusable.
func (s *Server) Run(ctx context.Context, sink adapters.Sink) error {
	auth, err := loadAuth(&s.cfg.Auth)
	if err != nil {
		s.setStatus(false, err.Error())
		return fmt.Errorf("http %s: %w", s.name, err)
	}
	tc, err := s.tlsConfig()
	if err != nil {
		s.setStatus(false, err.Error())
		return fmt.Errorf("http %s: %w", s.name, err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		s.setStatus(false, err.Error())
		return fmt.Errorf("http %s: listen on %s: %w", s.name, s.cfg.Listen, err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	h := &handler{s: s, ctx: ctx, sink: sink, auth: auth, sem: make(chan struct{}, s.cfg.MaxInFlight),
		warnAuth: rate.Sometimes{First: 1, Interval: time.Minute}, warnQueue: rate.Sometimes{First: 1, Interval: time.Minute}}
	mux := http.NewServeMux()
	mux.Handle(s.cfg.Path, h)
	if s.cfg.DeviceID == DeviceIDPath {
		mux.Handle(s.cfg.Path+"/", h)
	}
	// The server's own complaints (TLS handshakes, bad requests) go to
	// the log at debug: a scanner on the port is not worth a warning.
	errLog := s.log.WriterLevel(logrus.DebugLevel)
	defer errLog.Close()
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(errLog, "", 0),
	}
	s.mu.Lock()
	s.addr = ln.Addr()
	s.mu.Unlock()
	s.once.Do(func() { close(s.listening) })
	scheme := "http"
	if tc != nil {
		scheme = "https"
	}
	s.setStatus(true, "listening on "+scheme+"://"+ln.Addr().String()+s.cfg.Path)
	entry := s.log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "path": s.cfg.Path, "tls": tc != nil, "auth": s.cfg.Auth.Mode})
	if s.cfg.Auth.Mode == AuthNone && (tc == nil || tc.ClientCAs == nil) {
		entry.Warn("http ingest listening without authentication")
	} else {
		entry.Info("http ingest listening")
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		s.setStatus(false, "stopped")
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("http %s: serve: %w", s.name, err)
	case <-ctx.Done():
	}
	// Handlers waiting in Emit see ctx cancelled and answer 503; Shutdown
	// waits for them.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-served
	s.setStatus(false, "stopped")
	s.log.Info("http ingest stopped")
	return nil
}

type handler struct {
	s         *Server
	ctx       context.Context // Run's
	sink      adapters.Sink
	auth      authenticator
	sem       chan struct{}
	warnAuth  rate.Sometimes
	warnQueue rate.Sometimes
}

// answer is a JSON reply.
type answer struct {
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (h *handler) reply(w http.ResponseWriter, code int, a answer) int {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(h.s.cfg.RetryAfter/time.Second)))
	}
	w.WriteHeader(code)
	b, _ := json.Marshal(a)
	_, _ = w.Write(append(b, '\n'))
	return code
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.s.m.answered(h.serve(w, r))
}

// serve handles one request and returns the status it answered.
func (h *handler) serve(w http.ResponseWriter, r *http.Request) int {
	s := h.s
	start := time.Now()
	lg := s.log.WithField("source", r.RemoteAddr)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return h.reply(w, http.StatusMethodNotAllowed, answer{Error: "use POST"})
	}
	device := ""
	if s.cfg.DeviceID == DeviceIDPath {
		rest, ok := strings.CutPrefix(r.URL.EscapedPath(), s.cfg.Path+"/")
		if !ok || rest == "" || strings.Contains(rest, "/") {
			return h.reply(w, http.StatusNotFound, answer{Error: "post to " + s.cfg.Path + "/{deviceId}"})
		}
		id, err := url.PathUnescape(rest)
		if err != nil {
			return h.reply(w, http.StatusBadRequest, answer{Error: "device id is not URL-encoded properly"})
		}
		device = id
	}

	authName, err := h.auth.authenticate(r)
	if err != nil {
		s.m.frameErrors.WithLabelValues("unauthorized").Inc()
		entry := lg.WithError(err)
		warned := false
		h.warnAuth.Do(func() { warned = true; entry.Warn("http ingest request refused: not authenticated") })
		if !warned {
			entry.Debug("http ingest request refused: not authenticated")
		}
		if sch := h.auth.scheme(); sch != "" {
			w.Header().Set("WWW-Authenticate", sch)
		}
		return h.reply(w, http.StatusUnauthorized, answer{Error: "unauthorized"})
	}
	if authName != "" {
		lg = lg.WithField("auth_name", authName)
	}

	select {
	case h.sem <- struct{}{}:
		s.m.inFlight.Inc()
		defer func() { <-h.sem; s.m.inFlight.Dec() }()
	default:
		s.m.frameErrors.WithLabelValues("busy").Inc()
		lg.WithField("max_in_flight", s.cfg.MaxInFlight).Debug("http ingest busy")
		return h.reply(w, http.StatusServiceUnavailable, answer{Error: "busy, retry later"})
	}

	ctype := r.Header.Get("Content-Type")
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	if !h.contentTypeOK(ctype) {
		return h.reply(w, http.StatusUnsupportedMediaType, answer{Error: "content type must be one of " + strings.Join(s.cfg.ContentTypes, ", ")})
	}
	q := r.URL.Query()
	decoder := ""
	if q.Has(DecoderParam) {
		decoder = q.Get(DecoderParam)
		if !s.decoders[decoder] {
			return h.reply(w, http.StatusBadRequest, answer{Error: fmt.Sprintf("decoder %q is not allowed here", decoder)})
		}
	}
	switch {
	case strings.HasPrefix(s.cfg.DeviceID, deviceIDHeader):
		hn := strings.TrimPrefix(s.cfg.DeviceID, deviceIDHeader)
		device = r.Header.Get(hn)
		if device == "" {
			return h.reply(w, http.StatusBadRequest, answer{Error: "header " + hn + " (the device id) is missing"})
		}
	case strings.HasPrefix(s.cfg.DeviceID, deviceIDQuery):
		qn := strings.TrimPrefix(s.cfg.DeviceID, deviceIDQuery)
		device = q.Get(qn)
		if device == "" {
			return h.reply(w, http.StatusBadRequest, answer{Error: "query parameter " + qn + " (the device id) is missing"})
		}
	}
	if s.cfg.DeviceID != DeviceIDNone {
		if msg := checkDeviceID(device); msg != "" {
			return h.reply(w, http.StatusBadRequest, answer{Error: "device id " + msg})
		}
	}

	if r.ContentLength > s.cfg.MaxBodyBytes {
		s.m.frameErrors.WithLabelValues("too_large").Inc()
		lg.WithField("bytes", r.ContentLength).Debug("http ingest body too large")
		return h.reply(w, http.StatusRequestEntityTooLarge, answer{Error: fmt.Sprintf("body over %d bytes", s.cfg.MaxBodyBytes)})
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.m.frameErrors.WithLabelValues("too_large").Inc()
			lg.Debug("http ingest body too large")
			return h.reply(w, http.StatusRequestEntityTooLarge, answer{Error: fmt.Sprintf("body over %d bytes", s.cfg.MaxBodyBytes)})
		}
		s.m.frameErrors.WithLabelValues("read").Inc()
		lg.WithError(err).Debug("http ingest body unreadable")
		return h.reply(w, http.StatusBadRequest, answer{Error: "body unreadable"})
	}
	s.m.bytes.Add(float64(len(body)))
	if len(body) == 0 {
		return h.reply(w, http.StatusBadRequest, answer{Error: "empty body"})
	}
	if _, ok := h.auth.(*hmacAuth); ok {
		got := r.Header.Get("Content-MD5")
		if got == "" {
			s.m.frameErrors.WithLabelValues("unauthorized").Inc()
			lg.Debug("http ingest request refused: signed request without Content-MD5")
			w.Header().Set("WWW-Authenticate", signer.Scheme)
			return h.reply(w, http.StatusUnauthorized, answer{Error: "unauthorized"})
		}
		if got != signer.BodyMD5(body) {
			s.m.frameErrors.WithLabelValues("md5_mismatch").Inc()
			lg.Debug("http ingest request refused: Content-MD5 does not match the body")
			return h.reply(w, http.StatusBadRequest, answer{Error: "CONTENT_MD5_MISMATCH"})
		}
	}

	f := &adapters.Frame{
		Adapter:  s.name,
		Kind:     Kind,
		Source:   r.RemoteAddr,
		Offset:   -1,
		Received: start.UTC(),
		Payload:  body,
		Identity: device,
		Decoder:  decoder,
		Meta:     map[string]string{MetaContentType: ctype, MetaRemoteAddr: r.RemoteAddr, MetaAuthName: authName},
	}
	lg = lg.WithFields(logrus.Fields{"identity": device, "bytes": len(body)})
	ectx, cancel := context.WithTimeout(h.ctx, s.cfg.EmitTimeout)
	err = h.sink.Emit(ectx, f)
	cancel()
	var rej *adapters.RejectedError
	switch {
	case err == nil:
		s.m.frames.Inc()
		lg.Trace("http frame queued")
		return h.reply(w, http.StatusAccepted, answer{Status: "ACCEPTED"})
	case errors.As(err, &rej):
		s.m.frames.Inc()
		lg.WithField("reason", rej.Reason).Debug("http frame dead-lettered")
		return h.reply(w, http.StatusUnprocessableEntity, answer{Status: "REJECTED", Error: rej.Reason})
	}
	s.m.frameErrors.WithLabelValues("not_queued").Inc()
	if h.ctx.Err() == nil {
		entry := lg.WithError(err)
		warned := false
		h.warnQueue.Do(func() { warned = true; entry.Warn("http frame not queued; answered 503") })
		if !warned {
			entry.Debug("http frame not queued; answered 503")
		}
	}
	return h.reply(w, http.StatusServiceUnavailable, answer{Error: "not queued, retry later"})
}

// contentTypeOK checks the media type against the allowed list.
func (h *handler) contentTypeOK(ctype string) bool {
	mt, _, err := mime.ParseMediaType(ctype)
	if err != nil {
		return false
	}
	for _, ok := range h.s.cfg.ContentTypes {
		ok = strings.ToLower(ok)
		if mt == ok || (ok == "application/json" && strings.HasSuffix(mt, "+json")) {
			return true
		}
	}
	return false
}

// checkDeviceID says what is wrong with a device id taken from the
// request, or "".
func checkDeviceID(id string) string {
	switch {
	case id == "":
		return "is empty"
	case len(id) > MaxDeviceIDLength:
		return fmt.Sprintf("is longer than %d bytes", MaxDeviceIDLength)
	case !utf8.ValidString(id):
		return "is not UTF-8"
	}
	for _, r := range id {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' {
			return "must not contain white space, control characters or '/'"
		}
	}
	return ""
}

var (
	_ adapters.Adapter        = (*Server)(nil)
	_ adapters.StatusReporter = (*Server)(nil)
	_ http.Handler            = (*handler)(nil)
)
