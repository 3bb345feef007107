package httpingest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/vigd/vigd/forwarder/signer"
)

// MinTokenLength is the shortest bearer token accepted in a tokens file.
const MinTokenLength = 16

var tokenNameRe = regexp.MustCompile(`^[A-Za-z0-9._@-]+$`)

// errUnauthorized is the class of every authentication failure; the
// wrapped detail names the reason, never a token or a signature.
var errUnauthorized = errors.New("unauthorized")

// authenticator checks a request's credentials (headers and TLS state;
// the body is not read yet) and returns the name to record in Meta
// auth_name.
type authenticator interface {
	authenticate(r *http.Request) (name string, err error)
	scheme() string // the WWW-Authenticate challenge, "" for none
}

// tokenSet holds bearer tokens as SHA-256 sums with their names. Every
// check compares the presented token's sum with all of them in constant
// time, so neither a token's content nor which one nearly matched shows
// in the timing.
type tokenSet struct {
	names []string
	sums  [][sha256.Size]byte
}

func (s *tokenSet) add(name, token, where string) error {
	if !tokenNameRe.MatchString(name) {
		return fmt.Errorf("%s: name %q: use letters, digits, '.', '_', '-', '@'", where, name)
	}
	if len(token) < MinTokenLength {
		return fmt.Errorf("%s: the token of %q is shorter than %d characters", where, name, MinTokenLength)
	}
	sum := sha256.Sum256([]byte(token))
	for i, n := range s.names {
		if n == name {
			return fmt.Errorf("%s: name %q is given twice", where, name)
		}
		if s.sums[i] == sum {
			return fmt.Errorf("%s: the token of %q is the token of %q too", where, name, n)
		}
	}
	s.names = append(s.names, name)
	s.sums = append(s.sums, sum)
	return nil
}

// match returns the name of the token, if it is one of the set.
func (s *tokenSet) match(token string) (string, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range s.sums {
		if subtle.ConstantTimeCompare(sum[:], s.sums[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return s.names[found], true
}

// parseTokens reads a tokens file: "name token" a line, blank lines and
// lines starting with '#' ignored. Errors give the line, never a token.
func parseTokens(file string, data []byte, into *tokenSet) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		where := fmt.Sprintf("%s:%d", file, line)
		f := strings.Fields(text)
		if len(f) != 2 {
			return fmt.Errorf("%s: want \"name token\" (2 fields), got %d fields", where, len(f))
		}
		if err := into.add(f[0], f[1], where); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: line %d: %v", file, line+1, err)
	}
	return nil
}

type bearerAuth struct{ tokens *tokenSet }

func (b *bearerAuth) scheme() string { return `Bearer realm="vigd"` }

func (b *bearerAuth) authenticate(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", fmt.Errorf("%w: no Authorization header", errUnauthorized)
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: Authorization is not a Bearer token", errUnauthorized)
	}
	name, ok := b.tokens.match(strings.TrimSpace(token))
	if !ok {
		return "", fmt.Errorf("%w: unknown bearer token", errUnauthorized)
	}
	return name, nil
}

type hmacAuth struct{ v *signer.Verifier }

func (a *hmacAuth) scheme() string { return signer.Scheme }

func (a *hmacAuth) authenticate(r *http.Request) (string, error) {
	id, err := a.v.VerifyRequest(r)
	if err != nil {
		// signer's errors hold the service id and the reason, never the
		// secret or the signature.
		return "", fmt.Errorf("%w: %w", errUnauthorized, err)
	}
	return id, nil
}

type certAuth struct{}

func (certAuth) scheme() string { return "" }

func (certAuth) authenticate(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", fmt.Errorf("%w: no verified client certificate", errUnauthorized)
	}
	return certName(r), nil
}

// certName names a verified client certificate: its common name, else its
// first DNS name, else its serial number.
func certName(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ""
	}
	leaf := r.TLS.VerifiedChains[0][0]
	switch {
	case leaf.Subject.CommonName != "":
		return leaf.Subject.CommonName
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	}
	return "serial:" + leaf.SerialNumber.String()
}

type noAuth struct{}

func (noAuth) scheme() string                             { return "" }
func (noAuth) authenticate(*http.Request) (string, error) { return "", nil }

// readSecretFile reads a one-value file, dropping surrounding white space
// (editors add a newline). Errors name the file, never its content.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return "", err
		}
		return "", fmt.Errorf("read %s: failed", path)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// loadAuth reads the credential files the config names.
func loadAuth(c *AuthConfig) (authenticator, error) {
	switch c.Mode {
	case AuthBearer:
		ts := &tokenSet{}
		if c.TokensFile != "" {
			data, err := os.ReadFile(c.TokensFile)
			if err != nil {
				return nil, fmt.Errorf("auth.tokens_file: %w", err)
			}
			if err := parseTokens(c.TokensFile, data, ts); err != nil {
				return nil, fmt.Errorf("auth.tokens_file: %w", err)
			}
		}
		names := make([]string, 0, len(c.TokenFiles))
		for n := range c.TokenFiles {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			tok, err := readSecretFile(c.TokenFiles[n])
			if err != nil {
				return nil, fmt.Errorf("auth.token_files.%s: %w", n, err)
			}
			if err := ts.add(n, tok, "auth.token_files."+n); err != nil {
				return nil, err
			}
		}
		if len(ts.names) == 0 {
			return nil, errors.New("auth: no bearer tokens")
		}
		return &bearerAuth{tokens: ts}, nil
	case AuthHMAC:
		secrets := map[string]signer.Secret{}
		for id, file := range c.Services {
			s, err := signer.LoadSecret(signer.SecretSpec{File: file})
			if err != nil {
				return nil, fmt.Errorf("auth.services.%s: %w", id, err)
			}
			secrets[id] = s
		}
		return &hmacAuth{v: &signer.Verifier{
			Config: c.Signer,
			Skew:   c.MaxSkew,
			Lookup: func(id string) (signer.Secret, bool) { s, ok := secrets[id]; return s, ok },
		}}, nil
	case AuthClientCert:
		return certAuth{}, nil
	case AuthNone:
		return noAuth{}, nil
	}
	return nil, fmt.Errorf("auth.mode %q", c.Mode)
}

var (
	_ authenticator = (*bearerAuth)(nil)
	_ authenticator = (*hmacAuth)(nil)
	_ authenticator = certAuth{}
	_ authenticator = noAuth{}
)
