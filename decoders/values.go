package decoders

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Numbers keep the exact decimal they arrived with: a text number keeps the
// digits written ("13.04" stays 13.04), an f32 prints as the shortest
// decimal that reads back as the same f32 (0.559), and only values computed
// by expressions go through float64 formatting (shortest round-trip form).

// isDecimal reports whether s is a plain decimal number: optional sign,
// digits with an optional fraction, optional exponent. It rejects what
// strconv.ParseFloat also accepts but a logger never means (inf, nan, hex,
// underscores).
func isDecimal(s string) (ok, integer bool) {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
		digits++
	}
	integer = true
	if i < len(s) && s[i] == '.' {
		integer = false
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return false, false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		integer = false
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		exp := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			exp++
		}
		if exp == 0 {
			return false, false
		}
	}
	return i == len(s), integer
}

// isJSONNumber reports whether s is a number in JSON's grammar.
func isJSONNumber(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
	}
	if s == "" || s[0] < '0' || s[0] > '9' {
		return false
	}
	if s[0] == '0' && len(s) > 1 && s[1] >= '0' && s[1] <= '9' {
		return false
	}
	if i := strings.IndexByte(s, '.'); i >= 0 {
		if i+1 >= len(s) || s[i+1] < '0' || s[i+1] > '9' {
			return false
		}
	}
	ok, _ := isDecimal(s)
	return ok
}

// parseNumber parses a decimal text into the value expressions see (int
// for integers that fit, float64 otherwise) and the exact JSON text to send.
func parseNumber(s string) (v any, text string, ok bool) {
	dec, integer := isDecimal(s)
	if !dec {
		return nil, "", false
	}
	if integer {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return int(i), strconv.FormatInt(i, 10), true
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, "", false
	}
	if isJSONNumber(s) {
		return f, s, true
	}
	return f, formatFloat(f, 64), true
}

// formatFloat prints the shortest decimal that reads back as the same value
// of the given width, without an exponent in the usual range.
func formatFloat(f float64, bits int) string {
	a := math.Abs(f)
	if a == 0 || (a >= 1e-6 && a < 1e21) {
		return strconv.FormatFloat(f, 'f', -1, bits)
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

// f32Value is how an f32 reaches expressions and output: the float64 of its
// shortest decimal, so 12.9 in a TOB1 file compares equal to 12.9 in the
// same table's TOA5 file.
func f32Value(f float32) (float64, string) {
	text := formatFloat(float64(f), 32)
	v, _ := strconv.ParseFloat(text, 64)
	return v, text
}

// toFloat converts an expression value to float64.
func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint8:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case string:
		if ok, _ := isDecimal(strings.TrimSpace(x)); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// numberText renders an expression value as JSON number text.
func numberText(v any) (string, error) {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("not a finite number (%v)", x)
		}
		return formatFloat(x, 64), nil
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return "", fmt.Errorf("not a finite number (%v)", x)
		}
		return formatFloat(float64(x), 32), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case int32:
		return strconv.FormatInt(int64(x), 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case uint32:
		return strconv.FormatUint(uint64(x), 10), nil
	case uint8:
		return strconv.FormatUint(uint64(x), 10), nil
	case json.Number:
		if _, t, ok := parseNumber(string(x)); ok {
			return t, nil
		}
	case string:
		if _, t, ok := parseNumber(strings.TrimSpace(x)); ok {
			return t, nil
		}
		return "", fmt.Errorf("%q is not a number", x)
	case bool:
		return "", fmt.Errorf("%v is a boolean, not a number", x)
	case nil:
		return "", fmt.Errorf("no value")
	}
	return "", fmt.Errorf("%v (%T) is not a number", v, v)
}

// rfc3339 renders a time as RFC 3339 UTC.
func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// oneLine shortens an error message (expr errors carry a source snippet
// after a newline).
func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
