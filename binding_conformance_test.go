package eventkit_test

import (
	"errors"
	"maps"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb"
)

func natsHeaders(extra map[string]string) map[string]string {
	h := map[string]string{"ce-specversion": "1.0", "ce-id": "a", "ce-source": "s", "ce-type": "t"}
	maps.Copy(h, extra)
	return h
}

// NATS binding (draft 1.0.3) 3.1.3.2: values are percent-encoded, with the
// spec's own example; datacontenttype is the ce-datacontenttype header.
func TestNATSBindingPercentEncodes(t *testing.T) {
	t.Parallel()
	e := eventkit.Event{ID: "id 1", Source: "/s", Type: "t", Subject: "Euro € 😀", DataContentType: "text/plain; charset=utf-8",
		Extensions: map[string]string{"note": `50% "off"`}}
	h := headerMap(eventkit.NATSBinding, e)
	for k, want := range map[string]string{
		"ce-subject":         "Euro%20%E2%82%AC%20%F0%9F%98%80",
		"ce-id":              "id%201",
		"ce-source":          "/s",
		"ce-note":            "50%25%20%22off%22",
		"ce-datacontenttype": "text/plain;%20charset=utf-8",
	} {
		if h[k] != want {
			t.Errorf("%s = %q, want %q", k, h[k], want)
		}
	}
	if _, ok := h["content-type"]; ok {
		t.Errorf("content-type written: %q", h)
	}
	got, h, err := bindingRoundTrip(eventkit.NATSBinding, e)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffEvents(e, got, true); d != "" {
		t.Fatalf("%s\nheaders %q", d, h)
	}
	// Kafka headers are bytes: no encoding there.
	if k := headerMap(eventkit.KafkaBinding, e); k["ce_subject"] != e.Subject {
		t.Fatalf("kafka subject %q", k["ce_subject"])
	}
}

// The receiving side of 3.1.3.2, and what the Go SDK writes (raw UTF-8,
// "content-type").
func TestNATSBindingDecodesValues(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		h       map[string]string
		subject string
		ct      string
	}{
		"lower-case hex":        {map[string]string{"ce-subject": "caf%c3%a9"}, "café", ""},
		"needless encoding":     {map[string]string{"ce-subject": "%41b"}, "Ab", ""},
		"double-quoted (old)":   {map[string]string{"ce-subject": `"a \"b\" c"`}, `a "b" c`, ""},
		"raw UTF-8 (Go SDK)":    {map[string]string{"ce-subject": "café 100%"}, "café 100%", ""},
		"lone percent":          {map[string]string{"ce-subject": "100%"}, "100%", ""},
		"content-type (Go SDK)": {map[string]string{"content-type": "application/json"}, "", "application/json"},
		"ce-datacontenttype":    {map[string]string{"ce-datacontenttype": "application/json"}, "", "application/json"},
		"the attribute wins":    {map[string]string{"ce-datacontenttype": "text/plain", "content-type": "application/json"}, "", "text/plain"},
		"encoded content type":  {map[string]string{"Content-Type": "text/plain;%20charset=utf-8"}, "", "text/plain; charset=utf-8"},
	} {
		e, err := eventkit.NATSBinding.Decode(eventkit.MapHeaders(natsHeaders(tc.h)), "", nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if e.Subject != tc.subject || e.DataContentType != tc.ct {
			t.Errorf("%s: subject %q, content type %q", name, e.Subject, e.DataContentType)
		}
	}
	// "%C0%A0" is an overlong encoding of U+0020 and MUST be rejected.
	_, err := eventkit.NATSBinding.Decode(eventkit.MapHeaders(natsHeaders(map[string]string{"ce-subject": "%C0%A0"})), "", []byte("x"))
	var de *eventkit.DecodeError
	if !errors.As(err, &de) || string(de.Raw) != "x" {
		t.Fatalf("overlong encoding: err = %v", err)
	}
}

// AMQP binding: both prefixes are read, the binding's own one winning, and
// the default writes "cloudEvents:" (released 1.0.2).
func TestAMQPBindingPrefixes(t *testing.T) {
	t.Parallel()
	colon := map[string]string{
		"cloudEvents:specversion": "1.0", "cloudEvents:id": "a", "cloudEvents:source": "s", "cloudEvents:type": "t",
		"cloudEvents:subject": "colon", "cloudEvents:ext": "colon",
	}
	underscore := map[string]string{
		"cloudEvents_specversion": "1.0", "cloudEvents_id": "a", "cloudEvents_source": "s", "cloudEvents_type": "t",
		"cloudEvents_subject": "underscore", "cloudEvents_ext": "underscore",
	}
	both := maps.Clone(colon)
	maps.Copy(both, underscore)
	for _, tc := range []struct {
		b    eventkit.Binding
		h    map[string]string
		want string
	}{
		{eventkit.AMQPBinding, colon, "colon"},
		{eventkit.AMQPBinding, underscore, "underscore"},
		{eventkit.AMQPBinding, both, "colon"},
		{eventkit.AMQPUnderscoreBinding, colon, "colon"},
		{eventkit.AMQPUnderscoreBinding, underscore, "underscore"},
		{eventkit.AMQPUnderscoreBinding, both, "underscore"},
	} {
		for range 20 { // map order varies: the winner must not
			e, err := tc.b.Decode(eventkit.MapHeaders(tc.h), "", nil)
			if err != nil {
				t.Fatalf("%s %d headers: %v", tc.b.Prefix, len(tc.h), err)
			}
			if e.Subject != tc.want || e.Extensions["ext"] != tc.want {
				t.Fatalf("%s %d headers: subject %q ext %q, want %q", tc.b.Prefix, len(tc.h), e.Subject, e.Extensions["ext"], tc.want)
			}
		}
	}
}

// AMQP binding 3.1.3.2: consumers MUST accept native AMQP types; an
// amqp091-go Table carries a timestamp as time.Time, booleans and integers
// as Go values.
func TestBindingDecodeTyped(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("x", 3600))
	h := map[string]any{
		"cloudEvents:specversion": "1.0", "cloudEvents:id": []byte("a"), "cloudEvents:source": "s", "cloudEvents:type": "t",
		"cloudEvents:time": ts, "cloudEvents:flag": true, "cloudEvents:count": int32(-7), "cloudEvents:big": int64(1 << 40),
		"cloudEvents:small": uint8(3), "cloudEvents:none": nil,
	}
	e, err := eventkit.AMQPBinding.DecodeTyped(maps.All(h), "application/json", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != "a" || !e.Time.Equal(ts) || e.DataContentType != "application/json" {
		t.Fatalf("decoded %+v", e)
	}
	want := map[string]string{"flag": "true", "count": "-7", "big": "1099511627776", "small": "3"}
	if !maps.Equal(e.Extensions, want) {
		t.Fatalf("extensions %q, want %q", e.Extensions, want)
	}
}

// Protobuf format: dataschema is a ce_uri (the core spec's URI type); text
// payloads are text_data (the format's MUST), JSON and XML binary_data (the
// bytes the Go SDK reads back unchanged); every member of the attribute
// value is still read.
func TestProtoDataAndSchemaMembers(t *testing.T) {
	t.Parallel()
	for ct, want := range map[string]string{
		"application/json": "binary_data", "application/cloudevents+json": "binary_data", "text/json": "binary_data",
		"application/xml": "binary_data", "text/xml": "binary_data", "image/png": "binary_data", "": "binary_data",
		"text/plain": "text_data", "text/plain; charset=utf-8": "text_data", "text/csv": "text_data",
	} {
		e := eventkit.Event{ID: "a", Source: "s", Type: "t", DataContentType: ct, DataSchema: "https://example.com/s.json", Data: []byte(`{"a":1}`)}
		b, err := eventkit.MarshalProto(e)
		if err != nil {
			t.Fatal(err)
		}
		pb := &eventkitpb.Envelope{}
		if err := proto.Unmarshal(b, pb); err != nil {
			t.Fatal(err)
		}
		got := "binary_data"
		if _, ok := pb.Data.(*eventkitpb.Envelope_TextData); ok {
			got = "text_data"
		}
		if got != want {
			t.Errorf("%q: %s, want %s", ct, got, want)
		}
		if pb.Attributes["dataschema"].GetCeUri() != e.DataSchema {
			t.Errorf("dataschema is %v, want a ce_uri", pb.Attributes["dataschema"])
		}
		back, err := eventkit.DecodeProto(b)
		if err != nil || string(back.Data) != string(e.Data) || back.DataSchema != e.DataSchema {
			t.Errorf("%q: decoded %+v %v", ct, back, err)
		}
	}
	for name, v := range map[string]*eventkitpb.Envelope_AttributeValue{
		"ce_uri":     {Attr: &eventkitpb.Envelope_AttributeValue_CeUri{CeUri: "https://x/s"}},
		"ce_uri_ref": {Attr: &eventkitpb.Envelope_AttributeValue_CeUriRef{CeUriRef: "https://x/s"}},
		"ce_string":  {Attr: &eventkitpb.Envelope_AttributeValue_CeString{CeString: "https://x/s"}},
	} {
		pb := &eventkitpb.Envelope{Id: "a", Source: "s", SpecVersion: "1.0", Type: "t",
			Attributes: map[string]*eventkitpb.Envelope_AttributeValue{"dataschema": v}}
		b, _ := proto.Marshal(pb)
		e, err := eventkit.DecodeProto(b)
		if err != nil || e.DataSchema != "https://x/s" {
			t.Errorf("dataschema as %s: %q %v", name, e.DataSchema, err)
		}
	}
}
