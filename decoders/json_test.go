package decoders_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
)

func jsonDecoder(t *testing.T, section string, fields ...string) *decoders.Decoder {
	t.Helper()
	var ds strings.Builder
	for _, f := range fields {
		ds.WriteString("  - {name: " + f + ", observationType: OM_Observation}\n")
	}
	src := "name: json-t\nformat: json\n" + section + "datastreams:\n" + ds.String()
	d, err := decoders.LoadBytes("json-t.yaml", []byte(src))
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	return d
}

func TestJSONEngineCases(t *testing.T) {
	withFields := `json:
  records: $.items
  fields:
    - {name: id, path: "$.device.id"}
    - {name: v, path: reading.value}
    - {name: first, path: "tags[0]"}
    - {name: dotted, path: 'extra["a.b"]'}
    - {name: req, path: must, required: true}
`
	cases := []struct {
		name, section, in string
		fields            []string
		want              map[string]string
		wantErr           string
		off               int
	}{
		{name: "records and paths", section: withFields, fields: []string{"id", "v", "first", "dotted", "req"},
			in:   `{"device":{"id":"D1"},"items":[{"reading":{"value":12.50},"tags":["x"],"extra":{"a.b":true},"must":1},{"reading":{"value":1e3},"must":2}]}`,
			want: map[string]string{"id": `"D1","D1"`, "v": "12.50,1e3", "first": `"x"`, "dotted": "true", "req": "1,2"}},
		{name: "required missing", section: withFields, fields: []string{"v"},
			in: `{"items":[{"reading":{"value":1}}]}`, wantErr: "record 0: required field req (path must) is missing"},
		{name: "records path missing", section: withFields, fields: []string{"v"},
			in: `{"things":[]}`, wantErr: "records path $.items not found"},
		{name: "syntax error offset", section: withFields, fields: []string{"v"},
			in: `{"items": [1, 2,, 3]}`, wantErr: "JSON: invalid character ','", off: 17},
		{name: "two documents", section: withFields, fields: []string{"v"},
			in: `{"items": []} {}`, wantErr: "more than one document"},
		{name: "top-level keys without a field list", section: "", fields: []string{"a", "b", "c", "n"},
			in:   `{"a": -0.10, "b": "text", "c": {"x": [1, 2]}, "n": null}`,
			want: map[string]string{"a": "-0.10", "b": `"text"`, "c": `{"x":[1,2]}`}},
		{name: "not an object", section: "", fields: []string{"a"}, in: `[1]`, wantErr: "record 0 is not an object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := jsonDecoder(t, c.section, c.fields...)
			res, err := d.Decode(&adapters.Frame{Payload: []byte(c.in), Identity: "dev", CustomerID: "c", Received: time.Unix(1.7e9, 0)}, decoders.Env{})
			if c.wantErr != "" {
				var de *decoders.DecodeError
				if !errors.As(err, &de) || !strings.Contains(de.Msg, c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				if c.off != 0 && de.Offset != c.off {
					t.Fatalf("offset %d want %d", de.Offset, c.off)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, o := range res.Observations {
				got[o.Datastream.Name] = append(got[o.Datastream.Name], string(o.Result))
			}
			if len(got) != len(c.want) {
				t.Errorf("got %v want %v", got, c.want)
			}
			for k, v := range c.want {
				if g := strings.Join(got[k], ","); g != v {
					t.Errorf("%s = %s, want %s", k, g, v)
				}
			}
		})
	}
}
