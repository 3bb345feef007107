package ops

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/internal/testpeers"
)

// unitFile is systemd/vigd.service parsed: section → key → values in order.
type unitFile map[string]map[string][]string

func parseUnit(t testing.TB, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	sec := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			sec = l[1 : len(l)-1]
			u[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || sec == "" {
				t.Fatalf("%s: not a key=value line in a section: %q", path, l)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

func (u unitFile) one(t testing.TB, sec, key string) string {
	t.Helper()
	vs := u[sec][key]
	if len(vs) != 1 {
		t.Errorf("[%s] %s: %d values %q, want one", sec, key, len(vs), vs)
		return ""
	}
	return vs[0]
}

// TestUnitDirectives checks the settings the service relies on, and that
// the packaged config matches the unit (credential name, state folder).
func TestUnitDirectives(t *testing.T) {
	root := testpeers.RepoRoot()
	u := parseUnit(t, filepath.Join(root, "systemd", "vigd.service"))
	want := map[string]string{
		"Type":                     "notify",
		"NotifyAccess":             "main",
		"ExecStart":                "/usr/bin/vigd run -c /etc/vigd/vigd.yaml",
		"Restart":                  "on-failure",
		"RestartPreventExitStatus": "78",
		"User":                     "vigd",
		"StateDirectory":           "vigd",
		"ConfigurationDirectory":   "vigd",
		"SupplementaryGroups":      "dialout",
		"NoNewPrivileges":          "yes",
		"ProtectSystem":            "strict",
		"ProtectHome":              "yes",
		"PrivateTmp":               "yes",
		"DevicePolicy":             "closed",
		"CapabilityBoundingSet":    "",
	}
	for k, v := range want {
		if got := u.one(t, "Service", k); got != v {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	wd, err := time.ParseDuration(u.one(t, "Service", "WatchdogSec"))
	if err != nil || wd <= 30*time.Second {
		t.Errorf("WatchdogSec=%s: want a duration above the default forwarder.timeout (30s)", u.one(t, "Service", "WatchdogSec"))
	}
	stop, err := time.ParseDuration(u.one(t, "Service", "TimeoutStopSec"))
	if err != nil || stop < 25*time.Second {
		t.Errorf("TimeoutStopSec=%s: the graceful stop needs up to 10s of flush plus the answer in flight", u.one(t, "Service", "TimeoutStopSec"))
	}
	if r := u["Service"]["ExecReload"]; len(r) == 0 || r[len(r)-1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload=%q: the last must send SIGHUP", r)
	}
	cred := u.one(t, "Service", "LoadCredential")
	name, src, _ := strings.Cut(cred, ":")
	if name == "" || !strings.HasPrefix(src, "/etc/vigd/") {
		t.Errorf("LoadCredential=%q: want NAME:/etc/vigd/FILE", cred)
	}
	devs := strings.Join(u["Service"]["DeviceAllow"], " ")
	for _, d := range []string{"char-ttyS", "char-ttyUSB", "char-ttyACM"} {
		if !strings.Contains(devs, d) {
			t.Errorf("DeviceAllow lacks %s (serial adapters): %q", d, devs)
		}
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%q", got)
	}

	// The packaged config reads the credential the unit loads and keeps
	// its data in the StateDirectory.
	b, err := os.ReadFile(filepath.Join(root, "packaging", "vigd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		DataDir   string   `yaml:"data_dir"`
		Decoders  []string `yaml:"decoders"`
		Forwarder struct {
			SecretCredential string `yaml:"secret_credential"`
			SecretFile       string `yaml:"secret_file"`
			Timeout          string `yaml:"timeout"`
		} `yaml:"forwarder"`
	}
	if err := yaml.Unmarshal(b, &pc); err != nil {
		t.Fatal(err)
	}
	if pc.DataDir != "/var/lib/vigd" {
		t.Errorf("packaged data_dir %q, want /var/lib/vigd (StateDirectory=vigd)", pc.DataDir)
	}
	if pc.Forwarder.SecretCredential != name || pc.Forwarder.SecretFile != "" {
		t.Errorf("packaged forwarder secret: credential %q file %q; want credential %q (LoadCredential)", pc.Forwarder.SecretCredential, pc.Forwarder.SecretFile, name)
	}
	if to, err := time.ParseDuration(pc.Forwarder.Timeout); err != nil || to >= wd {
		t.Errorf("packaged forwarder.timeout %q must be below WatchdogSec %s", pc.Forwarder.Timeout, wd)
	}
	if len(pc.Decoders) != 1 || pc.Decoders[0] != "/etc/vigd/decoders" {
		t.Errorf("packaged decoders %q, want [/etc/vigd/decoders]", pc.Decoders)
	}
}

// TestUnitVerify runs `systemd-analyze verify` on the unit, with its
// binary paths pointing at a freshly built vigd; any warning fails. A copy
// with a mistake shows that verify does report one here.
func TestUnitVerify(t *testing.T) {
	sa := testpeers.Require(t, "systemd-analyze", "systemd")
	bin := testpeers.Binary(t, "vigd")
	src, err := os.ReadFile(filepath.Join(testpeers.RepoRoot(), "systemd", "vigd.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unit := strings.ReplaceAll(string(src), "/usr/bin/vigd", bin)
	p := filepath.Join(dir, "vigd.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	bad := filepath.Join(dir, "bad", "vigd.service")
	_ = os.MkdirAll(filepath.Dir(bad), 0o755)
	if err := os.WriteFile(bad, []byte(strings.Replace(unit, "WatchdogSec=", "WatchdogSex=", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(sa, "verify", bad).CombinedOutput(); !strings.Contains(string(out), "WatchdogSex") {
		t.Fatalf("systemd-analyze verify did not report an unknown key: %q", out)
	}

	// The exposure score of the hardening (systemd >= 250 can rate a unit
	// file offline).
	out, err = exec.Command(sa, "security", "--offline=true", "--no-pager", p).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Logf("systemd-analyze security --offline not available here (%v)", err)
		return
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security exposure: %.1f", score)
	if score > 2.5 {
		t.Errorf("exposure %.1f, want <= 2.5 (hardening lost?)\n%s", score, out)
	}
}

// TestPackagedConfigChecks runs `vigd check` on the packaged config with
// its decoder folder pointed at the shipped decoders: what the package
// installs as /etc/vigd passes the check.
func TestPackagedConfigChecks(t *testing.T) {
	root := testpeers.RepoRoot()
	b, err := os.ReadFile(filepath.Join(root, "packaging", "vigd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.ReplaceAll(string(b), "/etc/vigd/decoders", filepath.Join(root, "configs", "decoders"))
	if conf == string(b) {
		t.Fatal("packaged config does not name /etc/vigd/decoders")
	}
	p := filepath.Join(t.TempDir(), "vigd.yaml")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testpeers.Binary(t, "vigd"), "check", "-c", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": ok (") {
		t.Fatalf("vigd check on the packaged config: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// TestRunBrokenConfigExits78: `vigd run` on a broken config exits with 78
// (EX_CONFIG), which the unit's RestartPreventExitStatus=78 keeps from
// restarting in a loop, and says where the mistake is.
func TestRunBrokenConfigExits78(t *testing.T) {
	w := newWorld(t)
	cfg := w.writeConfig(conf{HTTP: testpeers.FreeAddr(t), Adapters: tcpAdapter("devices", testpeers.FreeAddr(t)) + "    colour: blue\n"})
	out, err := exec.Command(testpeers.Binary(t, "vigd"), "run", "-c", cfg).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 78 {
		t.Fatalf("vigd run on a broken config: %v, want exit status 78\n%s", err, out)
	}
	if !strings.Contains(string(out), cfg+":") || !strings.Contains(string(out), "colour") {
		t.Fatalf("the error does not point at the mistake:\n%s", out)
	}
}
