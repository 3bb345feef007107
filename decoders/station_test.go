package decoders_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
)

func decodeSample(t *testing.T, decoder, sample string) *decoders.Result {
	t.Helper()
	d := loadShipped(t, decoder)
	payload, err := os.ReadFile(sampleFile(t, sample))
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Decode(&adapters.Frame{Adapter: "loggers", Kind: "tcp", Source: "10.0.0.7:4123", Payload: payload,
		Received: time.Date(2014, 6, 6, 0, 5, 0, 0, time.UTC)}, decoders.Env{DefaultCustomer: "047"})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTOB1MatchesTOA5 decodes the same table in both formats and compares
// every record one by one: same datastreams, sensusIDs, times and values.
func TestTOB1MatchesTOA5(t *testing.T) {
	a := decodeSample(t, "toa5-station", "toa5_station_daily.dat")
	b := decodeSample(t, "tob1-station", "tob1_station_daily.dat")
	if len(a.Observations) != 683 || len(b.Observations) != len(a.Observations) {
		t.Fatalf("observations: toa5 %d, tob1 %d, want 683 each", len(a.Observations), len(b.Observations))
	}
	for i := range a.Observations {
		if ja, jb := jsonOf(t, a.Observations[i]), jsonOf(t, b.Observations[i]); ja != jb {
			t.Errorf("observation %d differs:\ntoa5 %s\ntob1 %s", i, ja, jb)
		}
	}
	if ja, jb := jsonOf(t, a.Datastreams), jsonOf(t, b.Datastreams); ja != jb {
		t.Errorf("datastreams differ:\ntoa5 %s\ntob1 %s", ja, jb)
	}
	if ja, jb := jsonOf(t, a.Things), jsonOf(t, b.Things); ja != jb {
		t.Errorf("things differ:\ntoa5 %s\ntob1 %s", ja, jb)
	}
	if len(a.Alarms) != 4 || jsonOf(t, a.Alarms) != jsonOf(t, b.Alarms) {
		t.Errorf("alarms differ:\ntoa5 %s\ntob1 %s", jsonOf(t, a.Alarms), jsonOf(t, b.Alarms))
	}
	if jsonOf(t, a.AlarmChanges) != jsonOf(t, b.AlarmChanges) {
		t.Errorf("alarm changes differ: %v vs %v", a.AlarmChanges, b.AlarmChanges)
	}
	if len(a.Skipped) != 1 || len(b.Skipped) != 1 {
		t.Errorf("skipped: toa5 %q, tob1 %q", a.Skipped, b.Skipped)
	}
}

// TestTOA5SampleValues pins the README's expected values.
func TestTOA5SampleValues(t *testing.T) {
	res := decodeSample(t, "toa5-station", "toa5_station_daily.dat")
	if res.Device.ID != "Station" || res.Device.CustomerID != "047" {
		t.Fatalf("device %+v", res.Device)
	}
	type key struct{ ds, rt string }
	got := map[key]string{}
	pt := map[key]string{}
	for _, o := range res.Observations {
		k := key{o.Datastream.Name, o.ResultTime}
		got[k] = string(o.Result)
		pt[k] = o.PhenomenonTime
	}
	for _, c := range []struct {
		ds, rt, want, phen string
	}{
		{"Batt_Min", "2014-04-11T00:00:00Z", "13.04", "2014-04-11T00:00:00Z"},
		{"AirT_Max", "2014-04-11T00:00:00Z", "17", "2014-04-10T17:15:00Z"},
		{"AirT_Min", "2014-04-11T00:00:00Z", "2.432", "2014-04-10T23:45:00Z"},
		{"WaterLvl_Min", "2014-04-11T00:00:00Z", "0.559", "2014-04-10T23:45:00Z"},
		{"Batt_Min", "2014-04-14T00:00:00Z", "12.98", "2014-04-14T00:00:00Z"},
		{"AirT_Min", "2014-04-14T00:00:00Z", "-1.427", "2014-04-13T23:45:00Z"},
		{"Batt_Min", "2014-05-10T00:00:00Z", "12.85", "2014-05-10T00:00:00Z"},
		{"AirT_Min", "2014-05-10T00:00:00Z", "-39.93", "2014-05-09T12:45:00Z"},
	} {
		k := key{c.ds, c.rt}
		if got[k] != c.want || pt[k] != c.phen {
			t.Errorf("%s at %s = %q at %s, want %s at %s", c.ds, c.rt, got[k], pt[k], c.want, c.phen)
		}
	}
	if _, ok := got[key{"WaterLvl_Min", "2014-05-10T00:00:00Z"}]; ok {
		t.Error("RECORD 29 WaterLvl_Min (NAN) produced an observation")
	}
	n29 := 0
	for k := range got {
		if k.rt == "2014-05-10T00:00:00Z" {
			n29++
		}
	}
	if n29 != 11 {
		t.Errorf("RECORD 29 gave %d observations, want the other 11", n29)
	}
	var seq []string
	for _, a := range res.Alarms {
		seq = append(seq, a.AlarmType+" "+a.Status+" "+a.TriggeredAt)
	}
	want := []string{
		"POWER_LOW ACTIVE 2014-04-18T00:00:00Z", "POWER_LOW CLEARED 2014-05-04T00:00:00Z",
		"SENSOR_FAULT ACTIVE 2014-05-10T00:00:00Z", "SENSOR_FAULT CLEARED 2014-05-11T00:00:00Z",
	}
	if jsonOf(t, seq) != jsonOf(t, want) {
		t.Errorf("alarms %q, want %q", seq, want)
	}
}
