package pipeline

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/vigd/vigd/decoders/sta"
)

var encodeCases = []struct {
	name string
	o    sta.Observation
}{
	{"measurement", sta.Observation{PhenomenonTime: "2026-12-03T17:30:00.123456789Z", Result: json.RawMessage("21.5"),
		ResultTime: "2026-12-03T17:30:00.123456789Z", Datastream: sta.Ref{Name: "temperature", SensusID: "bench@temperature@BENCH0042@bench"}}},
	{"no result time, id ref", sta.Observation{PhenomenonTime: "2024-01-01T00:00:00Z", Result: json.RawMessage("-0.5e-3"), Datastream: sta.Ref{ID: 1141456}}},
	{"empty ref", sta.Observation{PhenomenonTime: "t", Result: json.RawMessage("1")}},
	{"nil result", sta.Observation{PhenomenonTime: "t", Datastream: sta.Ref{SensusID: "x"}}},
	{"literals", sta.Observation{PhenomenonTime: "t", Result: json.RawMessage("true"), Datastream: sta.Ref{ID: 3, Name: "n"}}},
	{"feature", sta.Observation{PhenomenonTime: "a/b", Result: json.RawMessage("0"), FeatureOfInterest: &sta.Ref{Name: "Pump Location", ID: 2235}}},
	{"parameters", sta.Observation{PhenomenonTime: "t", Result: json.RawMessage("12"), Parameters: map[string]any{"record": 3, "rangeCheck": "below_min", "z<": "&"}}},
	{"string result", sta.Observation{PhenomenonTime: "t", Result: json.RawMessage(`"open"`)}},
	{"object result", sta.Observation{PhenomenonTime: "t", Result: json.RawMessage(`{"a": [1, 2]}`)}},
	{"escaped name", sta.Observation{PhenomenonTime: "t", Result: json.RawMessage("1"), Datastream: sta.Ref{Name: "Füllstand \"A\" <m>"}}},
	{"control char", sta.Observation{PhenomenonTime: "t\n", Result: json.RawMessage("1")}},
	{"number-ish", sta.Observation{PhenomenonTime: "t", Result: json.RawMessage("01")}},
}

func TestAppendObservationIsJSONMarshal(t *testing.T) {
	for _, tc := range encodeCases {
		t.Run(tc.name, func(t *testing.T) {
			want, werr := json.Marshal(&tc.o)
			got, gerr := appendObservation([]byte("prefix"), &tc.o)
			if (werr != nil) != (gerr != nil) {
				t.Fatalf("errors differ: %v / %v", werr, gerr)
			}
			if werr == nil && !bytes.Equal(got, append([]byte("prefix"), want...)) {
				t.Fatalf("got  %s\nwant prefix%s", got, want)
			}
		})
	}
}

func FuzzAppendObservation(f *testing.F) {
	for _, tc := range encodeCases {
		f.Add(tc.o.PhenomenonTime, []byte(tc.o.Result), tc.o.ResultTime, tc.o.Datastream.Name, tc.o.Datastream.SensusID, tc.o.Datastream.ID)
	}
	f.Fuzz(func(t *testing.T, pt string, result []byte, rt, name, sid string, id int64) {
		o := sta.Observation{PhenomenonTime: pt, Result: result, ResultTime: rt, Datastream: sta.Ref{ID: id, Name: name, SensusID: sid}}
		want, werr := json.Marshal(&o)
		got, gerr := appendObservation(nil, &o)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("errors differ: %v / %v", werr, gerr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}

func BenchmarkEncodeObservation(b *testing.B) {
	o := &encodeCases[0].o
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = appendObservation(buf[:0], o)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(o)
		}
	})
}
