package sbdmodem_test

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigd/vigd/adapters/serial/sbdmodem"
	"github.com/vigd/vigd/adapters/serial/sbdmodem/sbdmodemtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair serves an emulator on one end of a net.Pipe and returns a Conn on
// the other.
func pair(t *testing.T) (*sbdmodem.Conn, *sbdmodemtest.Emulator, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	em := sbdmodemtest.New("300234010000010")
	var wg sync.WaitGroup
	wg.Go(func() { _ = em.Serve(b) })
	t.Cleanup(func() {
		a.Close()
		b.Close()
		wg.Wait()
	})
	return sbdmodem.NewConn(a), em, b
}

const timeout = 2 * time.Second

func TestConnDialogue(t *testing.T) {
	c, em, _ := pair(t)
	// Echo is on at first: the echo lines must not be taken as answers.
	if _, err := c.Command("AT", timeout); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Command("ATE0", timeout); err != nil {
		t.Fatal(err)
	}
	imei, err := c.IMEI(timeout)
	if err != nil || imei != "300234010000010" {
		t.Fatalf("IMEI %q %v", imei, err)
	}
	if _, err := c.Command("AT+BOGUS", timeout); err == nil {
		t.Fatal("no error for ERROR")
	} else {
		var ce *sbdmodem.CommandError
		if !errors.As(err, &ce) || !sbdmodem.ModemError(err) {
			t.Fatalf("err %v, want a CommandError", err)
		}
	}

	// Nothing waiting.
	r, err := c.Session(false, timeout)
	if err != nil || r.MTStatus != sbdmodem.MTNone {
		t.Fatalf("empty session %+v %v", r, err)
	}

	em.Queue([]byte("first"))
	em.Queue([]byte("second\r\nOK\r\n"))
	r, err = c.Session(false, timeout)
	if err != nil {
		t.Fatal(err)
	}
	if r.MTStatus != sbdmodem.MTReceived || r.MTLength != 5 || r.MTQueued != 1 {
		t.Fatalf("session %+v", r)
	}
	msg, err := c.ReadMT(timeout)
	if err != nil || string(msg) != "first" {
		t.Fatalf("ReadMT %q %v", msg, err)
	}
	if err := c.Clear(1, timeout); err != nil {
		t.Fatal(err)
	}
	if em.MTBuffer() != nil {
		t.Fatal("MT buffer not cleared")
	}

	// The A form, and a message whose bytes look like an answer.
	r, err = c.Session(true, timeout)
	if err != nil || !r.Alert || r.MTStatus != sbdmodem.MTReceived || r.MTQueued != 0 {
		t.Fatalf("SBDIXA %+v %v", r, err)
	}
	msg, err = c.ReadMT(timeout)
	if err != nil || string(msg) != "second\r\nOK\r\n" {
		t.Fatalf("ReadMT %q %v", msg, err)
	}
	st, err := c.Status(timeout)
	if err != nil || st.MTFlag != 1 || st.MTMSN != r.MTMSN {
		t.Fatalf("SBDSX %+v %v (session %+v)", st, err, r)
	}
	want := []string{"AT", "ATE0", "AT+CGSN", "AT+BOGUS", "AT+SBDIX", "AT+SBDIX", "AT+SBDRB", "AT+SBDD1", "AT+SBDIXA", "AT+SBDRB", "AT+SBDSX"}
	if got := em.Commands(); !slices.Equal(got, want) {
		t.Fatalf("commands %q, want %q", got, want)
	}
}

// TestConnDamagedReads: a bad checksum and a response cut short give
// errors and no data, and the next read of the same buffer works.
func TestConnDamagedReads(t *testing.T) {
	c, em, _ := pair(t)
	if _, err := c.Command("ATE0", timeout); err != nil {
		t.Fatal(err)
	}
	em.Queue([]byte("Hello"))
	if _, err := c.Session(false, timeout); err != nil {
		t.Fatal(err)
	}
	em.CorruptReads(1)
	msg, err := c.ReadMT(timeout)
	var ck *sbdmodem.ChecksumError
	if !errors.As(err, &ck) || msg != nil {
		t.Fatalf("corrupt read: %q %v", msg, err)
	}
	em.CutReads(1)
	msg, err = c.ReadMT(300 * time.Millisecond)
	var pe *sbdmodem.ProtocolError
	if !errors.As(err, &pe) || msg != nil || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("cut read: %q %v", msg, err)
	}
	msg, err = c.ReadMT(timeout)
	if err != nil || string(msg) != "Hello" {
		t.Fatalf("good read after damaged ones: %q %v", msg, err)
	}
}

// TestConnRings: ring alerts are counted wherever they arrive.
func TestConnRings(t *testing.T) {
	c, em, _ := pair(t)
	if _, err := c.Command("ATE0", timeout); err != nil {
		t.Fatal(err)
	}
	ok, err := c.WaitRing(time.Now().Add(50 * time.Millisecond))
	if ok || err != nil {
		t.Fatalf("no ring expected: %v %v", ok, err)
	}
	go func() { _ = em.Ring() }()
	ok, err = c.WaitRing(time.Now().Add(timeout))
	if !ok || err != nil {
		t.Fatalf("ring not seen: %v %v", ok, err)
	}
	if n := c.TakeRings(); n != 0 {
		t.Fatalf("WaitRing left %d rings", n)
	}
}

// TestConnTimeout: a modem that never answers gives a TimeoutError.
func TestConnTimeout(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	})
	c := sbdmodem.NewConn(a)
	_, err := c.Command("AT", 50*time.Millisecond)
	var te *sbdmodem.TimeoutError
	if !errors.As(err, &te) || !sbdmodem.ModemError(err) {
		t.Fatalf("err %v, want a TimeoutError", err)
	}
	a.Close()
	_, err = c.Command("AT", 50*time.Millisecond)
	if err == nil || sbdmodem.ModemError(err) {
		t.Fatalf("closed port: %v, want a port error", err)
	}
}
