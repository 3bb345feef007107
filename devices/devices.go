// Package devices is the device registry: a YAML file that maps what a frame
// knows of its source (IMEI, ORBCOMM mobile id, MQTT topic segment, remote
// address, a serial number the decoder read from the payload) to the
// device's deviceId, customerId, name and properties.
//
//	defaults:
//	  customer_id: "047"
//	devices:
//	  - identity: "300234010000020"        # or identities: [a, b]
//	    device_id: FST300234010000020
//	    customer_id: "047"
//	    name: Pump station 7
//	    description: Pump controller
//	    properties: {model: FST-2000}
//
// A Registry is immutable once loaded; a reload builds a new one.
package devices

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Device is what the registry knows of one device.
type Device struct {
	Identities  []string       `yaml:"identities"`
	Identity    string         `yaml:"identity"`
	DeviceID    string         `yaml:"device_id"`
	CustomerID  string         `yaml:"customer_id"`
	Name        string         `yaml:"name"`
	Description string         `yaml:"description"`
	Properties  map[string]any `yaml:"properties"`
}

type file struct {
	Defaults struct {
		CustomerID string `yaml:"customer_id"`
	} `yaml:"defaults"`
	Devices []Device `yaml:"devices"`
}

// Registry maps identities to devices.
type Registry struct {
	byIdentity      map[string]*Device
	defaultCustomer string
}

// Empty is a registry that knows no device.
func Empty() *Registry { return &Registry{byIdentity: map[string]*Device{}} }

// Load reads a registry file. Every problem is reported, each with
// file:line.
func Load(path string) (*Registry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// Parse reads a registry from bytes; path names them in errors.
func Parse(path string, b []byte) (*Registry, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var f file
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)                                             // one whole-document decode: KnownFields works here
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // io.EOF: empty file
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	r := &Registry{byIdentity: map[string]*Device{}, defaultCustomer: f.Defaults.CustomerID}
	var errs []error
	lines := deviceLines(&root)
	for i := range f.Devices {
		d := &f.Devices[i]
		line := 0
		if i < len(lines) {
			line = lines[i]
		}
		ids := d.Identities
		if d.Identity != "" {
			ids = append(ids, d.Identity)
		}
		if len(ids) == 0 {
			errs = append(errs, fmt.Errorf("%s:%d: devices[%d]: identity is required", path, line, i))
			continue
		}
		if d.DeviceID == "" {
			errs = append(errs, fmt.Errorf("%s:%d: devices[%d]: device_id is required", path, line, i))
			continue
		}
		if d.CustomerID == "" {
			d.CustomerID = f.Defaults.CustomerID
		}
		for _, id := range ids {
			if prev, dup := r.byIdentity[id]; dup {
				errs = append(errs, fmt.Errorf("%s:%d: devices[%d]: identity %q is already used by %s", path, line, i, id, prev.DeviceID))
				continue
			}
			r.byIdentity[id] = d
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func deviceLines(root *yaml.Node) []int {
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "devices" && m.Content[i+1].Kind == yaml.SequenceNode {
			var out []int
			for _, c := range m.Content[i+1].Content {
				out = append(out, c.Line)
			}
			return out
		}
	}
	return nil
}

// Lookup finds the device of an identity.
func (r *Registry) Lookup(identity string) (Device, bool) {
	d, ok := r.byIdentity[identity]
	if !ok {
		return Device{}, false
	}
	return *d, true
}

// DefaultCustomer is the file's defaults.customer_id.
func (r *Registry) DefaultCustomer() string { return r.defaultCustomer }

// Len is the number of identities known.
func (r *Registry) Len() int { return len(r.byIdentity) }
