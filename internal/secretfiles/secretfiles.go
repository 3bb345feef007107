// Package secretfiles finds where vigd's configuration keeps secrets — the
// files named by secret_file, password_file, key_file, tokens_file keys
// (and token_files/services maps) anywhere in
// the config (adapters included), and the config file itself when it holds
// a secret inline (a password in a URL) — and reports those that every user
// of the machine can read. `vigd check` prints the findings and `vigd run`
// logs them at start; they name the file and the key, never the content.
//
// The keys are found by their YAML names through reflection, so a new
// adapter kind with a password_file key is covered without being listed
// here.
package secretfiles

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/vigd/vigd/internal/config"
)

// fileKeys are the YAML keys whose value is a file holding a secret.
var fileKeys = map[string]bool{"secret_file": true, "password_file": true, "key_file": true, "token_file": true, "tokens_file": true}

// fileMapKeys are YAML keys of maps whose values are such files (the http
// adapter's auth.token_files and auth.services).
var fileMapKeys = map[string]bool{"token_files": true, "services": true, "secret_files": true}

// Finding is one secret file every user can read.
type Finding struct {
	// Key is where the file is named ("forwarder.secret_file",
	// `adapters "mail" (sbdmail).password_file`), or "config" for the
	// config file itself.
	Key  string
	File string
	Mode fs.FileMode
}

func (f Finding) String() string {
	return fmt.Sprintf("%s (%s) holds a secret and is readable by every user (mode %04o); chmod o-r it", f.File, f.Key, f.Mode.Perm())
}

// Ref is a secret's place in the configuration.
type Ref struct {
	Key  string
	File string // "" for a secret held inline in the config file
}

// Refs lists every secret file the configuration names and every inline
// secret it holds, sorted by key.
func Refs(cfg *config.Config) []Ref {
	var out []Ref
	w := walker{add: func(r Ref) { out = append(out, r) }}
	v := reflect.ValueOf(cfg).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || name == "adapters" {
			continue
		}
		w.walk(v.Field(i), name)
	}
	for _, a := range cfg.Adapters {
		if a.Settings != nil {
			w.walk(reflect.ValueOf(a.Settings), fmt.Sprintf("adapters %q (%s)", a.Name, a.Kind))
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Check reports the world-readable ones among the config file and the
// secret files cfg names. A file that cannot be read is not reported here
// (loading it reports that).
func Check(cfg *config.Config) []Finding {
	var out []Finding
	inline := false
	seen := map[string]bool{}
	for _, r := range Refs(cfg) {
		if r.File == "" {
			inline = true
			continue
		}
		if seen[r.File] {
			continue
		}
		seen[r.File] = true
		if m, ok := worldReadable(r.File); ok {
			out = append(out, Finding{Key: r.Key, File: r.File, Mode: m})
		}
	}
	if inline && cfg.File != "" {
		if m, ok := worldReadable(cfg.File); ok {
			out = append([]Finding{{Key: "config", File: cfg.File, Mode: m}}, out...)
		}
	}
	return out
}

// worldReadable reports whether others may read path (following links:
// the target's mode is what counts).
func worldReadable(path string) (fs.FileMode, bool) {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		return 0, false
	}
	return st.Mode(), st.Mode().Perm()&0o004 != 0
}

type walker struct {
	add   func(Ref)
	depth int
}

func (w *walker) walk(v reflect.Value, path string) {
	if w.depth > 16 {
		return
	}
	w.depth++
	defer func() { w.depth-- }()
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if _, opts, _ := strings.Cut(f.Tag.Get("yaml"), ","); f.IsExported() && strings.Contains(opts, "inline") {
				w.walk(v.Field(i), path)
				continue
			}
			name := yamlName(f)
			if name == "" {
				continue
			}
			w.field(v.Field(i), path+"."+name, name)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			w.walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

func (w *walker) field(v reflect.Value, path, name string) {
	path = strings.TrimPrefix(path, ".")
	if v.Kind() == reflect.String {
		s := v.String()
		switch {
		case s == "":
		case fileKeys[name]:
			w.add(Ref{Key: path, File: s})
		case inlineSecretKey(name):
			w.add(Ref{Key: path})
		case strings.Contains(s, "://") && hasURLPassword(s):
			w.add(Ref{Key: path})
		}
		return
	}
	if v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String && v.Type().Elem().Kind() == reflect.String {
		if !fileMapKeys[name] {
			return
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			if f := v.MapIndex(k).String(); f != "" {
				w.add(Ref{Key: path + "." + k.String(), File: f})
			}
		}
		return
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String {
		for i := 0; i < v.Len(); i++ {
			if s := v.Index(i).String(); strings.Contains(s, "://") && hasURLPassword(s) {
				w.add(Ref{Key: fmt.Sprintf("%s[%d]", path, i)})
			}
		}
		return
	}
	w.walk(v, path)
}

// inlineSecretKey is a key that would hold a secret itself (password:,
// secret:, token:); none of vigd's own keys does, but a kind may.
func inlineSecretKey(name string) bool {
	for _, s := range []string{"password", "secret", "token"} {
		if name == s || strings.HasSuffix(name, "_"+s) {
			return true
		}
	}
	return false
}

func hasURLPassword(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return false
	}
	_, ok := u.User.Password()
	return ok
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}
