package eventkit_test

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb"
)

// checkDecodeErr fails unless err is a *DecodeError keeping raw.
func checkDecodeErr(t *testing.T, err error, raw []byte) {
	t.Helper()
	var de *eventkit.DecodeError
	if !errors.As(err, &de) || !errors.Is(err, eventkit.ErrDecode) || !eventkit.IsPermanent(err) {
		t.Fatalf("error is not a *DecodeError: %T %v", err, err)
	}
	if string(de.Raw) != string(raw) {
		t.Fatalf("DecodeError.Raw does not keep the input")
	}
}

func FuzzDecodeStructured(f *testing.F) {
	for _, e := range sampleEvents() {
		if len(e.Data) > 4096 {
			continue
		}
		b, _ := e.MarshalJSON()
		f.Add(b)
	}
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","datacontenttype":"text/plain","data":"hi","n":1,"b":true}`))
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2026-01-02T03:04:05.999+14:00","data_base64":"AA=="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := eventkit.DecodeStructured(b)
		if err != nil {
			checkDecodeErr(t, err, b)
			return
		}
		again, err := eventkit.DecodeStructured(e.AppendJSON(nil))
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if d := diffEvents(e, again, true); d != "" {
			t.Fatal(d)
		}
	})
}

// FuzzBindingDecode feeds arbitrary headers (one "key: value" per line) and
// body to each binding's decoder.
func FuzzBindingDecode(f *testing.F) {
	bindings := []eventkit.Binding{eventkit.NATSBinding, eventkit.KafkaBinding, eventkit.AMQPBinding, eventkit.AMQPUnderscoreBinding}
	for _, e := range sampleEvents() {
		if len(e.Data) > 4096 {
			continue
		}
		for i, b := range bindings {
			var sb strings.Builder
			b.Headers(e, func(k, v string) { sb.WriteString(k + ": " + v + "\n") })
			ct := ""
			if b.ContentTypeKey == "" {
				ct = e.DataContentType
			}
			f.Add(uint8(i), sb.String(), ct, e.Data)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, headerText, contentType string, body []byte) {
		b := bindings[int(which)%len(bindings)]
		h := map[string]string{}
		for _, line := range strings.Split(headerText, "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok {
				h[k] = v
			}
		}
		if b.ContentTypeKey != "" {
			contentType = "" // as the adapters pass it: only a protocol without the header has its own field
		}
		e, err := b.Decode(eventkit.MapHeaders(h), contentType, body)
		if err != nil {
			checkDecodeErr(t, err, body)
			return
		}
		again, h2, err := bindingRoundTrip(b, e)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v (headers %q)", err, h2)
		}
		if d := diffEvents(e, again, true); d != "" {
			t.Fatal(d)
		}
	})
}

func FuzzDecodeProto(f *testing.F) {
	for _, e := range sampleEvents() {
		if len(e.Data) > 4096 {
			continue
		}
		b, err := eventkit.MarshalProto(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := eventkit.DecodeProto(b)
		// The hand-written wire decoder agrees with protobuf-go's
		// proto.Unmarshal followed by FromProto.
		var pb eventkitpb.Envelope
		refErr := proto.Unmarshal(b, &pb)
		var ref eventkit.Event
		if refErr == nil {
			ref, refErr = eventkit.FromProto(&pb)
		}
		if (err == nil) != (refErr == nil) {
			t.Fatalf("DecodeProto err = %v, proto.Unmarshal+FromProto err = %v", err, refErr)
		}
		if err != nil {
			checkDecodeErr(t, err, b)
			return
		}
		if d := diffEvents(ref, e, true); d != "" {
			t.Fatalf("DecodeProto and proto.Unmarshal+FromProto differ: %s", d)
		}
		enc, err := eventkit.MarshalProto(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		again, err := eventkit.DecodeProto(enc)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if d := diffEvents(e, again, true); d != "" {
			t.Fatal(d)
		}
	})
}

// FuzzRegistryDecode: whatever the payload, type or version, the registry
// returns a value or a *DecodeError, never panics.
func FuzzRegistryDecode(f *testing.F) {
	r := newTestRegistry(f)
	f.Add("order.created", "1", "application/json", []byte(`{"order_id":"o","total_cents":5}`))
	f.Add("order.created", "2", "", []byte(`{"order_id":"o","currency":"EUR"}`))
	f.Add("order.shipped", "1", "application/json", []byte(`null`))
	f.Add("shop.order.created", "1", "application/protobuf", []byte{0x0a, 0x01, 'o', 0x28, 0x02})
	f.Fuzz(func(t *testing.T, typ, version, ct string, data []byte) {
		ev := eventkit.Event{ID: "x", Source: "s", Type: typ, DataVersion: version, DataContentType: ct, Data: data}
		if _, err := r.Decode(ev); err != nil {
			checkDecodeErr(t, err, data)
		}
	})
}

// FuzzBindingDecodeTyped feeds typed header values (as an AMQP table holds
// them) to DecodeTyped: it must never panic, fail only with a *DecodeError,
// and agree with Decode on the canonical strings.
func FuzzBindingDecodeTyped(f *testing.F) {
	f.Add("cloudEvents:specversion", "1.0", "cloudEvents_id", "a", int64(1795944615123), true, int64(-3), []byte("s"))
	f.Add("cloudEvents_time", "x", "cloudEvents:id", "", int64(-1<<62), false, int64(1<<40), []byte(nil))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, ms int64, flag bool, n int64, raw []byte) {
		h := map[string]any{
			"cloudEvents:specversion": "1.0", "cloudEvents_source": raw, "cloudEvents:type": "t", "cloudEvents:id": "i",
			"cloudEvents:time": time.UnixMilli(ms), "cloudEvents:flag": flag, "cloudEvents_n": int32(n), "cloudEvents:m": n,
			k1: v1, k2: v2,
		}
		e, err := eventkit.AMQPBinding.DecodeTyped(maps.All(h), "application/json", raw)
		if err != nil {
			checkDecodeErr(t, err, raw)
			return
		}
		again, h2, err := bindingRoundTrip(eventkit.AMQPBinding, e)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v (headers %q)", err, h2)
		}
		if d := diffEvents(e, again, true); d != "" {
			t.Fatal(d)
		}
	})
}
