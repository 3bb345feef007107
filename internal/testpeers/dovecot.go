package testpeers

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/client"
)

// DovecotOptions says how StartDovecot configures the server.
type DovecotOptions struct {
	// TLS adds an implicit-TLS listener (TLSPort) and allows STARTTLS on the
	// plain one, with these PEM files.
	TLS *DovecotTLS
	// Config holds extra lines appended to dovecot.conf.
	Config []string
}

// DovecotTLS names the server certificate and key (PEM files).
type DovecotTLS struct {
	CertFile, KeyFile string
}

// Dovecot is an IMAP server started for one test, on free loopback ports, in
// its own temporary folder, with one mail user. It is stopped and its
// folder removed when the test ends. Stop and Start act on the same ports
// and mail, like a real restart.
type Dovecot struct {
	// Port is the plain IMAP listener (STARTTLS when TLS is set); TLSPort
	// the implicit-TLS one (0 without TLS).
	Port, TLSPort int
	// User and Password log in; the password is also in PasswordFile.
	User, Password, PasswordFile string
	// Dir is the server's folder: config, log, runtime and mail.
	Dir string
	// MailDir is the user's Maildir (INBOX); folder X is MailDir/.X.
	MailDir string

	t        testing.TB
	bin      string
	opts     DovecotOptions
	uid, gid int
	conf     string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

var dovecotSeq atomic.Int64

// StartDovecot starts Dovecot (skipping the test when it is not installed,
// outside CI) and waits until it greets on its port.
func StartDovecot(t testing.TB, opts DovecotOptions) *Dovecot {
	t.Helper()
	bin := Require(t, "dovecot", "dovecot-imapd")
	// Not t.TempDir(): Dovecot's unprivileged processes must reach the
	// folder, and t.TempDir's parent is private (0700).
	dir, err := os.MkdirTemp("", "vigd-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Dovecot{
		Dir: dir, User: "sbd", Password: "secret-" + strconv.FormatInt(dovecotSeq.Add(1), 10),
		t: t, bin: bin, opts: opts,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecot log (%s):\n%s", d.Dir, mosqTail(d.Log(), 60))
		}
		d.Stop()
		os.RemoveAll(d.Dir)
	})
	if err := d.prepare(); err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	for range 3 {
		d.Port = FreePort(t)
		if opts.TLS != nil {
			d.TLSPort = FreePort(t)
		}
		if err = d.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("dovecot: %v\n%s", err, mosqTail(d.Log(), 40))
	}
	return d
}

// Addr is "127.0.0.1:Port".
func (d *Dovecot) Addr() string { return "127.0.0.1:" + strconv.Itoa(d.Port) }

// TLSAddr is "127.0.0.1:TLSPort".
func (d *Dovecot) TLSAddr() string { return "127.0.0.1:" + strconv.Itoa(d.TLSPort) }

// Log returns what the server logged so far.
func (d *Dovecot) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "dovecot.log"))
	return string(b)
}

// mailOwner picks the user owning the mail: the current one when not root
// (Dovecot then runs unprivileged), else "vmail" if it exists, else nobody.
func mailOwner() (uid, gid int, name string, err error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return 0, 0, "", err
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		return uid, gid, u.Username, nil
	}
	for _, n := range []string{"vmail", "nobody"} {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		return uid, gid, n, nil
	}
	return 0, 0, "", fmt.Errorf("no unprivileged user (vmail, nobody) to own the mail")
}

func (d *Dovecot) prepare() error {
	uid, gid, owner, err := mailOwner()
	if err != nil {
		return err
	}
	d.uid, d.gid = uid, gid
	if err := os.Chmod(d.Dir, 0o755); err != nil {
		return err
	}
	d.MailDir = filepath.Join(d.Dir, "mail", d.User)
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(d.MailDir, sub), 0o700); err != nil {
			return err
		}
	}
	if err := chownTree(filepath.Join(d.Dir, "mail"), uid, gid); err != nil {
		return err
	}
	users := filepath.Join(d.Dir, "users")
	if err := os.WriteFile(users, []byte(d.User+":{PLAIN}"+d.Password+"\n"), 0o644); err != nil {
		return err
	}
	d.PasswordFile = filepath.Join(d.Dir, "password")
	if err := os.WriteFile(d.PasswordFile, []byte(d.Password+"\n"), 0o600); err != nil {
		return err
	}
	loginUser, internalUser, internalGroup := "dovenull", "dovecot", "dovecot"
	if os.Geteuid() != 0 {
		loginUser, internalUser, internalGroup = owner, owner, owner
		if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
			internalGroup = g.Name
		}
	}
	d.conf = fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
info_log_path = %[1]s/dovecot.log
listen = 127.0.0.1
protocols = imap
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests try wrong passwords on purpose: answer at once, no per-IP penalty.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
default_login_user = %[2]s
default_internal_user = %[3]s
default_internal_group = %[4]s
first_valid_uid = 1
mail_location = maildir:%[1]s/mail/%%u
userdb {
  driver = static
  args = uid=%[5]d gid=%[6]d home=%[1]s/mail/%%u
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[1]s/users
}
namespace inbox {
  inbox = yes
  separator = /
}
`, d.Dir, loginUser, internalUser, internalGroup, uid, gid)
	return nil
}

func chownTree(root string, uid, gid int) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

func (d *Dovecot) writeConfig() (string, error) {
	var b strings.Builder
	b.WriteString(d.conf)
	fmt.Fprintf(&b, "service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n    port = %d\n  }\n", d.Port)
	if tl := d.opts.TLS; tl != nil {
		fmt.Fprintf(&b, "  inet_listener imaps {\n    address = 127.0.0.1\n    port = %d\n    ssl = yes\n  }\n}\n", d.TLSPort)
		fmt.Fprintf(&b, "ssl = yes\nssl_cert = <%s\nssl_key = <%s\n", tl.CertFile, tl.KeyFile)
	} else {
		b.WriteString("  inet_listener imaps {\n    port = 0\n  }\n}\nssl = no\n")
	}
	for _, l := range d.opts.Config {
		b.WriteString(l + "\n")
	}
	p := filepath.Join(d.Dir, "dovecot.conf")
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// Start starts the server again after Stop, on the same ports and mail.
func (d *Dovecot) Start() {
	d.t.Helper()
	if err := d.start(); err != nil {
		d.t.Fatalf("dovecot restart: %v\n%s", err, mosqTail(d.Log(), 30))
	}
}

func (d *Dovecot) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		select {
		case <-d.exited:
		default:
			return fmt.Errorf("already running")
		}
	}
	conf, err := d.writeConfig()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(d.Dir, "dovecot.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// -F keeps the master in the foreground, so this process owns it.
	cmd := exec.Command(d.bin, "-F", "-c", conf)
	cmd.Dir = d.Dir
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so Stop can end the per-connection imap
	// processes too (they outlive the master otherwise).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(exited)
	}()
	d.cmd, d.exited = cmd, exited

	ports := []int{d.Port}
	if d.TLSPort != 0 {
		ports = append(ports, d.TLSPort)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, port := range ports {
		addr := "127.0.0.1:" + strconv.Itoa(port)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				b, _ := os.ReadFile(filepath.Join(d.Dir, "dovecot.out"))
				return fmt.Errorf("dovecot exited at start (port %d): %s", port, b)
			default:
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				<-exited
				return fmt.Errorf("dovecot does not listen on %s: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// Stop ends the server and every client session process (SIGTERM to the
// master, then SIGKILL to what is left of its process group), as a crash or
// a reboot of the mail server would, and waits until its port is free.
func (d *Dovecot) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	// The master returns before its children have closed every socket;
	// wait until the port is free so a restart can bind it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		c, err := net.DialTimeout("tcp", d.Addr(), 100*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

var deliverSeq atomic.Int64

// folderDir is the Maildir of folder ("INBOX" or "" is the root).
func (d *Dovecot) folderDir(folder string) string {
	if folder == "" || strings.EqualFold(folder, "INBOX") {
		return d.MailDir
	}
	return filepath.Join(d.MailDir, "."+strings.ReplaceAll(folder, "/", "."))
}

// Deliver writes msg into folder's Maildir new/ (as a local delivery agent
// would), creating the folder when needed. Use CRLF or LF line ends; Dovecot
// serves either.
func (d *Dovecot) Deliver(folder string, msg []byte) {
	d.t.Helper()
	dir := d.folderDir(folder)
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			d.t.Fatal(err)
		}
	}
	if err := chownTree(dir, d.uid, d.gid); err != nil {
		d.t.Fatal(err)
	}
	name := fmt.Sprintf("%d.M%dP%d.vigdtest", time.Now().Unix(), deliverSeq.Add(1), os.Getpid())
	tmp := filepath.Join(dir, "tmp", name)
	if err := os.WriteFile(tmp, msg, 0o600); err != nil {
		d.t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(tmp, d.uid, d.gid); err != nil {
			d.t.Fatal(err)
		}
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new", name)); err != nil {
		d.t.Fatal(err)
	}
}

// Client logs in as the test user over the plain port. The caller logs out.
func (d *Dovecot) Client() *client.Client {
	d.t.Helper()
	c, err := client.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, d.Addr())
	if err != nil {
		d.t.Fatalf("dovecot dial: %v", err)
	}
	c.Timeout = 10 * time.Second
	if err := c.Login(d.User, d.Password); err != nil {
		c.Logout()
		d.t.Fatalf("dovecot login: %v", err)
	}
	return c
}

// CreateFolder creates folder (no error when it exists).
func (d *Dovecot) CreateFolder(folder string) {
	d.t.Helper()
	c := d.Client()
	defer c.Logout()
	if err := c.Create(folder); err != nil && !strings.Contains(err.Error(), "exists") {
		d.t.Fatalf("dovecot create %s: %v", folder, err)
	}
}

// Append stores msg in folder over IMAP APPEND with flags (e.g.
// imap.SeenFlag), creating the folder when needed.
func (d *Dovecot) Append(folder string, msg []byte, flags ...string) {
	d.t.Helper()
	c := d.Client()
	defer c.Logout()
	if !strings.EqualFold(folder, "INBOX") {
		if err := c.Create(folder); err != nil && !strings.Contains(err.Error(), "exists") {
			d.t.Fatalf("dovecot create %s: %v", folder, err)
		}
	}
	if err := c.Append(folder, flags, time.Now(), bytes.NewBuffer(msg)); err != nil {
		d.t.Fatalf("dovecot append: %v", err)
	}
}

// DovecotMessage is what Messages reports of one message.
type DovecotMessage struct {
	UID     uint32
	Flags   []string
	Subject string
}

// Seen reports whether the message has the \Seen flag.
func (m DovecotMessage) Seen() bool { return m.HasFlag(imap.SeenFlag) }

// HasFlag reports whether the message has flag.
func (m DovecotMessage) HasFlag(flag string) bool {
	for _, f := range m.Flags {
		if strings.EqualFold(f, flag) {
			return true
		}
	}
	return false
}

// Messages lists folder's messages (read-only: flags are not changed),
// in UID order. A folder that does not exist has none.
func (d *Dovecot) Messages(folder string) []DovecotMessage {
	d.t.Helper()
	c := d.Client()
	defer c.Logout()
	mbox, err := c.Select(folder, true)
	if err != nil {
		if strings.Contains(err.Error(), "exist") {
			return nil
		}
		d.t.Fatalf("dovecot examine %s: %v", folder, err)
	}
	if mbox.Messages == 0 {
		return nil
	}
	set := new(imap.SeqSet)
	set.AddRange(1, mbox.Messages)
	ch := make(chan *imap.Message, 16)
	errc := make(chan error, 1)
	go func() { errc <- c.Fetch(set, []imap.FetchItem{imap.FetchUid, imap.FetchFlags, imap.FetchEnvelope}, ch) }()
	var out []DovecotMessage
	for m := range ch {
		dm := DovecotMessage{UID: m.Uid, Flags: m.Flags}
		if m.Envelope != nil {
			dm.Subject = m.Envelope.Subject
		}
		out = append(out, dm)
	}
	if err := <-errc; err != nil {
		d.t.Fatalf("dovecot fetch: %v", err)
	}
	return out
}
