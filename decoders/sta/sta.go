// Package sta holds the OGC SensorThings entities as the XCloud v2
// eventstore takes them (../shared/contract/v2-eventstore.md), with the exact
// JSON of the contract. Field order in the structs is the order on the wire.
package sta

import "encoding/json"

// Ref points at another entity by @iot.id, sensusID, or both; a numeric id
// is only sent when configuration or the server gave one.
type Ref struct {
	ID       int64  `json:"@iot.id,omitempty"`
	Name     string `json:"name,omitempty"`
	SensusID string `json:"sensusID,omitempty"`
}

// Thing is a device. SensusID is "{deviceId}@{customerId}".
type Thing struct {
	ID          int64          `json:"@iot.id,omitempty"`
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Properties  map[string]any `json:"properties,omitempty"`
	CustomerID  string         `json:"customerId"`
	SensusID    string         `json:"sensusID"`
}

// Unit is a datastream's unit of measurement; all three are null for truth
// and category datastreams.
type Unit struct {
	Name       *string `json:"name"`
	Symbol     *string `json:"symbol"`
	Definition *string `json:"definition"`
}

// Datastream is one measured quantity of a thing. SensusID is
// "{sensor}@{input}@{deviceId}@{customerId}".
type Datastream struct {
	ID                int64  `json:"@iot.id,omitempty"`
	Name              string `json:"name"`
	Description       string `json:"description"`
	ObservationType   string `json:"observationType"`
	UnitOfMeasurement Unit   `json:"unitOfMeasurement"`
	Thing             Ref    `json:"thing"`
	Sensor            Ref    `json:"sensor"`
	ObservedProperty  Ref    `json:"observedProperty"`
	SensusID          string `json:"sensusID"`
}

// Observation types of the contract.
const (
	Measurement = "OM_Measurement"
	Category    = "OM_CategoryObservation"
	Count       = "OM_CountObservation"
	Any         = "OM_Observation"
	Truth       = "OM_TruthObservation"
)

// Observation is one value. PhenomenonTime is RFC 3339 UTC or an interval
// "start/end". Result is a json.RawMessage so that numbers keep the exact
// decimal the decoder chose (an f32 prints as its shortest round-trip form).
type Observation struct {
	PhenomenonTime    string          `json:"phenomenonTime"`
	Result            json.RawMessage `json:"result"`
	ResultTime        string          `json:"resultTime,omitempty"`
	Datastream        Ref             `json:"datastream"`
	FeatureOfInterest *Ref            `json:"featureOfInterest,omitempty"`
	Parameters        map[string]any  `json:"parameters,omitempty"`
}

// Location of an alarm.
type Location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
}

// DeviceInfo of an alarm.
type DeviceInfo struct {
	SerialNumber    string `json:"serialNumber,omitempty"`
	Model           string `json:"model,omitempty"`
	FirmwareVersion string `json:"firmwareVersion,omitempty"`
}

// Alarm statuses and severities of the contract.
const (
	AlarmActive  = "ACTIVE"
	AlarmCleared = "CLEARED"
)

// Alarm is one raise or clear of an alarm rule.
type Alarm struct {
	AlarmID        string      `json:"alarmId"`
	AlarmType      string      `json:"alarmType"`
	Severity       string      `json:"severity"`
	Status         string      `json:"status"`
	TriggeredAt    string      `json:"triggeredAt"`
	Description    string      `json:"description,omitempty"`
	ThresholdValue *float64    `json:"thresholdValue,omitempty"`
	CurrentValue   *float64    `json:"currentValue,omitempty"`
	Unit           string      `json:"unit,omitempty"`
	Location       *Location   `json:"location,omitempty"`
	DeviceInfo     *DeviceInfo `json:"deviceInfo,omitempty"`
}

// Raw is a v1 raw-data record: the frame as lower-case hex.
type Raw struct {
	DeviceID      string            `json:"deviceId"`
	CustomerID    string            `json:"customerId"`
	TransportType string            `json:"transportType"`
	DataType      string            `json:"dataType"`
	DeviceType    string            `json:"deviceType"`
	Payload       string            `json:"payload"`
	Timestamp     string            `json:"timestamp"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}
