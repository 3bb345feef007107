package signer

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Secret holds an API secret. Every way of printing it (fmt verbs, %#v,
// JSON, YAML, text) gives "[redacted]", so a secret cannot reach a log or an
// error by accident. The bytes sit behind a pointer so that even fmt's
// field-by-field printing of a containing struct shows only an address.
type Secret struct{ p *secretValue }

type secretValue struct{ b []byte }

const redacted = "[redacted]"

// NewSecret wraps s; its UTF-8 bytes are the HMAC key.
func NewSecret(s string) Secret { return Secret{&secretValue{[]byte(s)}} }

// Reveal returns the secret as a string; call it only to sign.
func (s Secret) Reveal() string { return string(s.bytes()) }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return len(s.bytes()) == 0 }

func (s Secret) bytes() []byte {
	if s.p == nil {
		return nil
	}
	return s.p.b
}

func (s Secret) String() string                   { return redacted }
func (s Secret) GoString() string                 { return redacted }
func (s Secret) Format(f fmt.State, _ rune)       { _, _ = f.Write([]byte(redacted)) }
func (s Secret) MarshalJSON() ([]byte, error)     { return []byte(`"` + redacted + `"`), nil }
func (s Secret) MarshalText() ([]byte, error)     { return []byte(redacted), nil }
func (s Secret) MarshalYAML() (any, error)        { return redacted, nil }
func (s *secretValue) String() string             { return redacted }
func (s *secretValue) GoString() string           { return redacted }
func (s *secretValue) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// UnmarshalText lets a Secret be a config value (not recommended: prefer a
// file or a systemd credential).
func (s *Secret) UnmarshalText(b []byte) error {
	*s = NewSecret(string(b))
	return nil
}

// SecretSpec says where to read a secret: exactly one of File (a path) or
// Credential (a name in systemd's $CREDENTIALS_DIRECTORY, as given by
// LoadCredential= in the unit).
type SecretSpec struct {
	File       string `yaml:"secret_file"`
	Credential string `yaml:"secret_credential"`
}

// Errors of LoadSecret.
var (
	ErrSecretSpec  = errors.New("secret: exactly one of secret_file and secret_credential must be set")
	ErrNoCredDir   = errors.New("secret: $CREDENTIALS_DIRECTORY is not set (LoadCredential= missing in the unit?)")
	ErrEmptySecret = errors.New("secret: is empty")
)

// LoadSecret reads a secret as spec says and strips one trailing newline
// ("\n" or "\r\n") that editors add. Errors name the file, never its content.
func LoadSecret(spec SecretSpec) (Secret, error) {
	var path string
	switch {
	case spec.File != "" && spec.Credential != "", spec.File == "" && spec.Credential == "":
		return Secret{}, ErrSecretSpec
	case spec.File != "":
		path = spec.File
	default:
		if strings.ContainsAny(spec.Credential, `/\`) || spec.Credential == "." || spec.Credential == ".." {
			return Secret{}, fmt.Errorf("secret: credential name %q: must be a plain name", spec.Credential)
		}
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return Secret{}, fmt.Errorf("credential %q: %w", spec.Credential, ErrNoCredDir)
		}
		path = filepath.Join(dir, spec.Credential)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		// *fs.PathError holds only the operation, the path and the cause.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return Secret{}, fmt.Errorf("secret: %w", err)
		}
		return Secret{}, fmt.Errorf("secret: read %s: failed", path)
	}
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	if len(b) == 0 {
		return Secret{}, fmt.Errorf("%w: %s", ErrEmptySecret, path)
	}
	return Secret{&secretValue{b}}, nil
}

var (
	_ fmt.Stringer             = Secret{}
	_ fmt.GoStringer           = Secret{}
	_ fmt.Formatter            = Secret{}
	_ json.Marshaler           = Secret{}
	_ encoding.TextMarshaler   = Secret{}
	_ encoding.TextUnmarshaler = (*Secret)(nil)
)
