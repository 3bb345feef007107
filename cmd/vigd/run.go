package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/forwarder"
	"github.com/vigd/vigd/forwarder/deadletter"
	"github.com/vigd/vigd/forwarder/queue"
	"github.com/vigd/vigd/internal/config"
	"github.com/vigd/vigd/internal/pipeline"
	"github.com/vigd/vigd/internal/secretfiles"
	"github.com/vigd/vigd/internal/tlsconf"
)

func cmdRun(args []string, stderr io.Writer) error {
	fs := newFlags("run")
	path := fs.String("c", "/etc/vigd/vigd.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	setMemoryLimit()
	ctx, cancel := signalContext()
	defer cancel()
	return Run(ctx, *path, stderr)
}

// daemon is one running vigd: built by Run, torn down when ctx ends.
type daemonState struct {
	path   string
	logs   *logs
	log    *logrus.Entry
	health *health

	data, alarms *queue.Disk
	state        *forwarder.State
	dl           *deadletter.Store
	pipe         *pipeline.Pipeline
	fwd          *forwarder.Forwarder

	mu       sync.Mutex
	running  map[string]*runningAdapter // by adapter name
	adapters sync.WaitGroup

	stopping   atomic.Bool   // the graceful stop has begun (STATUS says so)
	fwdTimeout time.Duration // forwarder.timeout, for the readiness check

	// cfg is the configuration the daemon started with or last reloaded;
	// only the reload goroutine reads or replaces it.
	cfg *config.Config
}

type runningAdapter struct {
	conf   config.Adapter
	cancel context.CancelFunc
	done   chan struct{}
	impl   adapters.Adapter
}

// Run starts the daemon from a config file and blocks until ctx ends. It is
// what `vigd run` calls, and tests call it in-process.
func Run(ctx context.Context, path string, logOut io.Writer) error {
	l, err := loadAll(path)
	if err != nil {
		return err
	}
	cfg := l.cfg
	lg := newLogs(cfg.Log, logOut)
	d := &daemonState{path: path, logs: lg, log: lg.entry("daemon", nil), health: newHealth(), running: map[string]*runningAdapter{}, cfg: cfg}
	d.log.WithFields(logrus.Fields{"version": version, "config": path}).Info("starting")
	for _, f := range secretfiles.Check(cfg) {
		d.log.WithFields(logrus.Fields{"file": f.File, "key": f.Key, "mode": fmt.Sprintf("%04o", f.Mode.Perm())}).
			Warn("secret file readable by every user; chmod o-r it")
	}

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if err := d.openStores(cfg); err != nil {
		return err
	}
	defer d.closeStores()

	d.pipe, err = pipeline.New(pipeline.Options{
		Data: d.data, Alarms: d.alarms, State: d.state, DeadLetters: d.dl,
		RawFrames: cfg.Pipeline.RawFrames, DeviceType: cfg.Pipeline.DeviceType,
		UnknownDevices: cfg.Devices.Unknown, DeviceIDTemplate: cfg.Devices.DeviceIDTemplate,
		Log: lg.entry("pipeline", nil),
	}, l.decoders, l.devices)
	if err != nil {
		return err
	}
	d.fwd, err = forwarder.New(cfg.Forwarder, forwarder.Deps{
		Data: d.data, Alarms: d.alarms, State: d.state, DeadLetters: d.dl,
		Log: lg.entry("forwarder", nil),
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bg sync.WaitGroup
	if cfg.HTTP.Listen != "" {
		tc, err := cfg.HTTP.TLS.Load(tlsconf.Options{OnReloadError: func(err error) {
			d.log.WithError(err).Error("renewed http.tls certificate not loaded; serving the previous one")
		}})
		if err != nil {
			return fmt.Errorf("http.tls: %w", err)
		}
		addr, _, err := d.health.serve(ctx, cfg.HTTP.Listen, tc)
		if err != nil {
			return err
		}
		d.log.WithFields(logrus.Fields{"address": addr.String(), "tls": tc != nil}).Info("http endpoint listening")
	}
	d.fwdTimeout = cfg.Forwarder.Timeout.D()
	d.addStoreChecks()
	current.Store(d.health)
	defer current.CompareAndSwap(d.health, nil)

	// The forwarder runs until the very end, so that a graceful stop can
	// flush what the adapters queued last.
	fwdCtx, fwdCancel := context.WithCancel(context.Background())
	defer fwdCancel()
	fwdDone := make(chan error, 1)
	go func() { fwdDone <- d.fwd.Run(fwdCtx) }()

	if err := d.startAdapters(ctx, cfg); err != nil {
		cancel()
		d.stopAdapters()
		fwdCancel()
		<-fwdDone
		return err
	}
	bg.Add(1)
	go func() { defer bg.Done(); d.replayLoop(ctx) }()

	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	d.log.WithField("adapters", len(cfg.Adapters)).Info("running")
	// The watchdog outlives ctx: it goes on through the flush, which can
	// take longer than WatchdogSec.
	wdCtx, wdCancel := context.WithCancel(context.Background())
	wdDone := make(chan struct{})
	go func() { defer close(wdDone); d.watchdog(wdCtx, cfg.Forwarder.Timeout.D()) }()
	stopWatchdog := func() { wdCancel(); <-wdDone }
	defer stopWatchdog()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			d.reload(ctx)
		case err := <-fwdDone:
			// The forwarder only returns early on a programming error.
			cancel()
			d.stopAdapters()
			bg.Wait()
			return fmt.Errorf("forwarder stopped: %w", err)
		}
	}
	d.stopping.Store(true)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping+"\nSTATUS=stopping: no more input, flushing "+d.backlog())
	d.log.Info("stopping: no more input")
	d.stopAdapters()
	bg.Wait()
	// Flush: give the forwarder a deadline to send what is queued; the rest
	// stays on disk for the next start.
	flush := cfg.Forwarder.Timeout.D()
	if flush <= 0 || flush > 10*time.Second {
		flush = 10 * time.Second
	}
	d.waitDrained(flush)
	fwdCancel()
	<-fwdDone
	stopWatchdog()
	d.log.WithFields(logrus.Fields{"data_backlog": d.data.Stats().Records, "alarm_backlog": d.alarms.Stats().Records}).Info("stopped")
	return nil
}

func (d *daemonState) openStores(cfg *config.Config) error {
	var err error
	qopts := func(name string, q config.Queue) (queue.Options, error) {
		pol, err := queue.ParsePolicy(q.Policy)
		return queue.Options{
			Name: name, Log: d.logs.entry("queue", nil), SegmentSize: cfg.Queue.SegmentBytes,
			MaxBytes: q.MaxBytes, MaxAge: q.MaxAge, Policy: pol,
		}, err
	}
	o, err := qopts("data", cfg.Queue.Data)
	if err != nil {
		return fmt.Errorf("%w: queue.data.policy: %v", errConfig, err)
	}
	if d.data, err = queue.Open(filepath.Join(cfg.DataDir, "queue", "data"), o); err != nil {
		return fmt.Errorf("open data queue: %w", err)
	}
	if o, err = qopts("alarms", cfg.Queue.Alarms); err != nil {
		return fmt.Errorf("%w: queue.alarms.policy: %v", errConfig, err)
	}
	if d.alarms, err = queue.Open(filepath.Join(cfg.DataDir, "queue", "alarms"), o); err != nil {
		return fmt.Errorf("open alarm queue: %w", err)
	}
	if d.state, err = forwarder.OpenState(filepath.Join(cfg.DataDir, "state.db")); err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	if d.dl, err = deadletter.Open(filepath.Join(cfg.DataDir, "deadletters"), deadletter.Options{MaxBytes: cfg.DeadLetters.MaxBytes, Log: d.logs.entry("deadletters", nil)}); err != nil {
		return fmt.Errorf("open dead letters: %w", err)
	}
	return nil
}

func (d *daemonState) closeStores() {
	for _, c := range []io.Closer{d.data, d.alarms, d.state} {
		if c != nil && !isNilCloser(c) {
			_ = c.Close()
		}
	}
}

func isNilCloser(c io.Closer) bool {
	switch v := c.(type) {
	case *queue.Disk:
		return v == nil
	case *forwarder.State:
		return v == nil
	}
	return false
}

func (d *daemonState) addStoreChecks() {
	for _, q := range []*queue.Disk{d.data, d.alarms} {
		q := q
		d.health.set("queue/"+filepath.Base(q.Dir()), func() (bool, string) {
			st := q.Stats()
			if err := q.Health(); err != nil {
				return false, fmt.Sprintf("cannot write: %v (backlog %d records)", err, st.Records)
			}
			return true, fmt.Sprintf("writable, backlog %d records, %d bytes", st.Records, st.Bytes)
		})
	}
	// A loop that has shown no progress for twice the request timeout (at
	// least a minute) is stuck, whatever its last state says.
	stall := max(2*d.fwdTimeout, time.Minute)
	d.health.set("forwarder", func() (bool, string) {
		st := d.fwd.Status()
		if ok, since := d.fwd.Alive(stall); !ok && st.State != "stopped" && st.State != "starting" {
			return false, fmt.Sprintf("%s; loop without progress for %s", st.String(), since.Round(time.Second))
		}
		return st.State != "refused", st.String()
	})
}

// startAdapters builds every adapter (no I/O) and runs each under a
// supervisor that restarts it with backoff when Run fails.
func (d *daemonState) startAdapters(ctx context.Context, cfg *config.Config) error {
	for _, a := range cfg.Adapters {
		if err := d.startAdapter(ctx, cfg, a); err != nil {
			return err
		}
	}
	return nil
}

func (d *daemonState) startAdapter(ctx context.Context, cfg *config.Config, a config.Adapter) error {
	kind, _ := adapters.Lookup(a.Kind)
	stateDir := filepath.Join(cfg.DataDir, "adapters", a.Name)
	if err := os.MkdirAll(stateDir, 0o750); err != nil {
		return err
	}
	log := d.logs.entry("adapter/"+a.Name, logrus.Fields{"name": a.Name, "kind": a.Kind})
	impl, err := kind.New(a.Name, a.Settings, adapters.Env{Log: log, StateDir: stateDir})
	if err != nil {
		return fmt.Errorf("%w: %s:%d: adapters %q: %v", errConfig, cfg.File, a.Line, a.Name, err)
	}
	actx, acancel := context.WithCancel(ctx)
	ra := &runningAdapter{conf: a, cancel: acancel, done: make(chan struct{}), impl: impl}
	d.mu.Lock()
	d.running[a.Name] = ra
	d.mu.Unlock()
	if sr, ok := impl.(adapters.StatusReporter); ok {
		d.health.set("adapter/"+a.Name, func() (bool, string) {
			st := sr.Status()
			return st.OK, st.Detail
		})
	}
	sink := d.pipe.For(a.Name, a.Kind, a.Decoder, a.CustomerID)
	d.adapters.Add(1)
	go func() {
		defer d.adapters.Done()
		defer close(ra.done)
		var bo adapters.Backoff
		for {
			err := impl.Run(actx, sink)
			if actx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("returned without error")
			}
			log.WithError(err).WithField("attempt", bo.Attempt()+1).Error("adapter stopped; restarting")
			if !bo.Wait(actx) {
				return
			}
		}
	}()
	return nil
}

func (d *daemonState) stopAdapter(name string) {
	d.mu.Lock()
	ra := d.running[name]
	delete(d.running, name)
	d.mu.Unlock()
	if ra == nil {
		return
	}
	ra.cancel()
	<-ra.done
	d.health.remove("adapter/" + name)
}

func (d *daemonState) stopAdapters() {
	d.mu.Lock()
	names := make([]string, 0, len(d.running))
	for n := range d.running {
		names = append(names, n)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); d.stopAdapter(n) }()
	}
	wg.Wait()
	d.adapters.Wait()
}

// reload re-reads config, decoders and devices; a bad new set is logged
// with its file:line errors and the running set stays. Adapters whose
// settings did not change keep running (and their connections); the
// queues are never touched.
func (d *daemonState) reload(ctx context.Context) {
	d.log.Info("reloading")
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReloading)
	defer daemon.SdNotify(false, daemon.SdNotifyReady)
	l, err := loadAll(d.path)
	if err != nil {
		reloadsTotal.WithLabelValues("refused").Inc()
		for _, e := range flattenErr(err) {
			if ce, ok := e.(*configErrors); ok {
				for _, x := range ce.errs {
					d.log.WithField("error", x.Error()).Error("reload refused: configuration error; keeping the running configuration")
				}
				continue
			}
			d.log.WithError(e).Error("reload refused; keeping the running configuration")
		}
		return
	}
	d.pipe.SetDecoders(l.decoders)
	d.pipe.SetDevices(l.devices)
	d.logs.setLevels(l.cfg.Log)
	if changed := restartOnly(d.cfg, l.cfg); len(changed) > 0 {
		// These hold open files, the queue or the upstream connection: a
		// restart applies them (nothing queued is lost by it).
		d.log.WithField("sections", strings.Join(changed, ", ")).
			Warn("reload does not apply these changed settings; restart vigd to apply them (systemctl restart vigd)")
	}
	d.cfg = l.cfg
	want := map[string]config.Adapter{}
	for _, a := range l.cfg.Adapters {
		want[a.Name] = a
	}
	d.mu.Lock()
	var stop []string
	keep := map[string]bool{}
	for name, ra := range d.running {
		na, ok := want[name]
		if ok && sameAdapter(ra.conf, na) {
			keep[name] = true
			continue
		}
		stop = append(stop, name)
	}
	d.mu.Unlock()
	for _, n := range stop {
		d.stopAdapter(n)
	}
	started := 0
	for _, a := range l.cfg.Adapters {
		if keep[a.Name] {
			continue
		}
		if err := d.startAdapter(ctx, l.cfg, a); err != nil {
			d.log.WithError(err).WithField("name", a.Name).Error("reload: cannot start adapter")
			continue
		}
		started++
	}
	reloadsTotal.WithLabelValues("ok").Inc()
	lastReload.SetToCurrentTime()
	d.log.WithFields(logrus.Fields{"kept": len(keep), "started": started, "stopped": len(stop)}).Info("reloaded")
}

// sameAdapter compares two adapter entries by their YAML (so comments and
// key order do not matter, values do).
func sameAdapter(a, b config.Adapter) bool {
	ab, err1 := yaml.Marshal(a.Node)
	bb, err2 := yaml.Marshal(b.Node)
	if err1 != nil || err2 != nil {
		return false
	}
	return a.Name == b.Name && a.Kind == b.Kind && string(stripComments(ab)) == string(stripComments(bb))
}

// stripComments drops comment lines from marshalled YAML.
func stripComments(b []byte) []byte {
	var n yaml.Node
	if yaml.Unmarshal(b, &n) != nil {
		return b
	}
	var clear func(*yaml.Node)
	clear = func(x *yaml.Node) {
		x.HeadComment, x.LineComment, x.FootComment = "", "", ""
		for _, c := range x.Content {
			clear(c)
		}
	}
	clear(&n)
	out, err := yaml.Marshal(&n)
	if err != nil {
		return b
	}
	return out
}

// replayLoop takes dead letters marked for replay (by `vigd deadletters
// replay`, possibly from another process) and processes them again.
func (d *daemonState) replayLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		d.replayOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *daemonState) replayOnce(ctx context.Context) {
	entries, err := d.dl.TakeReplays()
	if err != nil {
		d.log.WithError(err).Warn("cannot list dead letters to replay")
		return
	}
	for _, e := range entries {
		// Records (rejected upstream) are the forwarder's to replay; frames
		// go through the decoders as they are now.
		if e.Class != deadletter.ClassFrame {
			continue
		}
		err := d.pipe.Replay(ctx, e.Data)
		var rej *adapters.RejectedError
		if errors.As(err, &rej) {
			// Still undecodable: it is in the store again with the
			// current reason.
			d.log.WithFields(logrus.Fields{"id": e.ID, "reason": rej.Reason}).Warn("replayed frame rejected again")
			err = nil
		}
		if err != nil {
			d.log.WithError(err).WithField("id", e.ID).Warn("replay failed; will try again")
			continue
		}
		if err := d.dl.Delete(e.ID); err != nil {
			d.log.WithError(err).WithField("id", e.ID).Warn("cannot remove replayed dead letter")
		}
	}
}

// waitDrained waits up to max for both queues to be empty.
func (d *daemonState) waitDrained(max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if d.data.Stats().Records == 0 && d.alarms.Stats().Records == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watchdog sends STATUS (backlog, oldest record, last delivery) and, while
// the pipeline really moves, WATCHDOG=1. Moving means: both queues can be
// written, and the forwarder loop showed progress within the watchdog
// interval or is waiting on purpose (idle, backoff). A loop wedged in a
// request that never ends stops the pings while STATUS goes on saying why,
// and systemd restarts the service (WatchdogSec in the unit).
func (d *daemonState) watchdog(ctx context.Context, fwdTimeout time.Duration) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		d.log.WithError(err).Warn("watchdog settings unreadable; not pinging")
	}
	every, stall := 10*time.Second, time.Duration(0)
	if err == nil && interval > 0 {
		// Pings at a third of the interval survive one late tick.
		every, stall = interval/3, interval
		if fwdTimeout >= interval {
			d.log.WithFields(logrus.Fields{"timeout": fwdTimeout.String(), "watchdog": interval.String()}).
				Warn("forwarder.timeout is not below WatchdogSec: a slow answer will count as stuck")
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	withheld := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		msg := "STATUS=" + d.status()
		if stall > 0 {
			ok, why := d.alive(stall)
			switch {
			case ok:
				msg += "\n" + daemon.SdNotifyWatchdog
				if withheld {
					d.log.Info("pipeline moves again; watchdog pings resumed")
				}
			case !withheld:
				d.log.WithField("reason", why).Error("pipeline stuck; withholding watchdog pings")
			}
			if !ok {
				watchdogWithheld.Inc()
				msg += "; STUCK: " + why
			}
			withheld = !ok
		}
		_, _ = daemon.SdNotify(false, msg)
	}
}

// backlog is "N records (M alarms), oldest AGE".
func (d *daemonState) backlog() string {
	ds, as := d.data.Stats(), d.alarms.Stats()
	s := fmt.Sprintf("%d records (%d alarms)", ds.Records+as.Records, as.Records)
	oldest := ds.Oldest
	if !as.Oldest.IsZero() && (oldest.IsZero() || as.Oldest.Before(oldest)) {
		oldest = as.Oldest
	}
	if !oldest.IsZero() {
		s += ", oldest " + time.Since(oldest).Round(time.Second).String()
	}
	return s
}

// status is the one-line STATUS: backlog and the forwarder's state with its
// last delivery.
func (d *daemonState) status() string {
	prefix := "backlog "
	if d.stopping.Load() {
		prefix = "stopping: flushing "
	}
	return prefix + d.backlog() + "; " + d.fwd.Status().String()
}

// alive reports whether the pipeline moves (see watchdog), and why not.
func (d *daemonState) alive(stall time.Duration) (bool, string) {
	for _, q := range []*queue.Disk{d.data, d.alarms} {
		err := q.Health()
		// A full or read-only disk answers at once: vigd is degraded, not
		// wedged — readiness and STATUS say so, adapters are slowed, and it
		// heals by itself when space returns. A restart would only drop
		// connections, so the pings go on. Any other write error (EIO, a
		// hung device) withholds them.
		if err != nil && !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EDQUOT) {
			return false, fmt.Sprintf("queue %s cannot write: %v", filepath.Base(q.Dir()), err)
		}
	}
	if ok, since := d.fwd.Alive(stall); !ok {
		if d.fwd.Status().State == "stopped" {
			return false, "forwarder stopped"
		}
		return false, fmt.Sprintf("forwarder loop without progress for %s (%s)", since.Round(time.Second), d.fwd.Status().State)
	}
	return true, ""
}

// restartOnly lists the sections that differ between two configurations
// and that a reload does not apply.
func restartOnly(old, cur *config.Config) []string {
	if old == nil || cur == nil {
		return nil
	}
	same := func(a, b any) bool {
		x, err1 := yaml.Marshal(a)
		y, err2 := yaml.Marshal(b)
		return err1 == nil && err2 == nil && string(x) == string(y)
	}
	var out []string
	for _, c := range []struct {
		name string
		a, b any
	}{
		{"data_dir", old.DataDir, cur.DataDir},
		{"http", old.HTTP, cur.HTTP},
		{"queue", old.Queue, cur.Queue},
		{"deadletters", old.DeadLetters, cur.DeadLetters},
		{"pipeline", old.Pipeline, cur.Pipeline},
		{"devices.unknown", old.Devices.Unknown + old.Devices.DeviceIDTemplate, cur.Devices.Unknown + cur.Devices.DeviceIDTemplate},
		{"forwarder", old.Forwarder, cur.Forwarder},
	} {
		if !same(c.a, c.b) {
			out = append(out, c.name)
		}
	}
	return out
}
