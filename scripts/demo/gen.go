package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The generator makes inputs of the same formats as the public samples in
// ../shared/samples (a TOA5 daily table, the same table as TOB1, NMEA
// sentences), for a clone that has no ../shared. Values are made up but
// shaped like a real station's: a battery that sags below the alarm
// threshold and recovers, one missing value, one sensor fault.

var tableColumns = []string{"Batt_Min", "Rain_Tot", "AirT_Max", "AirT_TMx", "AirT_Min", "AirT_TMn",
	"RH_Max", "RH_TMx", "RH_Min", "RH_TMn", "BaromPres_Max", "BaromPres_TMx", "BaromPres_Min", "BaromPres_TMn",
	"SlrkW_Max", "SlrkW_TMx", "SlrMJ_Max", "SlrMJ_TMx", "WaterT_Max", "WaterT_TMx", "WaterLvl_Min", "WaterLvl_TMn"}

var tableUnits = []string{"Volts", "mm", "Deg C", "Deg C", "Deg C", "Deg C", "%", "%", "%", "%", "mmHg", "mmHg", "mmHg", "mmHg",
	"kW/m^2", "kW/m^2", "MJ/m^2", "MJ/m^2", "Deg C", "Deg C", "Ft", "Ft"}

var tableProc = []string{"Min", "Tot", "Max", "TMx", "Min", "TMn", "Max", "TMx", "Min", "TMn", "Max", "TMx", "Min", "TMn",
	"Max", "TMx", "Max", "TMx", "Max", "TMx", "Min", "TMn"}

type genRow struct {
	ts     time.Time
	record uint32
	vals   []float32   // per value column (NaN = missing)
	times  []time.Time // per TMx/TMn column
}

func isTimeCol(i int) bool {
	return strings.HasSuffix(tableColumns[i], "TMx") || strings.HasSuffix(tableColumns[i], "TMn")
}

func genRows(n int) []genRow {
	start := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	var rows []genRow
	for r := 0; r < n; r++ {
		row := genRow{ts: start.AddDate(0, 0, r), record: uint32(r)}
		day := float64(r)
		for i := range tableColumns {
			if isTimeCol(i) {
				row.vals = append(row.vals, 0)
				row.times = append(row.times, row.ts.Add(-time.Duration(9+(r*7+i)%12)*time.Hour))
				continue
			}
			row.times = append(row.times, time.Time{})
			var v float64
			switch tableColumns[i] {
			case "Batt_Min": // sags below 12.75 V around day 8–14, back above 12.9 V after
				v = 13.02 - 0.04*day
				if r > 14 {
					v = 12.95 + 0.01*float64(r%3)
				}
			case "Rain_Tot":
				v = float64((r*37)%11) * 0.254
			case "AirT_Max":
				v = 12 + 8*math.Sin(day/5)
			case "AirT_Min":
				v = 2 + 5*math.Sin(day/6)
				if r == 17 {
					v = -39.93 // sensor fault
				}
			case "RH_Max":
				v = 80 + float64(r%15)
			case "RH_Min":
				v = 25 + float64(r%20)
			case "BaromPres_Max":
				v = 728 + float64(r%5)
			case "BaromPres_Min":
				v = 722 + float64(r%4)
				if r == 17 {
					v = 450
				}
			case "SlrkW_Max":
				v = 0.85 + 0.01*float64(r%9)
			case "SlrMJ_Max":
				v = 0.026 + 0.001*float64(r%5)
			case "WaterT_Max":
				v = 17 + 0.5*float64(r%10)
			case "WaterLvl_Min":
				v = 0.5 + 0.003*float64(r%20)
				if r == 20 {
					v = math.NaN() // missing value
				}
			}
			row.vals = append(row.vals, float32(math.Round(v*1000)/1000))
		}
		rows = append(rows, row)
	}
	return rows
}

func quoteAll(xs ...string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return strings.Join(q, ",")
}

func f32s(v float32) string { return strconv.FormatFloat(float64(v), 'g', -1, 32) }

func genTOA5(rows []genRow) []byte {
	var b bytes.Buffer
	b.WriteString(quoteAll("TOA5", "Station", "CR1000", "12345", "CR1000.Std.25", "CPU:Generated.CR1", "54321", "Daily") + "\n")
	b.WriteString(quoteAll(append([]string{"TIMESTAMP", "RECORD"}, tableColumns...)...) + "\n")
	b.WriteString(quoteAll(append([]string{"TS", "RN"}, tableUnits...)...) + "\n")
	b.WriteString(quoteAll(append([]string{"", ""}, tableProc...)...) + "\n")
	for _, r := range rows {
		fields := []string{strconv.Quote(r.ts.Format("2006-01-02 15:04:05")), strconv.Itoa(int(r.record))}
		for i, v := range r.vals {
			switch {
			case isTimeCol(i):
				fields = append(fields, strconv.Quote(r.times[i].Format("2006-01-02 15:04:05")))
			case math.IsNaN(float64(v)):
				fields = append(fields, `"NAN"`)
			default:
				fields = append(fields, f32s(v))
			}
		}
		b.WriteString(strings.Join(fields, ",") + "\n")
	}
	return b.Bytes()
}

var campbellEpoch = time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)

func genTOB1(rows []genRow) []byte {
	var b bytes.Buffer
	types := []string{"ULONG", "ULONG", "ULONG"}
	for i := range tableColumns {
		if isTimeCol(i) {
			types = append(types, "SecNano")
		} else {
			types = append(types, "IEEE4")
		}
	}
	b.WriteString(quoteAll("TOB1", "Station", "CR1000", "12345", "CR1000.Std.25", "CPU:Generated.CR1", "54321", "Daily") + "\r\n")
	b.WriteString(quoteAll(append([]string{"SECONDS", "NANOSECONDS", "RECORD"}, tableColumns...)...) + "\r\n")
	b.WriteString(quoteAll(append([]string{"SECONDS", "NANOSECONDS", "RN"}, tableUnits...)...) + "\r\n")
	b.WriteString(quoteAll(append([]string{"", "", ""}, tableProc...)...) + "\r\n")
	b.WriteString(quoteAll(types...) + "\r\n")
	le := binary.LittleEndian
	for _, r := range rows {
		var rec []byte
		rec = le.AppendUint32(rec, uint32(r.ts.Sub(campbellEpoch)/time.Second))
		rec = le.AppendUint32(rec, 0)
		rec = le.AppendUint32(rec, r.record)
		for i, v := range r.vals {
			if isTimeCol(i) {
				rec = le.AppendUint32(rec, uint32(int32(r.times[i].Sub(campbellEpoch)/time.Second)))
				rec = le.AppendUint32(rec, 0)
				continue
			}
			rec = le.AppendUint32(rec, math.Float32bits(v))
		}
		b.Write(rec)
	}
	return b.Bytes()
}

func nmeaSum(body string) string {
	var x byte
	for i := 0; i < len(body); i++ {
		x ^= body[i]
	}
	return fmt.Sprintf("%02X", x)
}

// genNMEA: valid GGA and RMC sentences, one with a wrong checksum, one
// without checksum, one malformed, and a sentence type no decoder handles.
func genNMEA() []byte {
	good := []string{
		"GPGGA,101500.000,4807.0380,N,01131.0000,E,1,08,0.9,545.4,M,46.9,M,,",
		"GPRMC,101501.000,A,4807.0390,N,01131.0010,E,0.02,84.4,010324,,,A",
		"GPGGA,101502.000,4807.0400,N,01131.0020,E,1,08,0.9,545.6,M,46.9,M,,",
	}
	var b bytes.Buffer
	for _, s := range good {
		b.WriteString("$" + s + "*" + nmeaSum(s) + "\r\n")
	}
	b.WriteString("$" + good[2] + "*00\r\n") // wrong checksum
	b.WriteString("$" + good[0] + "\r\n")    // no checksum: accepted unchecked
	bad := "GPRMC,101503.000,A,48X7.04,D"    // malformed
	b.WriteString("$" + bad + "*" + nmeaSum(bad) + "\r\n")
	mwv := "WIMWV,9.00,R,2.00,M,A" // no decoder for this sentence type
	b.WriteString("$" + mwv + "*" + nmeaSum(mwv) + "\r\n")
	return b.Bytes()
}

// generateInputs writes the three generated inputs into dir and returns
// their paths.
func generateInputs(dir string) (toa5, tob1, nmea string, err error) {
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	rows := genRows(30)
	toa5 = filepath.Join(dir, "toa5_generated.dat")
	tob1 = filepath.Join(dir, "tob1_generated.dat")
	nmea = filepath.Join(dir, "nmea_generated.txt")
	if err = os.WriteFile(toa5, genTOA5(rows), 0o644); err != nil {
		return
	}
	if err = os.WriteFile(tob1, genTOB1(rows), 0o644); err != nil {
		return
	}
	err = os.WriteFile(nmea, genNMEA(), 0o644)
	return
}
