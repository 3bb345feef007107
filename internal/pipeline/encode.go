package pipeline

import (
	"encoding/json"
	"strconv"

	"github.com/vigd/vigd/decoders/sta"
)

// appendObservation appends o as JSON, byte for byte what json.Marshal
// makes of it (a test and a fuzzer compare them), without reflection: it
// was the largest part of storing a record. Values outside the common case
// (a text that needs escaping, a result that is not a plain number or
// literal) are handed to json.Marshal, whole.
func appendObservation(dst []byte, o *sta.Observation) ([]byte, error) {
	if !plainString(o.PhenomenonTime) || !plainString(o.ResultTime) || !plainRef(&o.Datastream) ||
		(o.FeatureOfInterest != nil && !plainRef(o.FeatureOfInterest)) || !plainResult(o.Result) {
		b, err := json.Marshal(o)
		return append(dst, b...), err
	}
	dst = append(dst, `{"phenomenonTime":"`...)
	dst = append(dst, o.PhenomenonTime...)
	dst = append(dst, `","result":`...)
	if o.Result == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, o.Result...)
	}
	if o.ResultTime != "" {
		dst = append(dst, `,"resultTime":"`...)
		dst = append(dst, o.ResultTime...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"datastream":`...)
	dst = appendRef(dst, &o.Datastream)
	if o.FeatureOfInterest != nil {
		dst = append(dst, `,"featureOfInterest":`...)
		dst = appendRef(dst, o.FeatureOfInterest)
	}
	if len(o.Parameters) > 0 {
		b, err := json.Marshal(o.Parameters)
		if err != nil {
			return dst, err
		}
		dst = append(dst, `,"parameters":`...)
		dst = append(dst, b...)
	}
	return append(dst, '}'), nil
}

func appendRef(dst []byte, r *sta.Ref) []byte {
	dst = append(dst, '{')
	comma := false
	if r.ID != 0 {
		dst = append(dst, `"@iot.id":`...)
		dst = strconv.AppendInt(dst, r.ID, 10)
		comma = true
	}
	if r.Name != "" {
		if comma {
			dst = append(dst, ',')
		}
		dst = append(dst, `"name":"`...)
		dst = append(dst, r.Name...)
		dst = append(dst, '"')
		comma = true
	}
	if r.SensusID != "" {
		if comma {
			dst = append(dst, ',')
		}
		dst = append(dst, `"sensusID":"`...)
		dst = append(dst, r.SensusID...)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

func plainRef(r *sta.Ref) bool { return plainString(r.Name) && plainString(r.SensusID) }

// plainString reports whether encoding/json writes s as it is between
// quotes: printable ASCII without the characters it escapes (" \ and,
// for HTML safety, < > &).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// plainResult reports whether json.Marshal writes the raw result as it
// is: a number in JSON's grammar, true, false, null (or nil: null).
func plainResult(r json.RawMessage) bool {
	if r == nil {
		return true // null (an empty, non-nil one is an error)
	}
	switch string(r) {
	case "true", "false", "null":
		return true
	}
	return jsonNumber(r)
}

// jsonNumber reports whether b is exactly a JSON number.
func jsonNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(b)
}
