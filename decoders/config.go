package decoders

import (
	"strings"

	"gopkg.in/yaml.v3"
)

// The YAML shape of a decoder file. Keys that name a field of the
// SensorThings / eventstore records (observationType, sensusID,
// observedProperty, alarmType, thresholdValue, ...) are spelled as on the
// wire; the engine's own keys are snake_case. README.md documents each key.

type fileConfig struct {
	Name        string            `yaml:"name"`
	Description string            `yaml:"description"`
	Format      string            `yaml:"format"`
	Text        *textConfig       `yaml:"text"`
	NMEA        *nmeaConfig       `yaml:"nmea"`
	JSON        *jsonConfig       `yaml:"json"`
	Binary      *binaryConfig     `yaml:"binary"`
	Computed    []computedConfig  `yaml:"computed"`
	Identity    string            `yaml:"identity"`
	Time        *timeConfig       `yaml:"time"`
	BadRecords  string            `yaml:"bad_records"`
	Thing       thingConfig       `yaml:"thing"`
	Parameters  map[string]string `yaml:"parameters"`
	Feature     string            `yaml:"featureOfInterest"`
	Datastreams []dsConfig        `yaml:"datastreams"`
	Alarms      []alarmConfig     `yaml:"alarms"`
	Examples    []exampleConfig   `yaml:"examples"`
}

type computedConfig struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type timeConfig struct {
	Value    string `yaml:"value"`
	Nanos    string `yaml:"nanos"`
	Layout   string `yaml:"layout"`
	Zone     string `yaml:"zone"`
	Epoch    string `yaml:"epoch"`
	Unit     string `yaml:"unit"`
	Fallback string `yaml:"fallback"`
}

type thingConfig struct {
	Name        string            `yaml:"name"`
	Description string            `yaml:"description"`
	Properties  map[string]string `yaml:"properties"`
}

type unitConfig struct {
	Name       string `yaml:"name"`
	Symbol     string `yaml:"symbol"`
	Definition string `yaml:"definition"`
}

type rangeConfig struct {
	Min    *float64 `yaml:"min"`
	Max    *float64 `yaml:"max"`
	Action string   `yaml:"action"`
}

type dsConfig struct {
	Name             string            `yaml:"name"`
	Description      string            `yaml:"description"`
	ObservationType  string            `yaml:"observationType"`
	Unit             *unitConfig       `yaml:"unit"`
	Sensor           string            `yaml:"sensor"`
	Input            string            `yaml:"input"`
	ObservedProperty string            `yaml:"observedProperty"`
	SensusID         string            `yaml:"sensusID"`
	Value            string            `yaml:"value"`
	PhenomenonTime   string            `yaml:"phenomenonTime"`
	When             string            `yaml:"when"`
	Range            *rangeConfig      `yaml:"range"`
	Parameters       map[string]string `yaml:"parameters"`
}

type locationConfig struct {
	Latitude  string `yaml:"latitude"`
	Longitude string `yaml:"longitude"`
}

type deviceInfoConfig struct {
	SerialNumber    string `yaml:"serialNumber"`
	Model           string `yaml:"model"`
	FirmwareVersion string `yaml:"firmwareVersion"`
}

type alarmConfig struct {
	Name           string            `yaml:"name"`
	AlarmType      string            `yaml:"alarmType"`
	Severity       string            `yaml:"severity"`
	Description    string            `yaml:"description"`
	Raise          string            `yaml:"raise"`
	Clear          string            `yaml:"clear"`
	ThresholdValue *float64          `yaml:"thresholdValue"`
	CurrentValue   string            `yaml:"currentValue"`
	Unit           string            `yaml:"unit"`
	Location       *locationConfig   `yaml:"location"`
	DeviceInfo     *deviceInfoConfig `yaml:"deviceInfo"`
}

// ---- text ----

type textConfig struct {
	Separator   string        `yaml:"separator"`
	Quoting     string        `yaml:"quoting"`
	TrimSpace   bool          `yaml:"trim_space"`
	Comment     string        `yaml:"comment"`
	SkipLines   int           `yaml:"skip_lines"`
	Header      *headerConfig `yaml:"header"`
	Columns     []string      `yaml:"columns"`
	TextColumns []string      `yaml:"text_columns"`
	Missing     []string      `yaml:"missing"`
}

type headerConfig struct {
	Match string `yaml:"match"`
	Lines int    `yaml:"lines"`
	Names int    `yaml:"names"`
	Units int    `yaml:"units"`
}

// ---- nmea ----

type nmeaConfig struct {
	AllowUnchecked bool                       `yaml:"allow_unchecked"`
	MaxLength      int                        `yaml:"max_length"`
	Sentences      map[string]*sentenceConfig `yaml:"sentences"`
}

type sentenceConfig struct {
	Fields    []nmeaField      `yaml:"fields"`
	MinFields int              `yaml:"min_fields"`
	Computed  []computedConfig `yaml:"computed"`
}

type nmeaField struct {
	Name     string   `yaml:"name"`
	Type     string   `yaml:"type"`
	Required bool     `yaml:"required"`
	Values   []string `yaml:"values"`
}

// unmarshalNode accepts "name", "name:type" or a mapping.
func (f *nmeaField) unmarshalNode(d *yamlDec, n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		name, typ, _ := strings.Cut(n.Value, ":")
		f.Name, f.Type = strings.TrimSpace(name), strings.TrimSpace(typ)
		return
	}
	d.decodeStruct(n, reflectValue(f), path)
}

// ---- json ----

type jsonConfig struct {
	Records string      `yaml:"records"`
	Fields  []jsonField `yaml:"fields"`
}

type jsonField struct {
	Name     string `yaml:"name"`
	Path     string `yaml:"path"`
	Required bool   `yaml:"required"`
}

// ---- binary ----

type binaryConfig struct {
	SkipLines int             `yaml:"skip_lines"`
	ByteOrder string          `yaml:"byte_order"`
	Checksum  *checksumConfig `yaml:"checksum"`
	Fields    []binField      `yaml:"fields"`
	Switch    *switchConfig   `yaml:"switch"`
	Records   *recordsConfig  `yaml:"records"`
}

type checksumConfig struct {
	Type      string `yaml:"type"`
	From      *int   `yaml:"from"`
	To        *int   `yaml:"to"`
	At        *int   `yaml:"at"`
	ByteOrder string `yaml:"byte_order"`
}

type switchConfig struct {
	On      string       `yaml:"on"`
	Cases   []caseConfig `yaml:"cases"`
	Default *caseConfig  `yaml:"default"`
}

type caseConfig struct {
	Match   []string       `yaml:"match"`
	Fields  []binField     `yaml:"fields"`
	Records *recordsConfig `yaml:"records"`
	Error   string         `yaml:"error"`
}

type recordsConfig struct {
	Count  string     `yaml:"count"`
	Size   int        `yaml:"size"`
	Fields []binField `yaml:"fields"`
}

type binField struct {
	Name      string            `yaml:"name"`
	Type      string            `yaml:"type"`
	Offset    *int              `yaml:"offset"`
	Size      int               `yaml:"size"`
	ByteOrder string            `yaml:"byte_order"`
	Scale     *float64          `yaml:"scale"`
	Div       *float64          `yaml:"div"`
	Add       *float64          `yaml:"add"`
	Decimals  *int              `yaml:"decimals"`
	Lookup    map[string]string `yaml:"lookup"`
	Epoch     string            `yaml:"epoch"`
	Bits      []bitField        `yaml:"bits"`
}

type bitField struct {
	Name   string            `yaml:"name"`
	Bit    int               `yaml:"bit"`
	Len    int               `yaml:"len"`
	Lookup map[string]string `yaml:"lookup"`
}

// ---- examples ----

type exampleConfig struct {
	Name       string          `yaml:"name"`
	Hex        string          `yaml:"hex"`
	Text       *string         `yaml:"text"`
	File       string          `yaml:"file"`
	Line       int             `yaml:"line"`
	Frame      exampleFrame    `yaml:"frame"`
	Device     *exampleDevice  `yaml:"device"`
	Default    string          `yaml:"default_customer"`
	AlarmState map[string]bool `yaml:"alarm_state"`
	Expect     exampleExpect   `yaml:"expect"`
}

type exampleFrame struct {
	Adapter    string            `yaml:"adapter"`
	Kind       string            `yaml:"kind"`
	Source     string            `yaml:"source"`
	Identity   string            `yaml:"identity"`
	CustomerID string            `yaml:"customerId"`
	Received   string            `yaml:"received"`
	Meta       map[string]string `yaml:"meta"`
}

type exampleDevice struct {
	ID          string         `yaml:"id"`
	CustomerID  string         `yaml:"customerId"`
	Name        string         `yaml:"name"`
	Description string         `yaml:"description"`
	Properties  map[string]any `yaml:"properties"`
	Unknown     bool           `yaml:"unknown"`
}

type exampleExpect struct {
	Error        string          `yaml:"error"`
	Things       []any           `yaml:"things"`
	Datastreams  []any           `yaml:"datastreams"`
	Observations []any           `yaml:"observations"`
	Alarms       []any           `yaml:"alarms"`
	Skipped      []string        `yaml:"skipped"`
	Counts       map[string]int  `yaml:"counts"`
	AlarmChanges map[string]bool `yaml:"alarm_changes"`
}
