package tcp

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/internal/tlsconf"
)

// loadTLS reads the certificate files when tls is configured (nil, nil
// otherwise). A renewed certificate is picked up at the next handshake; a
// renewal that does not load is logged and the old one kept.
func (l *Listener) loadTLS() (*tls.Config, error) {
	if !l.cfg.TLS.Enabled() {
		return nil, nil
	}
	tc, err := l.cfg.TLS.Load(tlsconf.Options{OnReloadError: func(err error) {
		l.log.WithError(err).Error("renewed tls certificate not loaded; serving the previous one")
	}})
	if err != nil {
		return nil, fmt.Errorf("tcp %s: tls: %w", l.name, err)
	}
	return tc, nil
}

// handshake runs the TLS handshake within handshake_timeout (in the
// connection's own goroutine, so a slow client never holds up the accept
// loop) and returns the TLS connection and the client certificate's
// common name ("" without client certificates).
func (l *Listener) handshake(ctx context.Context, c net.Conn, log *logrus.Entry) (net.Conn, string, bool) {
	tc := tls.Server(c, l.tlsConfig)
	hctx, cancel := context.WithTimeout(ctx, l.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		if ctx.Err() != nil {
			return nil, "", false
		}
		l.m.refused.WithLabelValues("tls").Inc()
		entry := log.WithError(err)
		if l.warnings.allow() {
			entry.Warn("tls handshake failed; connection closed")
		} else {
			entry.Debug("tls handshake failed; connection closed")
		}
		return nil, "", false
	}
	// The handshake deadline is gone; the read loop sets its own.
	st := tc.ConnectionState()
	cn := ""
	if len(st.PeerCertificates) > 0 {
		cn = st.PeerCertificates[0].Subject.CommonName
	}
	log.WithFields(logrus.Fields{"tls_version": tls.VersionName(st.Version), "tls_client_cn": cn}).Debug("tls established")
	if l.cfg.Identity == IdentityClientCert && cn == "" {
		l.m.frameErrors.WithLabelValues("bad_identity").Inc()
		log.Warn("client certificate without a common name; closing connection")
		return nil, "", false
	}
	return tc, cn, true
}

// warnEvery is how often a stream of the same trouble (refused
// connections, failed handshakes) may log at warn; the rest is at debug
// and counted in metrics.
const warnEvery = 10 * time.Second

// warnLimiter lets one warning through per warnEvery.
type warnLimiter struct {
	mu   sync.Mutex
	last time.Time
}

func (w *warnLimiter) allow() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now := time.Now(); now.Sub(w.last) >= warnEvery {
		w.last = now
		return true
	}
	return false
}
