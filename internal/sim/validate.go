package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Error codes in answers and in RecordError.Error.
const (
	ErrCodeValidation     = "VALIDATION_ERROR"
	ErrCodeInvalidJSON    = "INVALID_JSON"
	ErrCodeMD5Mismatch    = "CONTENT_MD5_MISMATCH"
	ErrCodeEncoding       = "INVALID_CONTENT_ENCODING"
	ErrCodeContentType    = "INVALID_CONTENT_TYPE"
	ErrCodeTooLarge       = "PAYLOAD_TOO_LARGE"
	ErrCodeTooManyRecords = "TOO_MANY_RECORDS"
	ErrCodeRateLimited    = "RATE_LIMITED"
	ErrCodeDuplicate      = "DUPLICATE_BATCH"
	ErrCodeUnknownThing   = "UNKNOWN_THING"
	ErrCodeUnknownDS      = "UNKNOWN_DATASTREAM"
	ErrCodeBadSignature   = "INVALID_SIGNATURE"
	ErrCodeUnknownService = "UNKNOWN_SERVICE"
	ErrCodeStaleDate      = "REQUEST_EXPIRED"
	ErrCodeMalformedAuth  = "MALFORMED_AUTHORIZATION"
	ErrCodeNotFound       = "NOT_FOUND"
	ErrCodeMethod         = "METHOD_NOT_ALLOWED"
	ErrCodeInjected       = "INJECTED_FAULT"
	ErrCodeUnavailable    = "SERVICE_UNAVAILABLE"
	ErrCodeInternal       = "INTERNAL_ERROR"
)

// RecordError names one refused record in a 202 or 422 answer.
type RecordError struct {
	RecordID    string `json:"recordId"`
	RecordIndex int    `json:"recordIndex"`
	Error       string `json:"error"`
	Message     string `json:"message"`
}

// Observation types, alarm severities and statuses of the contract.
var (
	observationTypes = map[string]bool{"OM_Measurement": true, "OM_CategoryObservation": true,
		"OM_CountObservation": true, "OM_Observation": true, "OM_TruthObservation": true}
	severities    = map[string]bool{"LOW": true, "MEDIUM": true, "HIGH": true, "CRITICAL": true}
	alarmStatuses = map[string]bool{"ACTIVE": true, "CLEARED": true}
)

type obj = map[string]any

// decodeObject decodes one record, keeping numbers as json.Number so that
// integers and decimals can be told apart.
func decodeObject(raw []byte) (obj, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	o, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("record is not a JSON object")
	}
	return o, nil
}

// ref is a reference to a thing or a datastream.
type ref struct {
	id       int64
	sensusID string
}

func (r ref) String() string {
	if r.sensusID != "" {
		return r.sensusID
	}
	return strconv.FormatInt(r.id, 10)
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// str reads a string field: required fields must be present, non-empty
// strings; optional ones, when present, strings (or null if nullOK).
func str(o obj, k string, required bool) (string, error) {
	v, ok := o[k]
	if !ok {
		if required {
			return "", fmt.Errorf("%s: required", k)
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: must be a string, not %s", k, typeName(v))
	}
	if required && s == "" {
		return "", fmt.Errorf("%s: must not be empty", k)
	}
	return s, nil
}

func optNullableString(o obj, k string) error {
	v, ok := o[k]
	if !ok || v == nil {
		return nil
	}
	if _, ok := v.(string); !ok {
		return fmt.Errorf("%s: must be a string or null, not %s", k, typeName(v))
	}
	return nil
}

func object(o obj, k string, required bool) (obj, error) {
	v, ok := o[k]
	if !ok {
		if required {
			return nil, fmt.Errorf("%s: required", k)
		}
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: must be an object, not %s", k, typeName(v))
	}
	return m, nil
}

func number(o obj, k string) (float64, bool, error) {
	v, ok := o[k]
	if !ok || v == nil {
		return 0, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, false, fmt.Errorf("%s: must be a number, not %s", k, typeName(v))
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) {
		return 0, false, fmt.Errorf("%s: number out of range", k)
	}
	return f, true, nil
}

// iotID reads an optional positive integer @iot.id.
func iotID(o obj) (int64, error) {
	v, ok := o["@iot.id"]
	if !ok || v == nil {
		return 0, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("@iot.id: must be an integer, not %s", typeName(v))
	}
	id, err := n.Int64()
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("@iot.id: %s: must be a positive integer", n)
	}
	return id, nil
}

func getRef(o obj, k string) (ref, error) {
	m, err := object(o, k, true)
	if err != nil {
		return ref{}, err
	}
	id, err := iotID(m)
	if err != nil {
		return ref{}, fmt.Errorf("%s.%w", k, err)
	}
	s, err := str(m, "sensusID", false)
	if err != nil {
		return ref{}, fmt.Errorf("%s.%w", k, err)
	}
	if id == 0 && s == "" {
		return ref{}, fmt.Errorf("%s: needs @iot.id or sensusID", k)
	}
	return ref{id: id, sensusID: s}, nil
}

func validTime(s string) bool {
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

func timeField(o obj, k string, required bool) error {
	v, ok := o[k]
	if !ok || (!required && v == nil) {
		if required {
			return fmt.Errorf("%s: required", k)
		}
		return nil
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("%s: must be an RFC 3339 string, not %s", k, typeName(v))
	}
	if !validTime(s) {
		return fmt.Errorf("%s: %q: not an RFC 3339 time", k, s)
	}
	return nil
}

// phenomenonTime is an RFC 3339 time or an interval "start/end".
func phenomenonTime(o obj) error {
	s, err := str(o, "phenomenonTime", true)
	if err != nil {
		return err
	}
	if a, b, ok := strings.Cut(s, "/"); ok {
		ta, ea := time.Parse(time.RFC3339, a)
		tb, eb := time.Parse(time.RFC3339, b)
		if ea != nil || eb != nil {
			return fmt.Errorf("phenomenonTime: %q: not an RFC 3339 interval start/end", s)
		}
		if tb.Before(ta) {
			return fmt.Errorf("phenomenonTime: %q: interval ends before it starts", s)
		}
		return nil
	}
	if !validTime(s) {
		return fmt.Errorf("phenomenonTime: %q: not an RFC 3339 time", s)
	}
	return nil
}

// splitSensus splits a sensusID into n non-empty parts.
func splitSensus(s string, n int) ([]string, bool) {
	p := strings.Split(s, "@")
	if len(p) != n {
		return nil, false
	}
	for _, x := range p {
		if x == "" || strings.TrimSpace(x) != x {
			return nil, false
		}
	}
	return p, true
}

type thingIn struct {
	sensusID, deviceID, customerID string
	id                             int64
}

func checkThing(o obj) (thingIn, error) {
	var t thingIn
	var err error
	if t.sensusID, err = str(o, "sensusID", true); err != nil {
		return t, err
	}
	p, ok := splitSensus(t.sensusID, 2)
	if !ok {
		return t, fmt.Errorf("sensusID: %q: must be {deviceId}@{customerId}", t.sensusID)
	}
	t.deviceID, t.customerID = p[0], p[1]
	if _, err = str(o, "name", true); err != nil {
		return t, err
	}
	if _, err = str(o, "description", false); err != nil {
		return t, err
	}
	if _, err = object(o, "properties", false); err != nil {
		return t, err
	}
	c, err := str(o, "customerId", false)
	if err != nil {
		return t, err
	}
	if c != "" && c != t.customerID {
		return t, fmt.Errorf("customerId: %q: differs from the sensusID's %q", c, t.customerID)
	}
	t.id, err = iotID(o)
	return t, err
}

type dsIn struct {
	sensusID, deviceID, customerID, obsType string
	id                                      int64
	thing                                   ref
}

func checkDatastream(o obj) (dsIn, error) {
	var d dsIn
	var err error
	if d.sensusID, err = str(o, "sensusID", true); err != nil {
		return d, err
	}
	p, ok := splitSensus(d.sensusID, 4)
	if !ok {
		return d, fmt.Errorf("sensusID: %q: must be {sensor}@{input}@{deviceId}@{customerId}", d.sensusID)
	}
	d.deviceID, d.customerID = p[2], p[3]
	if _, err = str(o, "name", true); err != nil {
		return d, err
	}
	if _, err = str(o, "description", false); err != nil {
		return d, err
	}
	if d.obsType, err = str(o, "observationType", true); err != nil {
		return d, err
	}
	if !observationTypes[d.obsType] {
		return d, fmt.Errorf("observationType: %q: must be one of OM_Measurement, OM_CategoryObservation, "+
			"OM_CountObservation, OM_Observation, OM_TruthObservation", d.obsType)
	}
	u, err := object(o, "unitOfMeasurement", true)
	if err != nil {
		return d, err
	}
	for _, k := range []string{"name", "symbol", "definition"} {
		if err := optNullableString(u, k); err != nil {
			return d, fmt.Errorf("unitOfMeasurement.%w", err)
		}
	}
	if d.thing, err = getRef(o, "thing"); err != nil {
		return d, err
	}
	if want := d.deviceID + "@" + d.customerID; d.thing.sensusID != "" && d.thing.sensusID != want {
		return d, fmt.Errorf("thing.sensusID: %q: the datastream's sensusID says %q", d.thing.sensusID, want)
	}
	for _, k := range []string{"sensor", "observedProperty"} {
		if _, err := object(o, k, false); err != nil {
			return d, err
		}
	}
	d.id, err = iotID(o)
	return d, err
}

type obsIn struct {
	ds     ref
	result any
}

func checkObservation(o obj) (obsIn, error) {
	var ob obsIn
	if err := phenomenonTime(o); err != nil {
		return ob, err
	}
	if err := timeField(o, "resultTime", false); err != nil {
		return ob, err
	}
	r, ok := o["result"]
	if !ok {
		return ob, errors.New("result: required")
	}
	ob.result = r
	var err error
	if ob.ds, err = getRef(o, "datastream"); err != nil {
		return ob, err
	}
	for _, k := range []string{"featureOfInterest", "parameters"} {
		if _, err := object(o, k, false); err != nil {
			return ob, err
		}
	}
	return ob, nil
}

// checkResult checks a result against its datastream's observationType.
func checkResult(obsType string, v any) error {
	ok := true
	switch obsType {
	case "OM_Measurement":
		_, ok = v.(json.Number)
	case "OM_CategoryObservation":
		_, ok = v.(string)
	case "OM_CountObservation":
		n, isNum := v.(json.Number)
		if ok = isNum; ok {
			_, err := n.Int64()
			ok = err == nil
		}
	case "OM_TruthObservation":
		_, ok = v.(bool)
	}
	if !ok {
		return fmt.Errorf("result: %s does not fit observationType %s", typeName(v), obsType)
	}
	return nil
}

func checkAlarm(o obj) (string, error) {
	id, err := str(o, "alarmId", true)
	if err != nil {
		return "", err
	}
	if _, err := str(o, "alarmType", true); err != nil {
		return id, err
	}
	sev, err := str(o, "severity", true)
	if err != nil {
		return id, err
	}
	if !severities[sev] {
		return id, fmt.Errorf("severity: %q: must be LOW, MEDIUM, HIGH or CRITICAL", sev)
	}
	st, err := str(o, "status", true)
	if err != nil {
		return id, err
	}
	if !alarmStatuses[st] {
		return id, fmt.Errorf("status: %q: must be ACTIVE or CLEARED", st)
	}
	if err := timeField(o, "triggeredAt", true); err != nil {
		return id, err
	}
	for _, k := range []string{"clearedAt", "acknowledgedAt"} {
		if err := timeField(o, k, false); err != nil {
			return id, err
		}
	}
	for _, k := range []string{"description", "unit"} {
		if _, err := str(o, k, false); err != nil {
			return id, err
		}
	}
	for _, k := range []string{"thresholdValue", "currentValue"} {
		if _, _, err := number(o, k); err != nil {
			return id, err
		}
	}
	if loc, err := object(o, "location", false); err != nil {
		return id, err
	} else if loc != nil {
		lat, okLat, err := number(loc, "latitude")
		if err != nil || !okLat || lat < -90 || lat > 90 {
			return id, errors.New("location.latitude: must be a number in [-90, 90]")
		}
		lon, okLon, err := number(loc, "longitude")
		if err != nil || !okLon || lon < -180 || lon > 180 {
			return id, errors.New("location.longitude: must be a number in [-180, 180]")
		}
	}
	if _, err := object(o, "deviceInfo", false); err != nil {
		return id, err
	}
	return id, nil
}

type rawIn struct{ deviceID, customerID, batchID string }

// checkRaw validates a v1 raw record. customerId must be present but may be
// empty: raw frames of devices nobody registered are archived too.
func checkRaw(o obj) (rawIn, error) {
	var r rawIn
	var err error
	if r.deviceID, err = str(o, "deviceId", true); err != nil {
		return r, err
	}
	if _, ok := o["customerId"]; !ok {
		return r, errors.New("customerId: required")
	}
	if r.customerID, err = str(o, "customerId", false); err != nil {
		return r, err
	}
	for _, k := range []string{"transportType", "dataType"} {
		if _, err := str(o, k, true); err != nil {
			return r, err
		}
	}
	if _, err := str(o, "deviceType", false); err != nil {
		return r, err
	}
	if _, ok := o["payload"]; !ok {
		return r, errors.New("payload: required")
	}
	p, err := str(o, "payload", false)
	if err != nil {
		return r, err
	}
	if len(p)%2 != 0 || strings.Trim(p, "0123456789abcdef") != "" {
		return r, errors.New("payload: must be lower-case hex of whole bytes")
	}
	if err := timeField(o, "timestamp", true); err != nil {
		return r, err
	}
	if _, err := object(o, "metadata", false); err != nil {
		return r, err
	}
	if r.batchID, err = str(o, "batchId", false); err != nil {
		return r, err
	}
	return r, nil
}

// recordID names a record in an error: alarmId for alarms, else the
// record's sensusID or @iot.id where it has one.
func recordID(kind string, o obj) string {
	if o == nil {
		return ""
	}
	if kind == Alarms {
		s, _ := o["alarmId"].(string)
		return s
	}
	if s, ok := o["sensusID"].(string); ok && s != "" {
		return s
	}
	if n, ok := o["@iot.id"].(json.Number); ok {
		return n.String()
	}
	if s, ok := o["recordId"].(string); ok {
		return s
	}
	return ""
}
