package decoders

import (
	"maps"
	"reflect"
	"sync"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/vigd/vigd/decoders/sta"
)

// entities are what a frame's thing, datastream and feature templates
// render to.
type entities struct {
	thing   sta.Thing
	things  []sta.Thing
	dss     []sta.Datastream
	refs    []sta.Ref
	feature *sta.Ref
}

// entityCache memoises a decoder's entities per device. Decode is pure, and
// when no thing, datastream or feature template reads anything but the
// device (deviceId, customerId, identity, device; in datastreams also the
// datastream's own name, sensor, input, observedProperty), they are the
// same for every frame of the device: rendering them — a dozen expression
// runs — once per device instead of once per frame is most of what a
// one-line frame costs. Templates that read the frame or the record's
// fields are rendered every time, as before. Results from the cache share
// their slices: callers must not modify them.
type entityCache struct {
	once      sync.Once
	cacheable bool
	mu        sync.RWMutex
	m         map[entityKey]*entities
}

// entityCacheSize bounds the devices remembered; past it the cache starts
// over.
const entityCacheSize = 4096

type entityKey struct {
	identity, id, cust, name, desc string
	props                          uintptr // the registry's properties map
}

var (
	deviceNames = map[string]bool{"deviceId": true, "customerId": true, "identity": true, "device": true}
	streamNames = map[string]bool{"deviceId": true, "customerId": true, "identity": true, "device": true,
		"name": true, "sensor": true, "input": true, "observedProperty": true}
)

// templateReads reports whether every name the template's expressions read
// is in allowed (helpers, builtins and let variables aside).
func templateReads(t *template, allowed map[string]bool) bool {
	if t == nil {
		return true
	}
	for _, p := range t.parts {
		if p.prog != nil && !programReads(p.prog, allowed) {
			return false
		}
	}
	return true
}

func programReads(p *vm.Program, allowed map[string]bool) bool {
	v := &identVisitor{lets: map[string]bool{}}
	n := p.Node()
	ast.Walk(&n, v)
	for _, id := range v.ids {
		if allowed[id] || v.lets[id] || helperNames[id] {
			continue
		}
		return false
	}
	return true
}

// deviceOnly reports whether the decoder's entities depend on the device
// alone.
func (d *Decoder) deviceOnly() bool {
	if !templateReads(d.thingName, deviceNames) || !templateReads(d.thingDesc, deviceNames) || !templateReads(d.feature, deviceNames) {
		return false
	}
	for _, p := range d.thingProps {
		if !templateReads(p.t, deviceNames) {
			return false
		}
	}
	for _, s := range d.streams {
		for _, t := range []*template{s.description, s.sensor, s.input, s.property, s.sensusID} {
			if !templateReads(t, streamNames) {
				return false
			}
		}
	}
	return true
}

// entitiesFor returns the frame's entities, from the cache when they can
// only depend on the device.
func (d *Decoder) entitiesFor(env map[string]any, dev Device, identity string) (*entities, error) {
	c := &d.ents
	c.once.Do(func() { c.cacheable = d.deviceOnly() })
	if !c.cacheable {
		return d.buildEntities(env, dev)
	}
	k := entityKey{identity: identity, id: dev.ID, cust: dev.CustomerID, name: dev.Name, desc: dev.Description}
	if dev.Properties != nil {
		k.props = uintptr(reflect.ValueOf(dev.Properties).UnsafePointer())
	}
	c.mu.RLock()
	e := c.m[k]
	c.mu.RUnlock()
	if e != nil {
		return e, nil
	}
	e, err := d.buildEntities(env, dev)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= entityCacheSize {
		c.m = map[entityKey]*entities{}
	}
	c.m[k] = e
	c.mu.Unlock()
	return e, nil
}

// buildEntities renders the thing, the datastreams and the feature.
func (d *Decoder) buildEntities(env map[string]any, dev Device) (*entities, error) {
	thing, err := d.thing(env, dev)
	if err != nil {
		return nil, d.fail(-1, nil, "thing: %v", err)
	}
	e := &entities{thing: thing, things: []sta.Thing{thing}, refs: make([]sta.Ref, len(d.streams))}
	dsEnv := maps.Clone(env) // one copy; datastream() overwrites its own keys
	for i, s := range d.streams {
		ds, err := d.datastream(s, dsEnv, thing)
		if err != nil {
			return nil, d.fail(-1, nil, "datastreams[%d] %q: %v", i, s.name, err)
		}
		e.dss = append(e.dss, ds)
		e.refs[i] = sta.Ref{Name: ds.Name, SensusID: ds.SensusID}
	}
	if d.feature != nil {
		name, err := d.feature.eval(env)
		if err != nil {
			return nil, d.fail(-1, nil, "featureOfInterest: %v", err)
		}
		if name != "" {
			e.feature = &sta.Ref{Name: name}
		}
	}
	// Callers that append get a copy, never the cached array.
	e.things = e.things[:1:1]
	e.dss = e.dss[:len(e.dss):len(e.dss)]
	return e, nil
}
