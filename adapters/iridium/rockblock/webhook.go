// Package rockblock is the "rockblock" adapter: an HTTP endpoint for the
// RockBLOCK / Ground Control MO webhook (HTTP_POST form fields, HTTP_JSON).
//
// Each post is checked against the RS256 JWT the service signs it with
// (Ground Control's public key, claims as strings, issuer "Rock 7"). With a
// valid JWT its claims win over the unsigned body fields. Without one the
// post is refused (401 missing, 403 invalid; logged at warn, never the
// token) unless require_jwt is false, in which case it is accepted on the
// body fields with a warning and Meta "jwt" says so.
//
// The reply is 200 only after the frame is durable (adapters.Durable);
// otherwise 503 and RockBLOCK delivers again. RockBLOCK wants the answer
// within 3 s: the handler still waits for a slow Emit (back-pressure) and
// answers correctly once the frame is durable, but the sender may already
// have given up and will redeliver — the (imei, momsn, transmit_time) set in
// StateDir turns that redelivery into a 200 without a second frame. Emit
// runs on the adapter's context, not the request's, so a sender hanging up
// does not abort a frame that is about to be queued.
//
// A body that cannot be read (bad JSON, bad form encoding) gets 400. A post
// whose fields are wrong (bad hex, bad IMEI) but that passed the JWT check
// is emitted with the raw body as payload and Meta "parse_error" (see
// package iridium) and answered 200 once durable.
package rockblock

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/iridium"
	"github.com/vigd/vigd/adapters/netguard"
)

// maxHeaderBytes bounds a request's header block (net/http's default is
// 1 MiB; a webhook post needs a few hundred bytes).
const maxHeaderBytes = 16 << 10

// ReplyBudget is how long RockBLOCK waits for the 200 before it counts the
// delivery as failed.
const ReplyBudget = 3 * time.Second

// JWT states recorded in Meta "jwt".
const (
	JWTValid   = "valid"
	JWTInvalid = "invalid"
	JWTMissing = "missing"
)

// Webhook is the rockblock adapter.
type Webhook struct {
	name     string
	cfg      Config
	log      *logrus.Entry
	stateDir string
	metrics  *iridium.Metrics

	listening chan struct{}
	mu        sync.Mutex
	addr      net.Addr
	status    adapters.Status
}

// New builds the adapter from a validated config; it does no I/O.
func New(name string, cfg *Config, env adapters.Env) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := env.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger()).WithFields(logrus.Fields{"component": "adapter", "name": name, "kind": Kind})
	}
	return &Webhook{
		name:      name,
		cfg:       *cfg,
		log:       log,
		stateDir:  env.StateDir,
		metrics:   iridium.NewMetrics(name, Kind),
		listening: make(chan struct{}),
		status:    adapters.Status{Detail: "not started"},
	}, nil
}

// Listening is closed once the socket is bound; Addr is valid from then on.
func (w *Webhook) Listening() <-chan struct{} { return w.listening }

// Addr is the bound address (nil before Listening is closed).
func (w *Webhook) Addr() net.Addr {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.addr
}

// Status implements adapters.StatusReporter.
func (w *Webhook) Status() adapters.Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

func (w *Webhook) setStatus(ok bool, detail string) {
	w.mu.Lock()
	w.status = adapters.Status{OK: ok, Detail: detail}
	w.mu.Unlock()
}

// LoadPublicKey reads a PEM RSA public key (PKIX, PKCS#1 or a certificate).
func LoadPublicKey(path string) (*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := jwt.ParseRSAPublicKeyFromPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Run serves the webhook until ctx is cancelled. It returns an error only
// when the key, the de-duplication set or the listen address is unusable.
func (w *Webhook) Run(ctx context.Context, sink adapters.Sink) error {
	var key *rsa.PublicKey
	if w.cfg.PublicKeyFile != "" {
		k, err := LoadPublicKey(w.cfg.PublicKeyFile)
		if err != nil {
			w.setStatus(false, "public key: "+err.Error())
			return fmt.Errorf("rockblock: public_key_file: %w", err)
		}
		key = k
	} else {
		w.log.Warn("no public_key_file: rockblock posts are not authenticated")
	}
	if w.stateDir == "" {
		return errors.New("rockblock: no state folder for the de-duplication set")
	}
	if err := os.MkdirAll(w.stateDir, 0o750); err != nil {
		return fmt.Errorf("rockblock: %w", err)
	}
	dedup, err := iridium.OpenDedup(filepath.Join(w.stateDir, iridium.DedupFile), w.cfg.DedupSize)
	if err != nil {
		w.setStatus(false, err.Error())
		return fmt.Errorf("rockblock: %w", err)
	}
	defer dedup.Close()

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", w.cfg.Listen)
	if err != nil {
		w.setStatus(false, err.Error())
		return fmt.Errorf("rockblock: listen %s: %w", w.cfg.Listen, err)
	}
	allow, _ := netguard.ParseAllowList(w.cfg.AllowedSources) // checked by Validate
	ln = &netguard.Listener{Listener: ln, Allow: allow, Limiter: netguard.NewLimiter(w.cfg.MaxConnections, 0),
		OnRefuse: func(remote net.Addr, reason string) {
			w.metrics.Error(reason)
			w.log.WithFields(logrus.Fields{"source": remote.String(), "reason": reason}).Debug("connection refused")
		}}
	mux := http.NewServeMux()
	mux.Handle(w.cfg.Path, &handler{w: w, ctx: ctx, sink: sink, key: key, dedup: dedup})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: w.cfg.ReadTimeout,
		ReadTimeout:       w.cfg.ReadTimeout,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	w.mu.Lock()
	w.addr = ln.Addr()
	w.mu.Unlock()
	close(w.listening)
	w.setStatus(true, "listening on "+ln.Addr().String())
	w.log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "path": w.cfg.Path}).Info("rockblock webhook listening")

	served := make(chan error, 1)
	go func() {
		if w.cfg.TLS.CertFile != "" {
			served <- srv.ServeTLS(ln, w.cfg.TLS.CertFile, w.cfg.TLS.KeyFile)
		} else {
			served <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-served:
		w.setStatus(false, "stopped")
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("rockblock: serve: %w", err)
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
	w.setStatus(false, "stopped")
	return nil
}

type handler struct {
	w     *Webhook
	ctx   context.Context // the adapter's Run context
	sink  adapters.Sink
	key   *rsa.PublicKey
	dedup *iridium.Dedup
}

func (h *handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := h.w
	start := time.Now()
	log := w.log.WithField("source", r.RemoteAddr)
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, w.cfg.MaxBodyBytes))
	if err != nil {
		w.metrics.Error("read")
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			log.WithField("bytes", tooBig.Limit).Warn("rockblock body too large")
			http.Error(rw, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		log.WithError(err).Warn("rockblock body unreadable")
		http.Error(rw, "body unreadable", http.StatusBadRequest)
		return
	}
	fields, err := iridium.ParseRockBLOCKFields(r.Header.Get("Content-Type"), body)
	if err != nil {
		w.metrics.Error("parse")
		log.WithError(err).Warn("rockblock body unparseable")
		http.Error(rw, "body unparseable", http.StatusBadRequest)
		return
	}
	token := fields[iridium.RBJWT]
	delete(fields, iridium.RBJWT)

	state := JWTMissing
	if token != "" {
		claims, verr := h.verify(token)
		if verr != nil {
			state = JWTInvalid
			log = log.WithField("jwt_error", verr.Error())
		} else {
			state = JWTValid
			for k, v := range claims {
				fields[k] = v
			}
		}
	}
	if state != JWTValid {
		log = log.WithField("imei", fields[iridium.RBIMEI])
		if w.cfg.RequireJWT {
			w.metrics.Error("auth")
			code := http.StatusUnauthorized
			if state == JWTInvalid {
				code = http.StatusForbidden
			}
			log.WithField("jwt", state).Warn("rockblock post refused: no valid jwt")
			http.Error(rw, http.StatusText(code), code)
			return
		}
		log.WithField("jwt", state).Warn("rockblock post accepted without a valid jwt")
	}

	f := &adapters.Frame{
		Adapter:    w.name,
		Kind:       Kind,
		Source:     r.RemoteAddr,
		Offset:     -1,
		Received:   start.UTC(),
		CustomerID: w.cfg.CustomerID,
		Decoder:    w.cfg.Decoder,
	}
	msg, perr := iridium.RockBLOCKFromFields(fields)
	var key string
	if perr != nil {
		w.metrics.Error("parse")
		log.WithError(perr).Warn("rockblock fields unparseable, emitted raw for dead letters")
		f.Payload = body
		f.Meta = map[string]string{iridium.MetaTransport: Kind, iridium.MetaParseError: perr.Error(), iridium.MetaJWT: state}
		key = iridium.RawKey(body)
		if imei := fields[iridium.RBIMEI]; len(imei) == 15 && strings.Trim(imei, "0123456789") == "" {
			f.Identity = imei
		}
	} else {
		f.Identity = msg.IMEI
		f.Payload = msg.Data
		f.Meta = msg.Meta()
		f.Meta[iridium.MetaJWT] = state
		key = msg.DedupKey()
		log = log.WithFields(logrus.Fields{"imei": msg.IMEI, "momsn": msg.MOMSN})
	}

	seen, release, err := h.dedup.Claim(h.ctx, key)
	if err != nil {
		w.metrics.Error("dedup")
		http.Error(rw, "unavailable", http.StatusServiceUnavailable)
		return
	}
	defer release()
	if seen {
		w.metrics.Duplicates.Inc()
		log.Debug("rockblock duplicate acknowledged, not emitted")
		rw.WriteHeader(http.StatusOK)
		return
	}

	err = h.sink.Emit(h.ctx, f)
	if !adapters.Durable(err) {
		w.metrics.Error("emit")
		if h.ctx.Err() == nil {
			log.WithError(err).Warn("rockblock frame not queued")
		}
		http.Error(rw, "not queued, retry", http.StatusServiceUnavailable)
		return
	}
	w.metrics.Frames.Inc()
	if err := h.dedup.Add(key); err != nil {
		w.metrics.Error("dedup")
		log.WithError(err).Warn("de-duplication key not recorded")
	}
	if d := time.Since(start); d > ReplyBudget {
		log.WithField("elapsed", d.String()).Warn("rockblock reply after the 3s budget; a redelivery will be deduplicated")
	}
	log.WithField("bytes", len(f.Payload)).Trace("rockblock frame queued")
	rw.WriteHeader(http.StatusOK)
}

// verify checks the RS256 signature and issuer and returns the claims as
// strings (RockBLOCK signs every field as a string; "iss" and "iat" are
// dropped).
func (h *handler) verify(token string) (map[string]string, error) {
	if h.key == nil {
		return nil, errors.New("no public key configured")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"RS256"}), jwt.WithJSONNumber()}
	if h.w.cfg.JWTIssuer != "" {
		opts = append(opts, jwt.WithIssuer(h.w.cfg.JWTIssuer))
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return h.key, nil }, opts...)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(claims))
	for k, v := range claims {
		k = strings.ToLower(k)
		switch k {
		case "iss", "iat", "exp", "nbf", "jti", "aud", "sub", iridium.RBJWT:
			continue
		}
		switch v := v.(type) {
		case string:
			out[k] = v
		case json.Number:
			out[k] = v.String()
		}
	}
	return out, nil
}

var (
	_ adapters.Adapter        = (*Webhook)(nil)
	_ adapters.StatusReporter = (*Webhook)(nil)
	_ adapters.Config         = (*Config)(nil)
	_ http.Handler            = (*handler)(nil)
)
