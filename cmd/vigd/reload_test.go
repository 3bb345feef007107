package main

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/vigd/vigd/internal/config"
)

func TestRestartOnlyNamesUnappliedSections(t *testing.T) {
	a, b := config.Default(), config.Default()
	if got := restartOnly(a, b); len(got) != 0 {
		t.Fatalf("same config: %v", got)
	}
	b.Forwarder.URL = "https://other.example.com"
	b.Queue.Data.Policy = "drop-oldest"
	b.Log.Level = "debug" // applied by reload: not listed
	if got, want := restartOnly(a, b), []string{"queue", "forwarder"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestSetLevelsAppliesReloadedLevels(t *testing.T) {
	var out bytes.Buffer
	l := newLogs(config.Log{Level: "info", Format: "text", Components: map[string]string{"forwarder": "warn"}}, &out)
	fwd := l.entry("forwarder", nil)
	pipe := l.entry("pipeline", nil)
	fwd.Info("hidden")
	pipe.Debug("hidden")
	l.setLevels(config.Log{Level: "debug", Components: map[string]string{"forwarder": "info"}})
	fwd.Info("shown-forwarder")
	pipe.Debug("shown-pipeline")
	s := out.String()
	if bytes.Contains(out.Bytes(), []byte("hidden")) || !bytes.Contains(out.Bytes(), []byte("shown-forwarder")) || !bytes.Contains(out.Bytes(), []byte("shown-pipeline")) {
		t.Fatalf("levels not applied:\n%s", s)
	}
}
