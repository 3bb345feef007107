package ops

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/internal/testpeers"
)

// testVersion is what the packages are built as: `vigd version` must say
// it, the .deb carries its Debian form.
const (
	testVersion = "v9.9.9-ops"
	debVersion  = "9.9.9+ops"
)

// run runs a command and fails the test when it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestPackages runs `make deb` as a release would, then checks the
// packages: their contents and conffiles, an install with dpkg (the
// binary, the user, `vigd check` on the installed files, the installed
// unit verified), an upgrade that keeps an edited conffile, removal and
// purge; and the ARM binaries run under qemu-user.
func TestPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: builds three architectures and three packages")
	}
	testpeers.Require(t, "make", "make")
	dist := t.TempDir()
	t0 := time.Now()
	cmd := exec.Command("make", "deb", "DIST="+dist, "VERSION="+testVersion)
	cmd.Dir = testpeers.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	t.Logf("make deb: %s", time.Since(t0).Round(time.Second))
	debs := map[string]string{}
	for _, a := range []string{"amd64", "arm64", "armhf"} {
		p := filepath.Join(dist, fmt.Sprintf("vigd_%s_%s.deb", debVersion, a))
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("make deb did not write %s: %v", filepath.Base(p), err)
		}
		debs[a] = p
		t.Logf("%s: %.1f MiB", filepath.Base(p), float64(st.Size())/(1<<20))
	}
	for _, b := range []string{"amd64", "arm64", "armv7"} {
		p := filepath.Join(dist, "vigd-linux-"+b)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("make dist did not write %s", p)
		}
		t.Logf("vigd-linux-%s: %.1f MiB", b, float64(st.Size())/(1<<20))
	}

	t.Run("contents", func(t *testing.T) {
		dpkgDeb := testpeers.Require(t, "dpkg-deb", "dpkg")
		for arch, p := range debs {
			list := run(t, dpkgDeb, "--contents", p)
			for _, f := range []string{"./usr/bin/vigd", "./lib/systemd/system/vigd.service", "./etc/vigd/vigd.yaml",
				"./etc/vigd/decoders/toa5-station.yaml", "./usr/share/doc/vigd/examples/", "./usr/share/doc/vigd/README.md"} {
				if !strings.Contains(list, f) {
					t.Errorf("%s lacks %s", arch, f)
				}
			}
			if got := strings.TrimSpace(run(t, dpkgDeb, "--field", p, "Architecture")); got != arch {
				t.Errorf("%s: Architecture %q", filepath.Base(p), got)
			}
			ctl := filepath.Join(t.TempDir(), "DEBIAN")
			run(t, dpkgDeb, "--control", p, ctl)
			conf, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
			if err != nil {
				t.Fatalf("%s has no conffiles: %v", arch, err)
			}
			for _, f := range []string{"/etc/vigd/vigd.yaml", "/etc/vigd/decoders/toa5-station.yaml"} {
				if !strings.Contains(string(conf), f+"\n") {
					t.Errorf("%s: %s is not a conffile:\n%s", arch, f, conf)
				}
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				if st, err := os.Stat(filepath.Join(ctl, s)); err != nil || st.Mode()&0o111 == 0 {
					t.Errorf("%s: maintainer script %s missing or not executable", arch, s)
				}
			}
		}
	})

	t.Run("install", func(t *testing.T) {
		dpkg := testpeers.Require(t, "dpkg", "dpkg")
		if os.Geteuid() != 0 {
			if testpeers.InCI() {
				t.Fatal("CI runs as root; dpkg -i needs it")
			}
			t.Skip("skipped: dpkg -i needs root")
		}
		if exec.Command(dpkg, "--status", "vigd").Run() == nil {
			t.Skip("skipped: a vigd package is installed on this machine; not touching it")
		}
		arch := map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf"}[runtime.GOARCH]
		deb := debs[arch]
		if deb == "" {
			t.Skipf("skipped: no package for %s", runtime.GOARCH)
		}
		t.Cleanup(func() { _ = exec.Command(dpkg, "--purge", "vigd").Run() })

		run(t, dpkg, "--install", deb)
		if out := run(t, "/usr/bin/vigd", "version"); !strings.Contains(out, testVersion) {
			t.Errorf("installed vigd version: %q, want %s", out, testVersion)
		}
		u, err := user.Lookup("vigd")
		if err != nil {
			t.Fatalf("no system user vigd after install: %v", err)
		}
		if st, err := os.Stat("/var/lib/vigd"); err != nil || !st.IsDir() {
			t.Errorf("/var/lib/vigd: %v", err)
		}
		out := run(t, "/usr/bin/vigd", "check", "-c", "/etc/vigd/vigd.yaml")
		if !strings.Contains(out, "ok (") {
			t.Errorf("vigd check on the installed config: %s", out)
		}
		// ExecReload runs the check as the service user.
		if ru, err := exec.LookPath("runuser"); err == nil {
			if out, err := exec.Command(ru, "-u", "vigd", "--", "/usr/bin/vigd", "check", "-c", "/etc/vigd/vigd.yaml").CombinedOutput(); err != nil {
				t.Errorf("vigd check as user vigd (uid %s): %v\n%s", u.Uid, err, out)
			}
		}
		// The installed unit, with its real paths.
		if sa, err := exec.LookPath("systemd-analyze"); err == nil {
			if out, err := exec.Command(sa, "verify", "/lib/systemd/system/vigd.service").CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify on the installed unit: %v\n%s", err, out)
			}
		}

		// An upgrade (here: the same version again) keeps an edited conffile.
		edit := "\n# edited by the operator\n"
		f, err := os.OpenFile("/etc/vigd/vigd.yaml", os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.WriteString(edit)
		f.Close()
		run(t, dpkg, "--force-confold", "--install", deb)
		if b, _ := os.ReadFile("/etc/vigd/vigd.yaml"); !strings.HasSuffix(string(b), edit) {
			t.Error("the upgrade replaced the edited /etc/vigd/vigd.yaml")
		}

		// Remove: the program goes, the configuration, data and user stay.
		run(t, dpkg, "--remove", "vigd")
		for _, p := range []string{"/usr/bin/vigd", "/lib/systemd/system/vigd.service"} {
			if exists(p) {
				t.Errorf("%s left after dpkg --remove", p)
			}
		}
		if !exists("/etc/vigd/vigd.yaml") {
			t.Error("dpkg --remove deleted the configuration (only purge may)")
		}
		if _, err := user.Lookup("vigd"); err != nil {
			t.Error("dpkg --remove deleted the user (only purge may)")
		}

		// Purge: nothing is left.
		run(t, dpkg, "--purge", "vigd")
		for _, p := range []string{"/usr/bin/vigd", "/etc/vigd", "/var/lib/vigd", "/lib/systemd/system/vigd.service",
			"/etc/systemd/system/multi-user.target.wants/vigd.service"} {
			if exists(p) {
				t.Errorf("%s left after dpkg --purge", p)
			}
		}
		if _, err := user.Lookup("vigd"); err == nil {
			t.Error("user vigd left after dpkg --purge")
		}
		if exec.Command(dpkg, "--status", "vigd").Run() == nil {
			t.Error("dpkg still knows vigd after --purge")
		}
	})

	for _, c := range []struct{ bin, qemu, goarch string }{
		{"vigd-linux-arm64", "qemu-aarch64", "linux/arm64"},
		{"vigd-linux-armv7", "qemu-arm", "linux/arm"},
	} {
		t.Run(c.bin, func(t *testing.T) {
			q := testpeers.Require(t, c.qemu, "qemu-user")
			bin := filepath.Join(dist, c.bin)
			out := run(t, q, bin, "version")
			if !strings.Contains(out, testVersion) || !strings.Contains(out, c.goarch) {
				t.Fatalf("%s version: %q, want %s and %s", c.bin, out, testVersion, c.goarch)
			}
			// Every shipped decoder's examples on the target architecture
			// (32-bit arm catches integer-width mistakes).
			cmd := exec.Command(q, bin, "decoders", "test", "--decoders", filepath.Join(testpeers.RepoRoot(), "configs", "decoders"))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s decoders test: %v\n%s", c.bin, err, out)
			}
		})
	}
}
