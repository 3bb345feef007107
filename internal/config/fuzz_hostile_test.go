package config

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	_ "github.com/vigd/vigd/adapters/iridium/directip"
	_ "github.com/vigd/vigd/adapters/iridium/rockblock"
	_ "github.com/vigd/vigd/adapters/tcp"
)

// FuzzParse feeds arbitrary bytes to the strict loader: it must never
// panic, and every error it returns is located in the file it was given.
// Seeded with the shipped configs and the tests' snippets.
func FuzzParse(f *testing.F) {
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	for _, p := range []string{"configs/vigd.example.yaml", "configs/demo.yaml"} {
		if b, err := os.ReadFile(filepath.Join(root, p)); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		good,
		"",
		"- a\n- b\n",
		"data_dir: [\n",
		"adapters: {a: 1}\n",
		"adapters:\n  - name: x\n    kind: tcp\n    listen: \":1\"\n    framing: {type: length, length_bytes: 3}\n",
		"adapters:\n  - {name: a/b, kind: fake}\n  - {name: a/b, kind: nope}\n  - 7\n",
		"forwarder:\n  url: \"%zz\"\n  retry: {min: 1h, max: 1s}\n  tls: {cert_file: x}\n",
		"a: &x [*x]\n",
		"a: &a [*a, *a, *a]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n",
		"queue:\n  data: {max_age: -1s, policy: sometimes}\n",
		"log: {level: chatty, components: {forwarder: 7}}\n",
		"http: {listen: nope, tls: {client_ca_file: ca.pem}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const path = "/etc/vigd/fuzz.yaml"
		cfg, err := Parse(path, b)
		if err == nil && cfg == nil {
			t.Fatal("no config and no error")
		}
		for _, e := range flatten(err) {
			if e == nil {
				continue
			}
			var ce *Error
			if !errors.As(e, &ce) {
				t.Fatalf("error %T %q is not a located *Error", e, e)
			}
			if !strings.HasPrefix(e.Error(), path) {
				t.Fatalf("error %q does not name the file", e)
			}
		}
	})
}
