package serial

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	bugst "go.bug.st/serial"
	"gopkg.in/yaml.v3"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/adapters/framing"
)

func TestConfigYAML(t *testing.T) {
	src := `
port: /dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0
baud: 19200
data_bits: 7
parity: even
stop_bits: 2
framing:
  type: idle
  gap: 50ms
max_frame_bytes: 1024
reply: "\x06"
identity: fixed:pump-7
reopen_min: 1s
reopen_max: 1m
`
	c := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Baud != 19200 || c.DataBits != 7 || c.Parity != ParityEven || c.StopBits != 2 ||
		c.Framing.Type != framing.TypeIdle || c.Framing.Gap != 50*time.Millisecond ||
		c.ReopenMin != time.Second || c.ReopenMax != time.Minute || c.Mode != ModeFrames {
		t.Fatalf("decoded %+v", c)
	}
	a, err := New("x", c, adapters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if string(a.reply) != "\x06" || string(a.replyRejected) != "\x06" || a.fixedID != "pump-7" {
		t.Fatalf("reply %q rejected %q id %q", a.reply, a.replyRejected, a.fixedID)
	}
	m := c.portMode()
	if m.BaudRate != 19200 || m.DataBits != 7 || m.Parity != bugst.EvenParity || m.StopBits != bugst.TwoStopBits {
		t.Fatalf("mode %+v", m)
	}

	modem := `
port: /dev/ttyUSB0
mode: sbd-modem
modem:
  check_interval: 15m
  retry_min: 10s
  ring_alerts: false
  read_attempts: 5
`
	c = DefaultConfig()
	dec = yaml.NewDecoder(strings.NewReader(modem))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Modem.CheckInterval != 15*time.Minute || c.Modem.RetryMin != 10*time.Second || c.Modem.RingAlerts ||
		c.Modem.ReadAttempts != 5 || c.Modem.SessionTimeout != 90*time.Second {
		t.Fatalf("modem %+v", c.Modem)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *Config)
		fields []string // every field named in the errors, in order
	}{
		{"defaults with a port", func(c *Config) {}, nil},
		{"no port", func(c *Config) { c.Port = " " }, []string{"port"}},
		{"odd baud", func(c *Config) { c.Baud = 14400 }, []string{"baud"}},
		{"data bits", func(c *Config) { c.DataBits = 9 }, []string{"data_bits"}},
		{"parity", func(c *Config) { c.Parity = "N" }, []string{"parity"}},
		{"stop bits", func(c *Config) { c.StopBits = 3 }, []string{"stop_bits"}},
		{"1.5 stop bits with 8 data bits", func(c *Config) { c.StopBits = 1.5 }, []string{"stop_bits"}},
		{"1.5 stop bits with 5 data bits", func(c *Config) { c.StopBits, c.DataBits = 1.5, 5 }, nil},
		{"mode", func(c *Config) { c.Mode = "modem" }, []string{"mode"}},
		{"framing type", func(c *Config) { c.Framing.Type = "lines" }, []string{"framing.type"}},
		{"idle without gap", func(c *Config) { c.Framing.Type = framing.TypeIdle }, []string{"framing.gap"}},
		{"max frame bytes", func(c *Config) { c.MaxFrameBytes = 0 }, []string{"max_frame_bytes"}},
		{"reply escape", func(c *Config) { c.Reply = `\q` }, []string{"reply"}},
		{"reply_rejected hex", func(c *Config) { s := "hex:zz"; c.ReplyRejected = &s }, []string{"reply_rejected"}},
		{"identity", func(c *Config) { c.Identity = "remote_addr" }, []string{"identity"}},
		{"empty fixed id", func(c *Config) { c.Identity = "fixed:" }, []string{"identity"}},
		{"imei in frames mode", func(c *Config) { c.Identity = IdentityIMEI }, []string{"identity"}},
		{"modem block in frames mode", func(c *Config) { c.Modem.CheckInterval = time.Minute }, []string{"modem"}},
		{"reopen", func(c *Config) { c.ReopenMin, c.ReopenMax = 0, -1 }, []string{"reopen_min", "reopen_max"}},
		{"several at once", func(c *Config) { c.Port, c.Baud, c.Parity = "", 1, "x" }, []string{"port", "baud", "parity"}},
		{"modem defaults", func(c *Config) { c.Mode = ModeSBDModem }, nil},
		{"modem with imei and fixed", func(c *Config) { c.Mode, c.Identity = ModeSBDModem, "fixed:buoy" }, nil},
		{"modem with payload identity", func(c *Config) { c.Mode, c.Identity = ModeSBDModem, IdentityPayload }, []string{"identity"}},
		{"modem with framing and reply", func(c *Config) {
			c.Mode, c.Framing.Type, c.Reply = ModeSBDModem, framing.TypeSLIP, "ok"
		}, []string{"framing", "reply"}},
		{"modem durations", func(c *Config) {
			c.Mode = ModeSBDModem
			c.Modem = ModemConfig{CheckInterval: -1, RingAlerts: true, ReadAttempts: 0, RetryMax: -1}
		}, []string{"modem.check_interval", "modem.session_timeout", "modem.command_timeout", "modem.retry_min", "modem.busy_retry", "modem.retry_max", "modem.read_attempts"}},
		{"modem never checks", func(c *Config) {
			c.Mode, c.Modem.CheckInterval, c.Modem.RingAlerts = ModeSBDModem, 0, false
		}, []string{"modem.check_interval"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Port = "/dev/ttyUSB0"
			tc.mutate(c)
			err := c.Validate()
			var got []string
			for _, e := range flatten(err) {
				var fe *adapters.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%v is not a *adapters.FieldError", e)
				}
				got = append(got, fe.Field)
			}
			if !slices.Equal(got, tc.fields) {
				t.Fatalf("fields %q, want %q (%v)", got, tc.fields, err)
			}
			if err != nil {
				if _, nerr := New("x", c, adapters.Env{}); nerr == nil {
					t.Fatal("New accepted an invalid config")
				}
			}
		})
	}
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func TestRegistered(t *testing.T) {
	k, ok := adapters.Lookup(Kind)
	if !ok {
		t.Fatal("kind serial not registered")
	}
	c, ok := k.NewConfig().(*Config)
	if !ok || c.Baud != 9600 || c.Mode != ModeFrames || c.Framing.Type != framing.TypeLine {
		t.Fatalf("NewConfig %#v", k.NewConfig())
	}
	c.Port = "/dev/ttyUSB0"
	a, err := k.New("buoy", c, adapters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	// The constructor does no I/O: the port does not exist and nothing
	// failed; Status says it was not opened yet.
	if st := a.(adapters.StatusReporter).Status(); st.OK || !strings.Contains(st.Detail, "not opened yet") {
		t.Fatalf("status %+v", st)
	}
	if _, err := k.New("x", &struct{ adapters.Config }{}, adapters.Env{}); err == nil {
		t.Fatal("New accepted a foreign config type")
	}
}

func TestStopBitsOnePointFive(t *testing.T) {
	c := DefaultConfig()
	c.DataBits, c.StopBits = 5, 1.5
	if got := c.portMode().StopBits; got != bugst.TwoStopBits && got != bugst.OnePointFiveStopBits {
		t.Fatalf("stop bits %v", got)
	}
}
