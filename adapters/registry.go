package adapters

import (
	"fmt"
	"sort"
	"sync"

	"github.com/sirupsen/logrus"
)

// Config is an adapter kind's settings struct (yaml tags in snake_case).
// Validate returns every problem it finds, joined with errors.Join; each
// should be a *FieldError so the config loader can point at the line of the
// offending key.
type Config interface {
	Validate() error
}

// FieldError names a key, relative to the adapter's block ("tls.ca_file",
// "framing.length_bytes"), and what is wrong with its value.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Errorf is shorthand for a *FieldError.
func Errorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Env is what the daemon gives every adapter it builds.
type Env struct {
	// Log already carries component=adapter, name and kind.
	Log *logrus.Entry
	// StateDir is a folder private to this adapter instance for small state
	// (high-water marks, de-duplication sets); it exists.
	StateDir string
}

// Kind describes one adapter kind for the registry.
type Kind struct {
	Name string
	// NewConfig returns a pointer to a Config holding the defaults; the
	// loader decodes the adapter's YAML block into it (unknown keys are
	// errors) and then calls Validate.
	NewConfig func() Config
	// New builds the adapter from a validated config. It does no I/O.
	New func(name string, cfg Config, env Env) (Adapter, error)
}

var (
	kindsMu sync.RWMutex
	kinds   = map[string]Kind{}
)

// Register makes a kind available to the config loader. Adapter packages call
// it from init; registering a name twice is a programmer error.
func Register(k Kind) {
	kindsMu.Lock()
	defer kindsMu.Unlock()
	if _, dup := kinds[k.Name]; dup {
		panic("adapters: kind registered twice: " + k.Name)
	}
	kinds[k.Name] = k
}

// Lookup finds a registered kind.
func Lookup(name string) (Kind, bool) {
	kindsMu.RLock()
	defer kindsMu.RUnlock()
	k, ok := kinds[name]
	return k, ok
}

// Kinds lists the registered kind names, sorted.
func Kinds() []string {
	kindsMu.RLock()
	defer kindsMu.RUnlock()
	out := make([]string, 0, len(kinds))
	for n := range kinds {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
