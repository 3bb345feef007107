package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/vigd/vigd/internal/sim"
)

type obs struct {
	PhenomenonTime string          `json:"phenomenonTime"`
	ResultTime     string          `json:"resultTime"`
	Result         json.RawMessage `json:"result"`
	Datastream     struct {
		Name     string `json:"name"`
		SensusID string `json:"sensusID"`
	} `json:"datastream"`
	Parameters map[string]any `json:"parameters"`
}

type alarm struct {
	AlarmID      string   `json:"alarmId"`
	AlarmType    string   `json:"alarmType"`
	Severity     string   `json:"severity"`
	Status       string   `json:"status"`
	TriggeredAt  string   `json:"triggeredAt"`
	CurrentValue *float64 `json:"currentValue"`
}

func records(cl *sim.Client, kind, device string) ([]sim.Record, error) {
	return cl.Records(context.Background(), sim.Query{Kind: kind, DeviceID: device})
}

func observations(cl *sim.Client, device string) ([]obs, error) {
	rs, err := records(cl, "observations", device)
	if err != nil {
		return nil, err
	}
	out := make([]obs, 0, len(rs))
	for _, r := range rs {
		var o obs
		if err := json.Unmarshal(r.Record, &o); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// rowTime is the row's time: the resultTime when a TMx/TMn time moved the
// phenomenonTime.
func (o obs) rowTime() string {
	if o.ResultTime != "" {
		return o.ResultTime
	}
	return o.PhenomenonTime
}

func summary(cl *sim.Client, nmeaLines []string) error {
	ctx := context.Background()
	counts, err := cl.Counts(ctx)
	if err != nil {
		return err
	}
	fmt.Println("=== what the eventstore simulator accepted (read back from its own store) ===")
	fmt.Printf("things %d, datastreams %d, observations %d, alarms %d, raw frames %d; requests %d, duplicates refused %d\n\n",
		counts.Accepted["things"], counts.Accepted["datastreams"], counts.Accepted["observations"], counts.Accepted["alarms"], counts.Accepted["raw"],
		counts.Requests, counts.Duplicates)

	things, err := records(cl, "things", "")
	if err != nil {
		return err
	}
	dss, err := records(cl, "datastreams", "")
	if err != nil {
		return err
	}
	fmt.Printf("things (%-26s %-40s datastreams):\n", "sensusID", "description")
	seen := map[string]bool{}
	for _, t := range things {
		// A thing whose definition changed is posted again: show each once.
		if seen[t.SensusID] {
			continue
		}
		seen[t.SensusID] = true
		var th struct {
			Name, Description string
			Properties        map[string]any
		}
		_ = json.Unmarshal(t.Record, &th)
		var dsn []string
		for _, d := range dss {
			if strings.HasSuffix(d.SensusID, "@"+t.SensusID) {
				var ds struct{ Name string }
				_ = json.Unmarshal(d.Record, &ds)
				dsn = append(dsn, ds.Name)
			}
		}
		fmt.Printf("  %-28s %-40s %d datastreams: %s\n", t.SensusID, th.Description, len(dsn), strings.Join(dsn, ", "))
	}
	fmt.Println()

	toa5, err := observations(cl, "CR1000-12345")
	if err != nil {
		return err
	}
	tob1, err := observations(cl, "CR1000-12345-TOB1")
	if err != nil {
		return err
	}
	fmt.Printf("logger station (TOA5 upload): %d observations\n", len(toa5))
	show := func(ds, rowTime string) string {
		for _, o := range toa5 {
			if o.Datastream.Name == ds && o.rowTime() == rowTime {
				return fmt.Sprintf("%s at %s = %s", ds, o.PhenomenonTime, o.Result)
			}
		}
		return fmt.Sprintf("%s for the row of %s: none", ds, rowTime)
	}
	rows := map[string]int{}
	for _, o := range toa5 {
		rows[o.rowTime()]++
	}
	times := make([]string, 0, len(rows))
	for t := range rows {
		times = append(times, t)
	}
	sort.Strings(times)
	if len(times) > 0 {
		fmt.Printf("  %d rows, %s … %s\n", len(times), times[0], times[len(times)-1])
		fmt.Printf("  first row:  %s\n", show("Batt_Min", times[0]))
		fmt.Printf("              %s\n", show("AirT_Min", times[0]))
		fmt.Printf("              %s\n", show("WaterLvl_Min", times[0]))
	}
	if len(times) > 3 {
		fmt.Printf("  fourth row: %s\n", show("AirT_Min", times[3]))
	}
	// Rows with fewer values than the others: missing values left out.
	full := 0
	for _, n := range rows {
		if n > full {
			full = n
		}
	}
	for _, t := range times {
		if rows[t] < full {
			fmt.Printf("  row of %s: %d of %d values delivered (%s)\n", t, rows[t], full, show("WaterLvl_Min", t))
		}
	}
	fmt.Println()

	// The TOB1 file is the same table: the same observations must arrive.
	key := func(o obs) string { return o.Datastream.Name + "|" + o.PhenomenonTime + "|" + o.rowTime() }
	a := map[string]string{}
	for _, o := range toa5 {
		a[key(o)] = string(o.Result)
	}
	same, diff := 0, 0
	for _, o := range tob1 {
		if a[key(o)] == string(o.Result) {
			same++
		} else {
			diff++
		}
	}
	verdict := "IDENTICAL"
	if diff > 0 || len(tob1) != len(toa5) {
		verdict = "DIFFERENT"
	}
	fmt.Printf("logger station (TOB1 upload): %d observations; compared with TOA5: %d equal, %d different → %s\n\n", len(tob1), same, diff, verdict)

	alarms, err := records(cl, "alarms", "")
	if err != nil {
		return err
	}
	fmt.Printf("alarms (%d):\n", len(alarms))
	for _, r := range alarms {
		var al alarm
		_ = json.Unmarshal(r.Record, &al)
		cv := ""
		if al.CurrentValue != nil {
			cv = fmt.Sprintf(" (current %v)", *al.CurrentValue)
		}
		fmt.Printf("  %-20s %-14s %-8s %-8s %s%s\n", r.DeviceID, al.AlarmType, al.Severity, al.Status, al.TriggeredAt, cv)
	}
	fmt.Println()

	gps, err := observations(cl, "GPS-0001")
	if err != nil {
		return err
	}
	fmt.Printf("GPS (%d NMEA lines sent): %d observations\n", len(nmeaLines), len(gps))
	fmt.Println("  (a GGA sentence carries only the time of day: its date is the day nearest to when vigd received it)")
	for _, o := range gps {
		extra := ""
		if v, ok := o.Parameters["nmeaChecksum"]; ok {
			extra = fmt.Sprintf("  [checksum %v]", v)
		}
		fmt.Printf("  %s  %-12s %s%s\n", o.PhenomenonTime, o.Datastream.Name, o.Result, extra)
	}
	fmt.Println()

	fmt.Println("=== dead letters (vigd deadletters list -c " + configFile + ") ===")
	cmd := exec.Command("bin/vigd", "deadletters", "list", "-c", configFile)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}
