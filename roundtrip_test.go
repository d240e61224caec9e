package eventkit_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/eventkit/eventkit"
)

// Every envelope field survives each encoding unchanged.
func TestRoundTripStructuredJSON(t *testing.T) {
	t.Parallel()
	for name, e := range sampleEvents() {
		t.Run(name, func(t *testing.T) {
			b, err := e.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(b) && json.Valid(e.Data) {
				t.Fatalf("MarshalJSON wrote invalid JSON: %s", abbrev(b))
			}
			got, err := eventkit.DecodeStructured(b)
			if err != nil {
				t.Fatalf("DecodeStructured: %v\n%s", err, abbrev(b))
			}
			if d := diffEvents(e, got, true); d != "" {
				t.Fatalf("%s\njson: %s", d, abbrev(b))
			}
			// Through encoding/json too (Event implements Marshaler/Unmarshaler).
			wrapped, err := json.Marshal(struct{ E eventkit.Event }{e})
			if err != nil {
				t.Fatal(err)
			}
			var back struct{ E eventkit.Event }
			if err := json.Unmarshal(wrapped, &back); err != nil {
				t.Fatal(err)
			}
			if d := diffEvents(e, back.E, false); d != "" {
				t.Fatal("via encoding/json:", d)
			}
		})
	}
}

func TestRoundTripBindings(t *testing.T) {
	t.Parallel()
	for _, b := range []eventkit.Binding{eventkit.NATSBinding, eventkit.KafkaBinding, eventkit.AMQPBinding, eventkit.AMQPUnderscoreBinding, eventkit.RedisBinding,
		{Name: "custom", Prefix: "x-ce-", ContentTypeKey: "x-content-type"}} {
		for name, e := range sampleEvents() {
			t.Run(b.Name+"/"+name, func(t *testing.T) {
				got, h, err := bindingRoundTrip(b, e)
				if err != nil {
					t.Fatal(err)
				}
				if d := diffEvents(e, got, true); d != "" {
					t.Fatalf("%s\nheaders: %q", d, h)
				}
				for k := range h {
					if k != b.ContentTypeKey && !strings.HasPrefix(k, b.Prefix) { // never AltPrefix
						t.Errorf("header %q has neither the prefix %q nor is the content type", k, b.Prefix)
					}
				}
				if n := b.HeaderCount(e); len(h) > n {
					t.Errorf("HeaderCount = %d, Headers set %d", n, len(h))
				}
			})
		}
	}
}

func TestRoundTripProto(t *testing.T) {
	t.Parallel()
	for name, e := range sampleEvents() {
		t.Run(name, func(t *testing.T) {
			b, err := eventkit.MarshalProto(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := eventkit.DecodeProto(b)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffEvents(e, got, true); d != "" {
				t.Fatal(d)
			}
		})
	}
}

// The headers the bindings write are the ones the CloudEvents protocol
// bindings specify.
func TestBindingHeaderNames(t *testing.T) {
	t.Parallel()
	e := fullEvent()
	for _, tc := range []struct {
		b    eventkit.Binding
		want []string
		ct   string
	}{
		{eventkit.NATSBinding, []string{"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "ce-dataversion", "ce-dataschema", "ce-traceparent"}, "ce-datacontenttype"},
		{eventkit.KafkaBinding, []string{"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "ce_dataversion", "ce_dataschema", "ce_traceparent"}, "content-type"},
		{eventkit.AMQPBinding, []string{"cloudEvents:specversion", "cloudEvents:id", "cloudEvents:source", "cloudEvents:type", "cloudEvents:time", "cloudEvents:subject", "cloudEvents:dataversion", "cloudEvents:dataschema", "cloudEvents:traceparent"}, ""},
		{eventkit.AMQPUnderscoreBinding, []string{"cloudEvents_specversion", "cloudEvents_id", "cloudEvents_source", "cloudEvents_type", "cloudEvents_time", "cloudEvents_subject", "cloudEvents_dataversion", "cloudEvents_dataschema", "cloudEvents_traceparent"}, ""},
	} {
		h := headerMap(tc.b, e)
		for _, k := range tc.want {
			if _, ok := h[k]; !ok {
				t.Errorf("%s: header %q missing from %q", tc.b.Name, k, h)
			}
		}
		if tc.ct != "" && h[tc.ct] != e.DataContentType {
			t.Errorf("%s: %s = %q", tc.b.Name, tc.ct, h[tc.ct])
		}
		if got := h[tc.b.Prefix+"time"]; got != "2026-11-29T09:30:15.123456789Z" {
			t.Errorf("%s: time header %q", tc.b.Name, got)
		}
		if got := h[tc.b.Prefix+"specversion"]; got != "1.0" {
			t.Errorf("%s: specversion %q", tc.b.Name, got)
		}
	}
}

// An extension named like an attribute must not override it in the headers
// (Validate rejects such events, but Headers must not be fooled either).
func TestBindingHeadersIgnoreReservedExtensions(t *testing.T) {
	t.Parallel()
	e := fullEvent()
	e.Extensions = map[string]string{"id": "evil", "specversion": "0.3", "subject": "other", "type": "x", "time": "never"}
	for _, b := range []eventkit.Binding{eventkit.NATSBinding, eventkit.KafkaBinding, eventkit.AMQPBinding, eventkit.AMQPUnderscoreBinding} {
		got, h, err := bindingRoundTrip(b, e)
		if err != nil {
			t.Fatalf("%s: %v (headers %q)", b.Name, err, h)
		}
		if got.ID != e.ID || got.Subject != e.Subject || got.Type != e.Type || !got.Time.Equal(e.Time) {
			t.Fatalf("%s: an extension overrode an attribute: %+v", b.Name, got)
		}
	}
}

// Binary-mode decoding: header names are case-insensitive, unrelated headers
// are ignored, ce-datacontenttype works, and missing or bad attributes give a
// *DecodeError keeping body and headers.
func TestBindingDecode(t *testing.T) {
	t.Parallel()
	body := []byte(`{"x":1}`)
	h := map[string]string{
		"CE-SpecVersion": "1.0", "Ce-Id": "a", "ce-source": "s", "ce-type": "t", "ce-time": "2026-01-02T03:04:05+01:00",
		"Content-Type": "application/json", "Nats-Msg-Id": "a", "x-other": "1", "ce-Bad_Name": "dropped", "ce-": "empty name",
	}
	e, err := eventkit.NATSBinding.Decode(eventkit.MapHeaders(h), "", body)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != "a" || e.Source != "s" || e.Type != "t" || e.DataContentType != "application/json" || string(e.Data) != string(body) {
		t.Fatalf("decoded %+v", e)
	}
	if e.Time.Format(eventkit.TimeFormat) != "2026-01-02T02:04:05Z" && !e.Time.Equal(e.Time.UTC()) {
		t.Fatalf("time %v", e.Time)
	}
	if len(e.Extensions) != 0 {
		t.Fatalf("extensions %q", e.Extensions)
	}

	amqp, err := eventkit.AMQPBinding.Decode(eventkit.MapHeaders(map[string]string{
		"cloudEvents_specversion": "1.0", "cloudEvents_id": "a", "cloudEvents_source": "s", "cloudEvents_type": "t",
		"cloudEvents_datacontenttype": "text/plain",
	}), "application/json", body)
	if err != nil || amqp.DataContentType != "text/plain" {
		t.Fatalf("amqp: %v %q", err, amqp.DataContentType)
	}

	for name, mut := range map[string]func(map[string]string){
		"no specversion":  func(m map[string]string) { delete(m, "ce-specversion") },
		"specversion 0.3": func(m map[string]string) { m["ce-specversion"] = "0.3" },
		"no id":           func(m map[string]string) { delete(m, "ce-id") },
		"no source":       func(m map[string]string) { delete(m, "ce-source") },
		"no type":         func(m map[string]string) { delete(m, "ce-type") },
		"bad time":        func(m map[string]string) { m["ce-time"] = "yesterday" },
	} {
		m := map[string]string{"ce-specversion": "1.0", "ce-id": "a", "ce-source": "s", "ce-type": "t", "ce-time": "2026-01-02T03:04:05Z"}
		mut(m)
		_, err := eventkit.NATSBinding.Decode(eventkit.MapHeaders(m), "", body)
		var de *eventkit.DecodeError
		if !errors.As(err, &de) || !errors.Is(err, eventkit.ErrDecode) || !eventkit.IsPermanent(err) {
			t.Fatalf("%s: err = %v, want a *DecodeError", name, err)
		}
		if string(de.Raw) != string(body) || len(de.Headers) != len(m) {
			t.Fatalf("%s: DecodeError lost the message: %q %q", name, de.Raw, de.Headers)
		}
	}
}
