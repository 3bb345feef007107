package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// TestScanMatcher checks the byte-level line filter against values that
// could fool it: prefixes, quotes, and the record key inside a value or
// inside the record.
func TestScanMatcher(t *testing.T) {
	st, err := openStore(t.TempDir(), logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	put := func(batch, device, ds string, dsID int64, rec string) {
		st.mu.Lock()
		defer st.mu.Unlock()
		err := st.appendBatch(Observations, batch, []Record{{Kind: Observations, BatchID: batch, DeviceID: device,
			CustomerID: "c", Datastream: ds, DatastreamID: dsID, Record: []byte(rec)}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	put("b-1", "D1", "s@i@D1@c", 1, `{"deviceId":"D2","batchId":"b-10"}`)
	put("b-10", "D2", "s@i@D2@c", 10, `{"x":1}`)
	put(`q"uote,"record":"x`, "D<&>", "s@i@D1@c", 1, `{"y":"\",\"record\":"}`)
	put("", "D1", "t@i@D1@c", 11, `{}`)
	for name, c := range map[string]struct {
		q    Query
		want []int64
	}{
		"batch exact not prefix": {Query{BatchID: "b-1"}, []int64{1}},
		"batch in record only":   {Query{BatchID: "b-10"}, []int64{2}},
		"tricky batch":           {Query{BatchID: `q"uote,"record":"x`}, []int64{3}},
		"device not in record":   {Query{DeviceID: "D2"}, []int64{2}},
		"html chars":             {Query{DeviceID: "D<&>"}, []int64{3}},
		"device and ds":          {Query{DeviceID: "D1", Datastream: "s@i@D1@c"}, []int64{1}},
		"ds by id not prefix":    {Query{Datastream: "1"}, []int64{1, 3}},
		"ds by id 11":            {Query{Datastream: "11"}, []int64{4}},
		"after":                  {Query{AfterSeq: 2}, []int64{3, 4}},
		"after and limit":        {Query{AfterSeq: 1, Limit: 2}, []int64{2, 3}},
		"all":                    {Query{}, []int64{1, 2, 3, 4}},
		"customer":               {Query{CustomerID: "c"}, []int64{1, 2, 3, 4}},
		"other customer":         {Query{CustomerID: "d"}, nil},
	} {
		c.q.Kind = Observations
		var got []int64
		if err := st.scan(c.q, func(line []byte) error { got = append(got, lineSeq(line)); return nil }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: seqs %v, want %v", name, got, c.want)
		}
	}
}

// TestTornLastLine: a crash can cut the last line; the next start skips it
// and appends on a fresh line.
func TestTornLastLine(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, Config{DataDir: dir})
	f.setup()
	f.expect(f.post(Observations, nObs("a", 2), nil), 200)
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"observations.jsonl", "batches.jsonl"} {
		fh, err := os.OpenFile(filepath.Join(dir, name), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteString(`{"kind":"observations","seq":3,"batchId":"torn`)
		fh.Close()
	}
	s2 := StartTest(t, Config{DataDir: dir, Now: f.now.Now, Services: f.s.cfg.Services})
	f.s, f.c.BaseURL = s2, s2.URL()
	f.expect(f.post(Observations, nObs("b", 1), nil), 200)
	recs := f.records(Query{Kind: Observations})
	if len(recs) != 3 || recs[2].BatchID != "b" || recs[2].Seq != 3 {
		t.Fatalf("records %+v", recs)
	}
	if c := f.counts(); c.Accepted[Observations] != 3 || c.Batches[Observations] != 2 {
		t.Fatalf("counts %+v", c)
	}
}
