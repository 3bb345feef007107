package forwarder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/vigd/vigd/forwarder/queue"
)

// endpoint is one eventstore endpoint.
type endpoint struct {
	name    string // metric label and dead-letter "where"
	path    string
	listKey string // "" for raw: one record is the whole body
}

// item is one record of a request: a queue record or an entity.
type item struct {
	body  []byte
	entry *queue.Entry   // queue record, or nil
	ent   *pendingEntity // entity, or nil
}

func (it *item) kind() string {
	if it.ent != nil {
		return it.ent.Kind.String()
	}
	return it.entry.Rec.Kind.String()
}

// ref is the sensusID of the entity the item refers to.
func (it *item) ref() string {
	if it.ent != nil {
		return it.ent.Thing
	}
	return it.entry.Rec.Ref
}

// ids are the names the server may give the item in errors[].recordId /
// alarmId: its own sensusID, @iot.id, alarmId, id.
func (it *item) ids() []string {
	var out []string
	if it.ent != nil {
		out = append(out, it.ent.SensusID)
		if it.ent.IotID != "" {
			out = append(out, it.ent.IotID)
		}
		return out
	}
	var v struct {
		IotID    json.RawMessage `json:"@iot.id"`
		SensusID string          `json:"sensusID"`
		AlarmID  string          `json:"alarmId"`
		ID       json.RawMessage `json:"id"`
	}
	if json.Unmarshal(it.body, &v) != nil {
		return nil
	}
	for _, s := range []string{v.SensusID, v.AlarmID, rawID(v.IotID), rawID(v.ID)} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// rawID is a JSON string or number as text.
func rawID(m json.RawMessage) string {
	if len(m) == 0 || string(m) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(m, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(m))
}

// batch is what one request carries.
type batch struct {
	ep        *endpoint
	q         *qinfo // nil for entities
	id        string // batchId ("" for entities and raw)
	dev, cust string
	items     []item
	stamp     string // alarms: the batch's "timestamp"
	wire      []byte // body as sent (after gzip), built once
}

func (b *batch) split() (*batch, *batch) {
	h := len(b.items) / 2
	x, y := *b, *b
	x.items, y.items = b.items[:h:h], b.items[h:]
	x.wire, y.wire = nil, nil
	if b.id != "" {
		x.id, y.id = b.id+"-a", b.id+"-b"
	}
	return &x, &y
}

// without returns b less the items whose index is in drop (same id: the
// server stored nothing of the refused request).
func (b *batch) without(drop map[int]bool) *batch {
	n := *b
	n.items = nil
	n.wire = nil
	for i, it := range b.items {
		if !drop[i] {
			n.items = append(n.items, it)
		}
	}
	return &n
}

// body is the JSON of the request before compression.
func (b *batch) body() []byte {
	if b.ep.listKey == "" {
		return withBatchID(b.items[0].body, b.id)
	}
	var buf bytes.Buffer
	n := envelope
	for i := range b.items {
		n += len(b.items[i].body) + 1
	}
	buf.Grow(n)
	str := func(s string) {
		q, _ := json.Marshal(s)
		buf.Write(q)
	}
	list := func() {
		buf.WriteString(`"` + b.ep.listKey + `":[`)
		for i, it := range b.items {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(it.body)
		}
		buf.WriteByte(']')
	}
	buf.WriteByte('{')
	switch b.ep.listKey {
	case "observations":
		list()
		buf.WriteString(`,"deviceId":`)
		str(b.dev)
		buf.WriteString(`,"customerId":`)
		str(b.cust)
		buf.WriteString(`,"batchType":"OBSERVATIONS","batchId":`)
		str(b.id)
	case "alarms":
		buf.WriteString(`"batchId":`)
		str(b.id)
		buf.WriteString(`,"timestamp":`)
		str(b.stamp)
		buf.WriteString(`,"deviceId":`)
		str(b.dev)
		buf.WriteString(`,"customerId":`)
		str(b.cust)
		buf.WriteByte(',')
		list()
	default:
		list()
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// envelope is a generous estimate of the bytes of a body besides its items.
const envelope = 256

type groupKey struct {
	kind      queue.Kind
	dev, cust string
}

// makeBatches groups a window's records by (kind, device, customer) in
// queue order and cuts each group by count and bytes. Batch ids derive from
// the positions of the records, so the same window always gives the same
// batches with the same ids. Batches come out in the order of their first
// record; a device's batches keep their order.
func (f *Forwarder) makeBatches(qi *qinfo, es []queue.Entry) []*batch {
	var order []groupKey
	groups := map[groupKey][]int{}
	for i := range es {
		r := &es[i].Rec
		k := groupKey{r.Kind, r.DeviceID, r.CustomerID}
		if r.Kind == queue.Raw {
			// one request per raw record; a unique key keeps queue order
			k.dev = fmt.Sprintf("%s\x00%d", r.DeviceID, i)
		}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	stamp := f.clock.Now().UTC().Format("2006-01-02T15:04:05Z")
	var out []*batch
	for _, k := range order {
		idx := groups[k]
		var cur []int
		var size int64
		flush := func() {
			if len(cur) == 0 {
				return
			}
			first := es[cur[0]]
			b := &batch{q: qi, dev: first.Rec.DeviceID, cust: first.Rec.CustomerID, stamp: stamp}
			switch k.kind {
			case queue.Alarm:
				b.ep = &f.eps.alarms
			case queue.Raw:
				b.ep = &f.eps.raw
			default:
				b.ep = &f.eps.observations
			}
			b.id = "vigd-" + f.state.Epoch() + "-" + qi.name + "-" + strconv.FormatUint(first.Pos.Segment, 10) + "-" +
				strconv.FormatInt(first.Pos.Offset, 10) + "-" + strconv.Itoa(len(cur))
			for _, j := range cur {
				b.items = append(b.items, item{body: es[j].Rec.Body, entry: &es[j]})
			}
			out = append(out, b)
			cur, size = nil, 0
		}
		for _, j := range idx {
			n := int64(len(es[j].Rec.Body) + 1)
			if len(cur) > 0 && (len(cur) >= f.cfg.Batch.MaxRecords || size+n+envelope > f.cfg.Batch.MaxBytes) {
				flush()
			}
			cur = append(cur, j)
			size += n
		}
		flush()
	}
	// Send in queue order of first records; a group's batches keep theirs.
	sortBatches(out)
	return out
}

func sortBatches(bs []*batch) {
	sort.SliceStable(bs, func(i, j int) bool { return bs[i].items[0].entry.Pos.Less(bs[j].items[0].entry.Pos) })
}

// entityBatches cuts pending entities into requests by count and bytes.
func (f *Forwarder) entityBatches(k EntityKind, ps []pendingEntity) []*batch {
	ep := &f.eps.things
	if k == Datastream {
		ep = &f.eps.datastreams
	}
	var out []*batch
	var cur *batch
	var size int64
	for i := range ps {
		n := int64(len(ps[i].Body) + 1)
		if cur == nil || len(cur.items) >= f.cfg.Batch.MaxRecords || size+n+envelope > f.cfg.Batch.MaxBytes {
			cur = &batch{ep: ep}
			out = append(out, cur)
			size = 0
		}
		cur.items = append(cur.items, item{body: ps[i].Body, ent: &ps[i]})
		size += n
	}
	return out
}

// withBatchID puts "batchId" first in a raw record's body (the contract
// lets every body carry one), so that a raw record re-sent after a lost
// answer or a crash is a 409 and not a second copy. A body that has one
// already, or is not an object, is sent as it is.
func withBatchID(body []byte, id string) []byte {
	t := bytes.TrimLeft(body, " \t\r\n")
	if id == "" || len(t) < 2 || t[0] != '{' || bytes.Contains(body, []byte(`"batchId"`)) {
		return body
	}
	q, _ := json.Marshal(id)
	out := make([]byte, 0, len(body)+len(q)+16)
	out = append(out, `{"batchId":`...)
	out = append(out, q...)
	if rest := bytes.TrimLeft(t[1:], " \t\r\n"); len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, t[1:]...)
}
