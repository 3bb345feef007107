package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/devices"
	"github.com/vigd/vigd/internal/config"
	"github.com/vigd/vigd/internal/secretfiles"
)

// configErrors prints every problem, one per line, and is errConfig.
type configErrors struct{ errs []error }

func (c *configErrors) Error() string {
	var b strings.Builder
	for i, e := range c.errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	fmt.Fprintf(&b, "\n%d configuration error(s)", len(c.errs))
	return b.String()
}

func (c *configErrors) Is(target error) bool { return target == errConfig }

// flattenErr unwraps errors.Join trees into a list.
func flattenErr(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErr(e)...)
		}
		return out
	}
	return []error{err}
}

// loaded is a checked configuration with its decoders and devices.
type loaded struct {
	cfg      *config.Config
	decoders *decoders.Set
	devices  *devices.Registry
}

// loadAll reads the config, every decoder and the device registry,
// collecting every error (config errors first).
func loadAll(path string) (*loaded, error) {
	cfg, err := config.Load(path)
	if cfg == nil {
		return nil, &configErrors{errs: flattenErr(err)}
	}
	// Go on past config errors: decoders and devices are checked too, so
	// that one run reports every mistake.
	errs := flattenErr(err)
	l := &loaded{cfg: cfg}
	files, err := cfg.DecoderFiles()
	if err != nil {
		errs = append(errs, err)
	} else if len(files) == 0 {
		errs = append(errs, fmt.Errorf("%s: decoders: no decoder files found in %s", path, strings.Join(cfg.Decoders, ", ")))
	} else if set, err := decoders.LoadFiles(files...); err != nil {
		errs = append(errs, flattenErr(err)...)
	} else {
		l.decoders = set
		for _, a := range cfg.Adapters {
			names := []string{a.Decoder}
			// Kinds that choose a decoder per topic or request say which.
			if dn, ok := a.Settings.(interface{ Decoders() []string }); ok {
				names = append(names, dn.Decoders()...)
			}
			for i, n := range names {
				if n == "" {
					continue
				}
				if _, ok := set.Get(n); !ok {
					line := a.Line
					if k := config.Find(a.Node, "decoder"); i == 0 && k != nil && k.Line > 0 {
						line = k.Line
					}
					errs = append(errs, fmt.Errorf("%s:%d: adapters %q: decoder: no decoder named %q (have %s)", path, line, a.Name, n, strings.Join(set.Names(), ", ")))
				}
			}
		}
	}
	l.devices = devices.Empty()
	if cfg.Devices.File != "" {
		reg, err := devices.Load(cfg.Devices.File)
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission):
			errs = append(errs, fmt.Errorf("%s: devices.file: %w", cfg.Where("devices.file"), err))
		case err != nil:
			errs = append(errs, flattenErr(err)...)
		default:
			l.devices = reg
		}
	}
	errs = append(errs, checkSecretFile(cfg)...)
	errs = append(errs, checkListenConflicts(cfg)...)
	if len(errs) > 0 {
		sortByPosition(errs)
		return nil, &configErrors{errs: errs}
	}
	return l, nil
}

// sortByPosition orders "file:line[:col]: …" messages by file, then line
// (stable: messages without a position keep their place after those
// with one).
func sortByPosition(errs []error) {
	type pos struct {
		file string
		line int
	}
	at := func(e error) pos {
		s := e.Error()
		i := strings.Index(s, ": ")
		if i < 0 {
			return pos{}
		}
		parts := strings.Split(s[:i], ":")
		if len(parts) < 2 {
			return pos{file: parts[0]}
		}
		n, _ := strconv.Atoi(parts[1])
		return pos{parts[0], n}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := at(errs[i]), at(errs[j])
		if a.file != b.file {
			return a.file < b.file
		}
		return a.line < b.line
	})
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check")
	path := fs.String("c", "/etc/vigd/vigd.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := loadAll(*path)
	if err != nil {
		return err
	}
	// Warnings, not errors: the config works, but a secret is exposed.
	for _, f := range secretfiles.Check(l.cfg) {
		fmt.Fprintf(stderr, "warning: %s\n", f)
	}
	fmt.Fprintf(stdout, "%s: ok (%d adapters, %d decoders, %d device identities)\n",
		*path, len(l.cfg.Adapters), len(l.decoders.Names()), l.devices.Len())
	return nil
}

// checkSecretFile reads the forwarder's secret file now, so that a missing,
// empty or unreadable one is a config error with its line rather than a
// failure at start. (A systemd credential only exists under the service.)
func checkSecretFile(cfg *config.Config) []error {
	p := cfg.Forwarder.SecretFile
	if p == "" {
		return nil
	}
	st, err := os.Stat(p)
	switch {
	case err != nil:
		return []error{fmt.Errorf("%s: forwarder.secret_file: %w", cfg.Where("forwarder.secret_file"), err)}
	case st.IsDir():
		return []error{fmt.Errorf("%s: forwarder.secret_file: %s is a folder, not a file", cfg.Where("forwarder.secret_file"), p)}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return []error{fmt.Errorf("%s: forwarder.secret_file: %w", cfg.Where("forwarder.secret_file"), err)}
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return []error{fmt.Errorf("%s: forwarder.secret_file: %s is empty", cfg.Where("forwarder.secret_file"), p)}
	}
	return nil
}

// checkListenConflicts finds two listeners (adapters and the http endpoint)
// on the same port of overlapping addresses.
func checkListenConflicts(cfg *config.Config) []error {
	type listener struct {
		what, where, host, port string
	}
	var ls []listener
	add := func(what, where, addr string) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "" || port == "0" {
			return
		}
		ls = append(ls, listener{what, where, host, port})
	}
	if cfg.HTTP.Listen != "" {
		add("http.listen", cfg.Where("http.listen"), cfg.HTTP.Listen)
	}
	for _, a := range cfg.Adapters {
		if n := config.Find(a.Node, "listen"); n != nil && n.Kind == yaml.ScalarNode && n.Value != "" {
			add(fmt.Sprintf("adapters %q", a.Name), fmt.Sprintf("%s:%d:%d", cfg.File, n.Line, n.Column), n.Value)
		}
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	var errs []error
	for i := range ls {
		for j := 0; j < i; j++ {
			a, b := ls[i], ls[j]
			if a.port == b.port && (a.host == b.host || wild(a.host) || wild(b.host)) {
				errs = append(errs, fmt.Errorf("%s: %s: listen: port %s is also taken by %s", a.where, a.what, a.port, b.what))
			}
		}
	}
	return errs
}
