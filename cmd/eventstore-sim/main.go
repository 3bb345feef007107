// Command eventstore-sim runs the XCloud eventstore simulator
// (internal/sim; contract in ../shared/contract/v2-eventstore.md) for tests,
// the demo and manual trials. It prints its base URL on stdout when it is
// listening, logs to stderr, and stops cleanly on SIGTERM or SIGINT.
//
//	eventstore-sim -listen 127.0.0.1:8089 -data ./simdata -service vig_tps=@/run/secret
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/forwarder/signer"
	"github.com/vigd/vigd/internal/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// run is main without the process: it returns the exit code (0 clean stop,
// 1 runtime failure, 2 bad usage).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("eventstore-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		services, faults listFlag
		listen           = fs.String("listen", "127.0.0.1:8089", "address to listen on (port 0: any free port)")
		dataDir          = fs.String("data", "eventstore-sim-data", "folder for accepted records (JSON lines), reloaded at start")
		secretFile       = fs.String("secret-file", "", "file of service credentials, one `id=secret` a line (# comments)")
		rateN            = fs.Float64("rate", sim.DefaultRate, "requests a second per service id before 429 (0: no limit)")
		burst            = fs.Int("burst", 0, "rate limiter burst (0: the rate)")
		maxRecords       = fs.Int("max-records", sim.DefaultMaxRecords, "records per request before 413")
		maxBytes         = fs.String("max-bytes", "4MiB", "body bytes before compression before 413 (e.g. 4MiB, 65536)")
		skew             = fs.Duration("skew", signer.DefaultSkew, "largest accepted distance between Date and the clock (negative: no check)")
		logLevel         = fs.String("log-level", "info", "trace, debug, info, warn or error")
		latency          = fs.Duration("latency", 0, "add this delay to every request (a latency fault)")
		signLines        = fs.String("sign-lines", strings.Join(signer.DefaultLines, ","), "string-to-sign lines, in order")
		dateFormat       = fs.String("date-format", signer.DefaultDateFormat, "Go time layout of the Date header (UTC)")
	)
	fs.Var(&services, "service", "a service credential `id=secret`, or id=@file to read the secret from a file (repeatable)")
	fs.Var(&faults, "fault", "a fault to install at start, as the JSON of POST /_sim/faults (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "eventstore-sim: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected arguments %q", fs.Args())
	}
	log := logrus.New()
	log.SetOutput(stderr)
	lvl, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		return usage("-log-level: %v", err)
	}
	log.SetLevel(lvl)

	creds := map[string]signer.Secret{}
	for _, s := range services {
		id, secret, ok := strings.Cut(s, "=")
		if !ok || id == "" || secret == "" {
			return usage("-service %q: want id=secret or id=@file", id)
		}
		if path, ok := strings.CutPrefix(secret, "@"); ok {
			sec, err := signer.LoadSecret(signer.SecretSpec{File: path})
			if err != nil {
				return usage("-service %s: %v", id, err)
			}
			creds[id] = sec
			continue
		}
		creds[id] = signer.NewSecret(secret)
	}
	if *secretFile != "" {
		if err := readSecretFile(*secretFile, creds); err != nil {
			return usage("-secret-file: %v", err)
		}
	}
	if len(creds) == 0 {
		return usage("no service credentials: give -service id=secret or -secret-file")
	}
	mb, err := parseSize(*maxBytes)
	if err != nil {
		return usage("-max-bytes: %v", err)
	}
	cfg := sim.Config{
		DataDir:    *dataDir,
		Services:   creds,
		Signer:     signer.Config{Lines: strings.Split(*signLines, ","), DateFormat: *dateFormat},
		Skew:       *skew,
		Rate:       *rateN,
		Burst:      *burst,
		MaxRecords: *maxRecords,
		MaxBytes:   mb,
		Log:        logrus.NewEntry(log).WithField("component", "eventstore-sim"),
	}
	if err := cfg.Signer.Validate(); err != nil {
		return usage("%v", err)
	}
	for _, js := range faults {
		var f sim.Fault
		d := json.NewDecoder(strings.NewReader(js))
		d.DisallowUnknownFields()
		if err := d.Decode(&f); err != nil {
			return usage("-fault %s: %v", js, err)
		}
		cfg.Faults = append(cfg.Faults, f)
	}
	if *latency > 0 {
		cfg.Faults = append(cfg.Faults, sim.Fault{Kind: sim.FaultLatency, Latency: sim.Duration(*latency)})
	}
	s, err := sim.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "eventstore-sim: %v\n", err)
		return 1
	}
	err = s.Run(ctx, *listen, func(url string) { fmt.Fprintln(stdout, url) })
	if err != nil {
		fmt.Fprintf(stderr, "eventstore-sim: %v\n", err)
		s.Close()
		return 1
	}
	log.WithField("component", "eventstore-sim").Info("stopped")
	return 0
}

// readSecretFile reads "id=secret" lines; the secret is the rest of the line
// as written (only the line break is removed).
func readSecretFile(path string, creds map[string]signer.Secret) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		id, secret, ok := strings.Cut(line, "=")
		if id = strings.TrimSpace(id); !ok || id == "" || secret == "" {
			// The line may hold a secret: name only its number.
			return fmt.Errorf("%s:%d: want id=secret", path, n)
		}
		creds[id] = signer.NewSecret(secret)
	}
	return sc.Err()
}

// parseSize reads a byte count with an optional KiB/MiB/GiB or KB/MB/GB
// suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: want a positive size like 4MiB", s)
	}
	return n * mult, nil
}
