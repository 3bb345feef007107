package httpingest

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/internal/testpeers"
)

// Through the shipped firmware-update decoder (test only; the adapter
// knows nothing of decoding): a good report is 202, a report the decoder
// refuses is 422 with the decoder's own message.
func TestFirmwareReportsThroughDecoder(t *testing.T) {
	set, err := decoders.LoadFiles(filepath.Join(testpeers.RepoRoot(), "configs", "decoders", "firmware-update.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := set.Get("firmware-update")
	h := start(t, func(c *Config) { c.AllowedDecoders = []string{"firmware-update"} })
	// The pipeline's part, in short: decode, and dead-letter what fails.
	go func() {
		for e := range h.sink.ch {
			res, err := dec.Decode(e.frame, decoders.Env{DefaultCustomer: "047"})
			if err != nil {
				e.reply <- &adapters.RejectedError{Reason: err.Error(), Err: err}
				continue
			}
			if len(res.Observations) == 0 || e.frame.Decoder != "firmware-update" {
				t.Errorf("decoded %+v from %+v", res, e.frame)
			}
			e.reply <- nil
		}
	}()
	t.Cleanup(func() { close(h.sink.ch) })
	post := func(body string) result {
		return wait(t, h.do(h.post(t, "/FST300234030000001?decoder=firmware-update", "application/json", tokenA, []byte(body))))
	}
	if r := post(`{"state":"FAILED","error":"signature check failed"}`); r.code != http.StatusAccepted {
		t.Errorf("FAILED report: %d %s", r.code, r.body)
	}
	r := post(`{"state":"REBOOTING"}`)
	if a := r.answer(t); r.code != http.StatusUnprocessableEntity || a.Status != "REJECTED" ||
		!strings.Contains(a.Error, `firmware update state "REBOOTING" is not DOWNLOADING`) {
		t.Errorf("unknown state: %d %s", r.code, r.body)
	}
}
