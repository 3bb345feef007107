package orbcomm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/internal/testpeers"
)

// The shipped orbcomm-position decoder reads the frames this adapter makes
// from the sample page: the Meta keys agree. (Test only: the adapter
// itself knows nothing of decoding.)
func TestSampleFramesThroughPositionDecoder(t *testing.T) {
	b, err := os.ReadFile(testpeers.Sample(t, "orbcomm_get_return_messages_page1.json"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := decoders.LoadFiles(filepath.Join(testpeers.RepoRoot(), "configs", "decoders", "orbcomm-position.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := set.Get("orbcomm-position")
	page, err := ParsePage(b)
	if err != nil {
		t.Fatal(err)
	}
	f := page.Messages[0].Frame("idp", time.Date(2024, 5, 23, 10, 15, 0, 0, time.UTC))
	res, err := dec.Decode(f, decoders.Env{DefaultCustomer: "047"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range res.Observations {
		got[o.Datastream.Name] = string(o.Result)
		if o.PhenomenonTime != "2024-05-23T10:14:05Z" {
			t.Errorf("%s at %s", o.Datastream.Name, o.PhenomenonTime)
		}
	}
	for k, v := range map[string]string{"latitude": "45.657", "longitude": "-74.25", "altitude": "112", "speed": "0", "heading": "0", "fix_status": "1"} {
		if got[k] != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
	if res.Device.ID != "01000001TESTA1B" {
		t.Errorf("device %+v", res.Device)
	}

	// The raw SIN 128 message is refused with the reason, not dropped.
	f = page.Messages[1].Frame("idp", time.Now())
	_, err = dec.Decode(f, decoders.Env{DefaultCustomer: "047"})
	var de *decoders.DecodeError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "SIN 128 / MIN 1 is not a core modem position report") {
		t.Errorf("SIN 128: %v", err)
	}
}
