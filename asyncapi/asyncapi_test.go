package asyncapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/asyncapi"
	"github.com/eventkit/eventkit/asyncapi/asyncapitest"
	"github.com/eventkit/eventkit/eventkitpb"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
)

type Base struct {
	Tenant string `json:"tenant"`
}

// Kitchen has a field of every shape encoding/json handles.
type Kitchen struct {
	Base
	ID     string            `json:"id"`
	Count  int               `json:"count,omitempty"`
	Big    uint64            `json:"big"`
	Ratio  float64           `json:"ratio"`
	OK     bool              `json:"ok"`
	At     time.Time         `json:"at"`
	Maybe  *time.Time        `json:"maybe"`
	Tags   []string          `json:"tags"`
	Raw    []byte            `json:"raw"`
	Attrs  map[string]int    `json:"attrs"`
	Next   *Kitchen          `json:"next"`
	Num    int               `json:"num,string"`
	Any    any               `json:"any"`
	Fixed  [2]int            `json:"fixed"`
	Custom json.RawMessage   `json:"custom,omitempty"`
	Nested map[string][]Base `json:"nested,omitzero"`
	Skip   string            `json:"-"`
	NoTag  string
	hidden string
}

type KitchenV2 struct {
	ID    string `json:"id"`
	Label string `json:"label,omitempty"`
}

func kitchenRegistry(t *testing.T) *eventkit.Registry {
	t.Helper()
	r := eventkit.NewRegistry()
	eventkit.MustRegister[Kitchen](r, "test.kitchen", "1", eventkit.JSON, eventkit.SchemaURI("https://example.com/kitchen/1"))
	eventkit.MustRegister[KitchenV2](r, "test.kitchen", "2", eventkit.JSON)
	eventkit.MustRegister[*eventkitpb.Envelope](r, "test.envelope", "1", eventkit.Protobuf)
	eventkit.MustRegister[*examplepb.OrderCreated](r, "order.created", "", eventkit.Protobuf)
	return r
}

func kitchenService(t *testing.T, b eventkit.Binding) asyncapi.Service {
	return asyncapi.Service{
		Name: "kitchen", Registry: kitchenRegistry(t), Binding: b,
		Publishes: []asyncapi.Channel{
			{Topic: "kitchen.events", Types: []string{"test.kitchen", "test.envelope"}},
			{Topic: "orders/eu >", Types: []string{"order.created"}}, // characters not allowed in ids
		},
		Subscribes: []asyncapi.Channel{
			{Topic: "kitchen.events", Types: []string{"test.kitchen"}}, // the same topic both ways: one channel
			{Topic: "orders/eu *", Types: []string{"order.created"}},   // sanitises to the same id as above
		},
	}
}

func docMap(t *testing.T, d *asyncapi.Doc) map[string]any {
	t.Helper()
	b, err := d.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func path(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok || m[k] == nil {
			t.Fatalf("no %s in the document (at %q)", strings.Join(keys, "/"), k)
		}
		v = m[k]
	}
	return v
}

func refs(t *testing.T, v any) []string {
	t.Helper()
	var out []string
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			out = append(out, e.(map[string]any)["$ref"].(string))
		}
	case map[string]any:
		for _, e := range x {
			out = append(out, e.(map[string]any)["$ref"].(string))
		}
	}
	return out
}

func TestDocumentShape(t *testing.T) {
	d, err := asyncapi.Document(kitchenService(t, eventkit.Binding{}))
	if err != nil {
		t.Fatal(err)
	}
	m := docMap(t, d)
	if m["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi = %v", m["asyncapi"])
	}
	channels := path(t, m, "channels").(map[string]any)
	if len(channels) != 3 {
		t.Fatalf("want 3 channels (kitchen.events once, two orders topics), got %v", channels)
	}
	ke := path(t, channels, "kitchen.events").(map[string]any)
	if ke["address"] != "kitchen.events" {
		t.Fatalf("address %v", ke["address"])
	}
	// Every registered version of a listed type is a message of the channel.
	got := refs(t, ke["messages"])
	want := map[string]bool{"#/components/messages/test.kitchen.v1": true, "#/components/messages/test.kitchen.v2": true, "#/components/messages/test.envelope.v1": true}
	if len(got) != len(want) {
		t.Fatalf("kitchen.events messages %v", got)
	}
	for _, r := range got {
		if !want[r] {
			t.Fatalf("unexpected message %s", r)
		}
	}
	addrs := map[string]string{}
	for id, c := range channels {
		addrs[c.(map[string]any)["address"].(string)] = id
	}
	if addrs["orders/eu >"] == "" || addrs["orders/eu *"] == "" || addrs["orders/eu >"] == addrs["orders/eu *"] {
		t.Fatalf("the two orders topics need distinct channel ids: %v", addrs)
	}
	ops := path(t, m, "operations").(map[string]any)
	send := path(t, ops, "send_kitchen.events").(map[string]any)
	recv := path(t, ops, "receive_kitchen.events").(map[string]any)
	if send["action"] != "send" || recv["action"] != "receive" {
		t.Fatalf("actions %v %v", send["action"], recv["action"])
	}
	if n := len(refs(t, send["messages"])); n != 3 {
		t.Fatalf("send has %d messages, want 3", n)
	}
	// The service consumes only test.kitchen there: the envelope is not received.
	for _, r := range refs(t, recv["messages"]) {
		if strings.Contains(r, "envelope") {
			t.Fatalf("receive lists %s, which the service does not consume", r)
		}
	}
	if len(ops) != 4 {
		t.Fatalf("want 4 operations, got %d", len(ops))
	}
	// An empty version gives a message without a dataversion header.
	oc := path(t, m, "components", "messages", "order.created").(map[string]any)
	if _, ok := path(t, oc, "headers", "properties").(map[string]any)["ce-dataversion"]; ok {
		t.Fatal("a type registered without a version has a ce-dataversion header")
	}
	// Deterministic output.
	d2, _ := asyncapi.Document(kitchenService(t, eventkit.Binding{}))
	a, _ := d.JSON()
	b, _ := d2.JSON()
	ya, _ := d.YAML()
	yb, _ := d2.YAML()
	if !bytes.Equal(a, b) || !bytes.Equal(ya, yb) {
		t.Fatal("two documents of the same service differ")
	}
}

func TestDocumentErrors(t *testing.T) {
	reg := kitchenRegistry(t)
	type Bad struct {
		C chan int `json:"c"`
	}
	eventkit.MustRegister[Bad](reg, "test.bad", "1", eventkit.JSON)
	for name, svc := range map[string]asyncapi.Service{
		"no name":      {Registry: reg},
		"empty topic":  {Name: "x", Registry: reg, Publishes: []asyncapi.Channel{{Types: []string{"test.kitchen"}}}},
		"no types":     {Name: "x", Registry: reg, Subscribes: []asyncapi.Channel{{Topic: "t"}}},
		"unknown type": {Name: "x", Registry: reg, Publishes: []asyncapi.Channel{{Topic: "t", Types: []string{"test.nope"}}}},
		"no schema":    {Name: "x", Registry: reg, Publishes: []asyncapi.Channel{{Topic: "t", Types: []string{"test.bad"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			d, err := asyncapi.Document(svc)
			if !errors.Is(err, asyncapi.ErrInvalid) || d != nil {
				t.Fatalf("err = %v, doc %v; want ErrInvalid", err, d)
			}
			if name == "unknown type" && !errors.Is(err, eventkit.ErrUnknownType) {
				t.Fatalf("err = %v, want eventkit.ErrUnknownType too", err)
			}
		})
	}
}

// TestDocumentPassesParser: the generated documents, JSON and YAML, for
// every binding, are accepted by the official AsyncAPI parser.
func TestDocumentPassesParser(t *testing.T) {
	var docs [][]byte
	for _, b := range []eventkit.Binding{eventkit.NATSBinding, eventkit.KafkaBinding, eventkit.AMQPBinding} {
		d, err := asyncapi.Document(kitchenService(t, b))
		if err != nil {
			t.Fatal(err)
		}
		j, err := d.JSON()
		if err != nil {
			t.Fatal(err)
		}
		y, err := d.YAML()
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, j, y)
	}
	asyncapitest.Validate(t, docs...)
}

// TestParserRejectsBrokenDocuments proves the check bites: documents broken
// in ways a generator could get wrong are rejected with an error.
func TestParserRejectsBrokenDocuments(t *testing.T) {
	d, err := asyncapi.Document(kitchenService(t, eventkit.NATSBinding))
	if err != nil {
		t.Fatal(err)
	}
	breaks := []struct {
		name    string
		breakIt func(m map[string]any)
	}{
		{"message not on the operation's channel", func(m map[string]any) {
			op := m["operations"].(map[string]any)["receive_kitchen.events"].(map[string]any)
			op["messages"] = []any{map[string]any{"$ref": "#/channels/orders_eu__/messages/order.created"}}
		}},
		{"no info.version", func(m map[string]any) { delete(m["info"].(map[string]any), "version") }},
		{"AsyncAPI 2 verb", func(m map[string]any) {
			m["operations"].(map[string]any)["send_kitchen.events"].(map[string]any)["action"] = "publish"
		}},
		{"dangling reference", func(m map[string]any) {
			m["channels"].(map[string]any)["kitchen.events"].(map[string]any)["messages"] = map[string]any{
				"x": map[string]any{"$ref": "#/components/messages/missing"}}
		}},
	}
	docs := [][]byte{mustJSON(t, d)} // the unbroken one first: it must pass
	for _, c := range breaks {
		m := docMap(t, d)
		c.breakIt(m)
		b, _ := json.Marshal(m)
		docs = append(docs, b)
	}
	rs := asyncapitest.Parse(t, docs...)
	if !rs[0].Parsed || len(rs[0].Errors) > 0 {
		t.Fatalf("the unbroken document is rejected: %v", rs[0].Errors)
	}
	for i, c := range breaks {
		if r := rs[i+1]; r.Parsed && len(r.Errors) == 0 {
			t.Errorf("%s: the parser accepted the broken document", c.name)
		} else {
			t.Logf("%s: rejected: %v", c.name, r.Errors)
		}
	}
}

func mustJSON(t *testing.T, d *asyncapi.Doc) []byte {
	t.Helper()
	b, err := d.JSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSchemasDescribeWhatIsSent: the headers a binding writes for an event
// built with NewTyped, and the payload the codec writes (protojson for
// Protobuf types), conform to the message's schemas; a wrong value does not.
func TestSchemasDescribeWhatIsSent(t *testing.T) {
	reg := kitchenRegistry(t)
	var cases []asyncapitest.Instance
	var wants []bool
	var labels []string
	conforms := func(schema any, instance []byte, want bool) {
		t.Helper()
		sb, err := json.Marshal(schema)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, asyncapitest.Instance{Schema: sb, Value: instance})
		wants = append(wants, want)
		_, file, line, _ := runtime.Caller(1)
		labels = append(labels, fmt.Sprintf("%s:%d (case %d)", filepath.Base(file), line, len(cases)-1))
	}
	for _, b := range []eventkit.Binding{eventkit.NATSBinding, eventkit.KafkaBinding, eventkit.AMQPBinding} {
		svc := kitchenService(t, b)
		svc.Registry = reg
		d, err := asyncapi.Document(svc)
		if err != nil {
			t.Fatal(err)
		}
		msgs := path(t, docMap(t, d), "components", "messages").(map[string]any)
		at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
		k := Kitchen{Base: Base{"t1"}, ID: "k1", Count: 3, Big: 1 << 63, Ratio: 0.5, OK: true, At: at, Maybe: &at,
			Tags: []string{"a"}, Raw: []byte{0, 1}, Attrs: map[string]int{"x": 1}, Next: &Kitchen{ID: "k2"}, Num: 7,
			Any: []any{1, "x"}, Custom: json.RawMessage(`{"z":1}`), Nested: map[string][]Base{"n": {{"t2"}}}, NoTag: "n"}
		for _, v := range []Kitchen{k, {}} {
			ev, err := eventkit.NewTyped(reg, v, eventkit.WithSubject("Bestellung ü 1"), eventkit.WithExtension("causationid", "c1"))
			if err != nil {
				t.Fatal(err)
			}
			conforms(path(t, msgs, "test.kitchen.v1", "payload"), ev.Data, true)
			h := map[string]string{}
			b.Headers(ev, func(k, v string) { h[k] = v })
			hb, _ := json.Marshal(h)
			conforms(path(t, msgs, "test.kitchen.v1", "headers"), hb, true)
			conforms(path(t, msgs, "test.kitchen.v2", "headers"), hb, false) // dataversion 1 is not 2
		}
		env := &eventkitpb.Envelope{Id: "e1", Source: "/s", Type: "t", SpecVersion: "1.0",
			Attributes: map[string]*eventkitpb.Envelope_AttributeValue{
				"time": {Attr: &eventkitpb.Envelope_AttributeValue_CeTimestamp{CeTimestamp: timestamppb.Now()}},
				"n":    {Attr: &eventkitpb.Envelope_AttributeValue_CeInteger{CeInteger: 5}},
			},
			Data: &eventkitpb.Envelope_BinaryData{BinaryData: []byte{1, 2}}}
		pj, err := protojson.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		conforms(path(t, msgs, "test.envelope.v1", "payload"), pj, true)
		conforms(path(t, msgs, "test.envelope.v1", "payload"), []byte(`{"id": 5}`), false)
		oc, _ := protojson.Marshal(&examplepb.OrderCreated{OrderId: "o", Quantity: 2, UnitPriceCents: 1 << 40})
		conforms(path(t, msgs, "order.created", "payload"), oc, true)
	}
	// The checks bite: a wrong type, a missing required field.
	d, _ := asyncapi.Document(kitchenService(t, eventkit.NATSBinding))
	msgs := path(t, docMap(t, d), "components", "messages").(map[string]any)
	good, _ := json.Marshal(Kitchen{})
	conforms(path(t, msgs, "test.kitchen.v1", "payload"), bytes.Replace(good, []byte(`"big":0`), []byte(`"big":"0"`), 1), false)
	conforms(path(t, msgs, "test.kitchen.v1", "payload"), bytes.Replace(good, []byte(`"id":"",`), nil, 1), false)

	for i, v := range asyncapitest.Conforms(t, cases...) {
		if v.Valid != wants[i] {
			t.Errorf("%s: conforms = %v, want %v: %v\nschema %s\ninstance %s", labels[i], v.Valid, wants[i], v.Errors, cases[i].Schema, cases[i].Value)
		}
	}
}
