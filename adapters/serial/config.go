package serial

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/framing"
)

// Modes (Config.Mode).
const (
	ModeFrames   = "frames"    // cut the stream into frames (the default)
	ModeSBDModem = "sbd-modem" // drive an Iridium 9602/9603 modem with AT commands
)

// Identity settings (Config.Identity).
const (
	IdentityPayload = "payload" // empty: the decoder finds the id in the payload
	IdentityIMEI    = "imei"    // sbd-modem: the modem's IMEI (AT+CGSN)
	identityFixed   = "fixed:"  // "fixed:<id>": one id for everything on the port
)

// Parity settings (Config.Parity).
const (
	ParityNone  = "none"
	ParityOdd   = "odd"
	ParityEven  = "even"
	ParityMark  = "mark"
	ParitySpace = "space"
)

// Bauds are the rates Linux termios can set (go.bug.st/serial refuses
// others there).
var Bauds = []int{50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800,
	9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
	1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000}

// Config is the serial adapter's block. Durations are strings ("30s");
// byte strings (reply, reply_rejected) are escaped text ("\x06",
// "OK\r\n") or hex ("hex:06").
type Config struct {
	// Port is the device path. Prefer a stable /dev/serial/by-id/... name:
	// symbolic links are resolved again at each open, so the adapter
	// follows a USB adapter that comes back as another ttyUSBn. Required.
	Port string `yaml:"port"`
	// Baud is the line speed, one of Bauds. Default 9600.
	Baud int `yaml:"baud"`
	// DataBits is 5, 6, 7 or 8. Default 8.
	DataBits int `yaml:"data_bits"`
	// Parity is none (default), odd, even, mark or space.
	Parity string `yaml:"parity"`
	// StopBits is 1 (default), 1.5 or 2. 1.5 needs data_bits 5: a UART
	// sends 1.5 stop bits when asked for 2 with 5-bit characters, which
	// is how Linux termios expresses it.
	StopBits float64 `yaml:"stop_bits"`

	// Mode is frames (default: the stream is cut by Framing and each frame
	// emitted) or sbd-modem (the port is an Iridium 9602/9603 modem whose
	// mailbox is checked with AT commands; see Modem).
	Mode string `yaml:"mode"`

	// Framing cuts the stream into frames (mode frames). Default: LF/CRLF
	// lines. type idle with gap ends a frame after a silence of gap.
	Framing framing.Config `yaml:"framing"`
	// MaxFrameBytes bounds one frame; longer ones are counted, logged and
	// skipped. Default 65536.
	MaxFrameBytes int `yaml:"max_frame_bytes"`
	// Reply is written to the port after each frame is durably queued
	// (mode frames). Empty: no reply.
	Reply string `yaml:"reply"`
	// ReplyRejected is written instead of Reply after a frame went to the
	// dead letters (kept, but no decoder could read it). Unset: Reply;
	// "": nothing.
	ReplyRejected *string `yaml:"reply_rejected"`
	// Identity says what Frame.Identity holds: payload (empty; the decoder
	// finds the id in the payload — the default in mode frames),
	// fixed:<id>, or imei (the modem's IMEI — the default in mode
	// sbd-modem, where it is the only other choice besides fixed:<id>).
	Identity string `yaml:"identity"`

	// ReopenMin and ReopenMax bound the backoff between attempts to open
	// the port after it vanished or failed. Defaults 500ms and 30s.
	ReopenMin time.Duration `yaml:"reopen_min"`
	ReopenMax time.Duration `yaml:"reopen_max"`

	// Modem tunes mode sbd-modem.
	Modem ModemConfig `yaml:"modem"`
}

// ModemConfig is the modem: block (mode sbd-modem).
type ModemConfig struct {
	// CheckInterval is the time between mailbox checks (AT+SBDIX). A
	// check is an SBD session, which the provider may bill. 0: check only
	// at start and when a ring alert comes. Default 5m.
	CheckInterval time.Duration `yaml:"check_interval"`
	// SessionTimeout bounds one AT+SBDIX (a satellite session takes
	// seconds to a minute). Default 90s.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// CommandTimeout bounds every other command. Default 5s.
	CommandTimeout time.Duration `yaml:"command_timeout"`
	// RetryMin and RetryMax bound the backoff after a failed session (32
	// no network service, RF drop, ...), after a damaged MT read and after
	// the pipeline could not store a message. Defaults 30s and 10m.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// BusyRetry is the wait after MO status 35 (modem busy). Default 10s.
	BusyRetry time.Duration `yaml:"busy_retry"`
	// RingAlerts turns ring alerts on (AT+SBDMTA=1): the gateway rings
	// when a message waits, and the adapter answers with AT+SBDIXA.
	// Default true.
	RingAlerts bool `yaml:"ring_alerts"`
	// ReadAttempts is how many times one check reads the MT buffer
	// (AT+SBDRB) when the checksum is bad before leaving it for the next
	// check. Default 3.
	ReadAttempts int `yaml:"read_attempts"`
}

// DefaultModemConfig returns the modem defaults.
func DefaultModemConfig() ModemConfig {
	return ModemConfig{
		CheckInterval:  5 * time.Minute,
		SessionTimeout: 90 * time.Second,
		CommandTimeout: 5 * time.Second,
		RetryMin:       30 * time.Second,
		RetryMax:       10 * time.Minute,
		BusyRetry:      10 * time.Second,
		RingAlerts:     true,
		ReadAttempts:   3,
	}
}

// DefaultConfig returns the defaults.
func DefaultConfig() *Config {
	return &Config{
		Baud:          9600,
		DataBits:      8,
		Parity:        ParityNone,
		StopBits:      1,
		Mode:          ModeFrames,
		Framing:       framing.Config{Type: framing.TypeLine},
		MaxFrameBytes: framing.DefaultMaxFrameBytes,
		ReopenMin:     500 * time.Millisecond,
		ReopenMax:     30 * time.Second,
		Modem:         DefaultModemConfig(),
	}
}

// maxFrameLimit keeps one frame's buffer reasonable on a small gateway.
const maxFrameLimit = 16 << 20

// Validate returns every problem as *adapters.FieldError values.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, adapters.Errorf(field, format, args...))
	}
	if strings.TrimSpace(c.Port) == "" {
		add("port", "is required, e.g. /dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0 or /dev/ttyUSB0")
	}
	if !slices.Contains(Bauds, c.Baud) {
		add("baud", "must be one of %s (got %d)", joinInts(Bauds), c.Baud)
	}
	if c.DataBits < 5 || c.DataBits > 8 {
		add("data_bits", "must be 5, 6, 7 or 8 (got %d)", c.DataBits)
	}
	switch c.Parity {
	case ParityNone, ParityOdd, ParityEven, ParityMark, ParitySpace:
	default:
		add("parity", "must be one of none, odd, even, mark, space (got %q)", c.Parity)
	}
	switch c.StopBits {
	case 1, 2:
	case 1.5:
		if c.DataBits != 5 {
			add("stop_bits", "1.5 needs data_bits 5 (a UART gives 1.5 stop bits only with 5-bit characters)")
		}
	default:
		add("stop_bits", "must be 1, 1.5 or 2 (got %v)", c.StopBits)
	}
	if c.ReopenMin <= 0 {
		add("reopen_min", "must be a positive duration such as 500ms")
	}
	if c.ReopenMax < c.ReopenMin {
		add("reopen_max", "must be at least reopen_min (%s)", c.ReopenMin)
	}

	switch c.Mode {
	case ModeFrames:
		errs = append(errs, c.validateFrames()...)
	case ModeSBDModem:
		errs = append(errs, c.validateModem()...)
	default:
		add("mode", "must be frames or sbd-modem (got %q)", c.Mode)
	}
	return errors.Join(errs...)
}

func (c *Config) validateFrames() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, adapters.Errorf(field, format, args...))
	}
	if c.MaxFrameBytes < 1 || c.MaxFrameBytes > maxFrameLimit {
		add("max_frame_bytes", "must be between 1 and %d (got %d)", maxFrameLimit, c.MaxFrameBytes)
	}
	fc := c.framing()
	if fc.MaxFrameBytes < 0 {
		fc.MaxFrameBytes = 0 // reported above, once
	}
	if err := fc.ValidateAt("framing"); err != nil {
		errs = append(errs, err)
	}
	if _, err := framing.ParseBytes(c.Reply); err != nil {
		add("reply", "%v", err)
	}
	if c.ReplyRejected != nil {
		if _, err := framing.ParseBytes(*c.ReplyRejected); err != nil {
			add("reply_rejected", "%v", err)
		}
	}
	switch {
	case c.Identity == "", c.Identity == IdentityPayload:
	case strings.HasPrefix(c.Identity, identityFixed):
		if strings.TrimSpace(strings.TrimPrefix(c.Identity, identityFixed)) == "" {
			add("identity", "fixed: needs an id, e.g. fixed:pump-7")
		}
	case c.Identity == IdentityIMEI:
		add("identity", "imei only applies with mode sbd-modem")
	default:
		add("identity", "must be payload or fixed:<id> (got %q)", c.Identity)
	}
	if c.Modem != DefaultModemConfig() {
		add("modem", "only applies with mode sbd-modem")
	}
	return errs
}

func (c *Config) validateModem() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, adapters.Errorf(field, format, args...))
	}
	if c.Framing != DefaultConfig().Framing {
		add("framing", "does not apply with mode sbd-modem (the AT dialogue has its own)")
	}
	if c.Reply != "" || c.ReplyRejected != nil {
		add("reply", "does not apply with mode sbd-modem (the MT buffer is cleared instead)")
	}
	switch {
	case c.Identity == "", c.Identity == IdentityIMEI:
	case strings.HasPrefix(c.Identity, identityFixed):
		if strings.TrimSpace(strings.TrimPrefix(c.Identity, identityFixed)) == "" {
			add("identity", "fixed: needs an id, e.g. fixed:buoy-3")
		}
	default:
		add("identity", "must be imei or fixed:<id> with mode sbd-modem (got %q)", c.Identity)
	}
	m := c.Modem
	if m.CheckInterval < 0 {
		add("modem.check_interval", "must not be negative (0 checks only at start and on ring alerts)")
	}
	if m.CheckInterval == 0 && !m.RingAlerts {
		add("modem.check_interval", "is 0 and ring_alerts is off: the mailbox would be checked only once")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"modem.session_timeout", m.SessionTimeout},
		{"modem.command_timeout", m.CommandTimeout},
		{"modem.retry_min", m.RetryMin},
		{"modem.busy_retry", m.BusyRetry},
	} {
		if d.v <= 0 {
			add(d.name, "must be a positive duration")
		}
	}
	if m.RetryMax < m.RetryMin {
		add("modem.retry_max", "must be at least retry_min (%s)", m.RetryMin)
	}
	if m.ReadAttempts < 1 || m.ReadAttempts > 20 {
		add("modem.read_attempts", "must be between 1 and 20 (got %d)", m.ReadAttempts)
	}
	return errs
}

// framing is the framing config with the adapter's frame limit.
func (c *Config) framing() framing.Config {
	fc := c.Framing
	fc.MaxFrameBytes = c.MaxFrameBytes
	return fc
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

var _ adapters.Config = (*Config)(nil)
