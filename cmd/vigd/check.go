package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

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
			for _, n := range names {
				if n == "" {
					continue
				}
				if _, ok := set.Get(n); !ok {
					errs = append(errs, fmt.Errorf("%s:%d: adapters %q: decoder: no decoder named %q (have %s)", path, a.Line, a.Name, n, strings.Join(set.Names(), ", ")))
				}
			}
		}
	}
	l.devices = devices.Empty()
	if cfg.Devices.File != "" {
		reg, err := devices.Load(cfg.Devices.File)
		if err != nil {
			errs = append(errs, flattenErr(err)...)
		} else {
			l.devices = reg
		}
	}
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
