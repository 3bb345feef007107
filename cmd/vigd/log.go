package main

import (
	"io"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/vigd/vigd/internal/config"
)

// logs builds one logger per component level: logrus has one level per
// Logger, so a component with its own level (log.components) gets its own
// Logger sharing the output and formatter.
type logs struct {
	base   *logrus.Logger
	levels map[string]logrus.Level
	cache  map[string]*logrus.Logger
}

func parseLevel(s string) logrus.Level {
	if s == "warn" {
		s = "warning"
	}
	l, err := logrus.ParseLevel(s)
	if err != nil {
		return logrus.InfoLevel
	}
	return l
}

func newLogs(c config.Log, out io.Writer) *logs {
	base := logrus.New()
	base.SetOutput(out)
	base.SetLevel(parseLevel(c.Level))
	if c.Format == "json" {
		base.SetFormatter(&logrus.JSONFormatter{})
	} else {
		// journald adds its own timestamps; keep them for terminals too.
		base.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	}
	l := &logs{base: base, levels: map[string]logrus.Level{}, cache: map[string]*logrus.Logger{}}
	for k, v := range c.Components {
		l.levels[k] = parseLevel(v)
	}
	return l
}

// entry returns the logger of a component ("forwarder", "pipeline") or of an
// adapter ("adapter/NAME", which also takes a level set for "adapter").
func (l *logs) entry(component string, fields logrus.Fields) *logrus.Entry {
	lg := l.base
	lvl, ok := l.levels[component]
	if !ok {
		if i := strings.IndexByte(component, '/'); i > 0 {
			lvl, ok = l.levels[component[:i]]
		}
	}
	if ok {
		if c, hit := l.cache[component]; hit {
			lg = c
		} else {
			lg = &logrus.Logger{Out: l.base.Out, Formatter: l.base.Formatter, Hooks: l.base.Hooks, Level: lvl, ExitFunc: l.base.ExitFunc, ReportCaller: false}
			l.cache[component] = lg
		}
	}
	name := component
	if i := strings.IndexByte(component, '/'); i > 0 {
		name = component[:i]
	}
	e := lg.WithField("component", name)
	if len(fields) > 0 {
		e = e.WithFields(fields)
	}
	return e
}

// setLevels applies a reloaded log section's levels (the format and output
// stay as they started).
func (l *logs) setLevels(c config.Log) {
	l.base.SetLevel(parseLevel(c.Level))
	levels := map[string]logrus.Level{}
	for k, v := range c.Components {
		levels[k] = parseLevel(v)
	}
	for comp, lg := range l.cache {
		lvl, ok := levels[comp]
		if !ok {
			if i := strings.IndexByte(comp, '/'); i > 0 {
				lvl, ok = levels[comp[:i]]
			}
		}
		if !ok {
			lvl = l.base.GetLevel()
		}
		lg.SetLevel(lvl)
	}
	l.levels = levels
}
