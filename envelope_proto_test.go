package eventkit_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
)

type attr = eventkitpb.Envelope_AttributeValue

func strAttr(s string) *attr {
	return &attr{Attr: &eventkitpb.Envelope_AttributeValue_CeString{CeString: s}}
}

// toEnvelope is the reference mapping of an Event onto the generated message,
// written independently of MarshalProto's hand-written encoder.
func toEnvelope(e eventkit.Event) *eventkitpb.Envelope {
	pb := &eventkitpb.Envelope{Id: e.ID, Source: e.Source, SpecVersion: "1.0", Type: e.Type,
		Attributes: map[string]*attr{}}
	if e.Subject != "" {
		pb.Attributes["subject"] = strAttr(e.Subject)
	}
	if e.DataVersion != "" {
		pb.Attributes["dataversion"] = strAttr(e.DataVersion)
	}
	if e.DataContentType != "" {
		pb.Attributes["datacontenttype"] = strAttr(e.DataContentType)
	}
	if e.DataSchema != "" {
		pb.Attributes["dataschema"] = &attr{Attr: &eventkitpb.Envelope_AttributeValue_CeUriRef{CeUriRef: e.DataSchema}}
	}
	if !e.Time.IsZero() {
		pb.Attributes["time"] = &attr{Attr: &eventkitpb.Envelope_AttributeValue_CeTimestamp{CeTimestamp: timestamppb.New(e.Time)}}
	}
	for k, v := range e.Extensions {
		pb.Attributes[k] = strAttr(v)
	}
	if e.Data != nil {
		ct := strings.ToLower(e.DataContentType)
		textual := strings.HasPrefix(ct, "text/") || strings.HasPrefix(ct, "application/json") ||
			strings.Contains(ct, "+json") || strings.HasPrefix(ct, "application/xml")
		if textual && utf8.Valid(e.Data) {
			pb.Data = &eventkitpb.Envelope_TextData{TextData: string(e.Data)}
		} else {
			pb.Data = &eventkitpb.Envelope_BinaryData{BinaryData: e.Data}
		}
	}
	return pb
}

// MarshalProto's encoder writes exactly what protobuf-go writes for the
// equivalent generated message (deterministic mode), and protobuf-go reads it
// back as that message.
func TestMarshalProtoMatchesGeneratedCode(t *testing.T) {
	t.Parallel()
	for name, e := range sampleEvents() {
		t.Run(name, func(t *testing.T) {
			got, err := eventkit.MarshalProto(e)
			if err != nil {
				t.Fatal(err)
			}
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(toEnvelope(e))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("MarshalProto differs from proto.Marshal:\n got %x\nwant %x", abbrev(got), abbrev(want))
			}
			var pb eventkitpb.Envelope
			if err := proto.Unmarshal(got, &pb); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&pb, toEnvelope(e)) {
				t.Fatalf("decoded message differs: %v", &pb)
			}
			// AppendProto appends.
			pre := []byte("prefix")
			app, err := eventkit.AppendProto(pre, e)
			if err != nil || !bytes.Equal(app[:6], pre) || !bytes.Equal(app[6:], got) {
				t.Fatalf("AppendProto: %v", err)
			}
		})
	}
}

// What another CloudEvents SDK may write: attribute values of every type,
// time as a string, proto_data, text_data.
func TestDecodeProtoForeign(t *testing.T) {
	t.Parallel()
	order := &examplepb.OrderCreated{OrderId: "o-1", Quantity: 3}
	anyOrder, err := anypb.New(order)
	if err != nil {
		t.Fatal(err)
	}
	pb := &eventkitpb.Envelope{Id: "id-1", Source: "//sdk", SpecVersion: "1.0", Type: "order.created",
		Attributes: map[string]*attr{
			"time":                    strAttr("2026-03-04T05:06:07.5+02:00"),
			"subject":                 {Attr: &eventkitpb.Envelope_AttributeValue_CeUri{CeUri: "urn:order:1"}},
			"flag":                    {Attr: &eventkitpb.Envelope_AttributeValue_CeBoolean{CeBoolean: true}},
			"count":                   {Attr: &eventkitpb.Envelope_AttributeValue_CeInteger{CeInteger: -42}},
			"blob":                    {Attr: &eventkitpb.Envelope_AttributeValue_CeBytes{CeBytes: []byte{0xff, 0}}},
			"when":                    {Attr: &eventkitpb.Envelope_AttributeValue_CeTimestamp{CeTimestamp: &timestamppb.Timestamp{Seconds: 1, Nanos: 5}}},
			"ref":                     {Attr: &eventkitpb.Envelope_AttributeValue_CeUriRef{CeUriRef: "../x"}},
			"Not_Valid":               strAttr("ignored"),
			"waytoolongextensionname": strAttr("ignored"),
		},
		Data: &eventkitpb.Envelope_ProtoData{ProtoData: anyOrder},
	}
	b, err := proto.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	e, err := eventkit.DecodeProto(b)
	if err != nil {
		t.Fatal(err)
	}
	want := eventkit.Event{ID: "id-1", Source: "//sdk", Type: "order.created", Subject: "urn:order:1",
		Time:            time.Date(2026, 3, 4, 3, 6, 7, 5e8, time.UTC),
		DataContentType: "application/protobuf", DataSchema: "type.googleapis.com/eventkit.example.v1.OrderCreated",
		Data:       anyOrder.Value,
		Extensions: map[string]string{"flag": "true", "count": "-42", "blob": "/wA=", "when": "1970-01-01T00:00:01.000000005Z", "ref": "../x"},
	}
	if d := diffEvents(want, e, true); d != "" {
		t.Fatal(d)
	}
	var got examplepb.OrderCreated
	if err := proto.Unmarshal(e.Data, &got); err != nil || !proto.Equal(&got, order) {
		t.Fatalf("payload: %v %v", err, &got)
	}

	pb.Data = &eventkitpb.Envelope_TextData{TextData: "héllo"}
	pb.Attributes = nil
	b, _ = proto.Marshal(pb)
	e, err = eventkit.DecodeProto(b)
	if err != nil || string(e.Data) != "héllo" || !e.Time.IsZero() {
		t.Fatalf("text_data: %v %+v", err, e)
	}
}

func TestDecodeProtoErrors(t *testing.T) {
	t.Parallel()
	valid := func() *eventkitpb.Envelope { return toEnvelope(fullEvent()) }
	marshal := func(pb *eventkitpb.Envelope) []byte {
		b, err := proto.Marshal(pb)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := map[string][]byte{
		"garbage":          []byte("\xff\xff\xff\xff"),
		"truncated":        marshal(valid())[:20],
		"empty":            nil,
		"json":             []byte(`{"specversion":"1.0","id":"a","source":"s","type":"t"}`),
		"invalid utf-8 id": append([]byte{0x0a, 2, 0xff, 0xfe}, marshal(valid())[2+len(fullEvent().ID):]...),
	}
	for name, mut := range map[string]func(*eventkitpb.Envelope){
		"no specversion":  func(pb *eventkitpb.Envelope) { pb.SpecVersion = "" },
		"specversion 0.3": func(pb *eventkitpb.Envelope) { pb.SpecVersion = "0.3" },
		"no id":           func(pb *eventkitpb.Envelope) { pb.Id = "" },
		"no source":       func(pb *eventkitpb.Envelope) { pb.Source = "" },
		"no type":         func(pb *eventkitpb.Envelope) { pb.Type = "" },
		"time is a bool": func(pb *eventkitpb.Envelope) {
			pb.Attributes["time"] = &attr{Attr: &eventkitpb.Envelope_AttributeValue_CeBoolean{}}
		},
		"time bad string": func(pb *eventkitpb.Envelope) { pb.Attributes["time"] = strAttr("noon") },
		"time year 0":     func(pb *eventkitpb.Envelope) { pb.Attributes["time"] = strAttr("0000-01-01T00:00:00Z") },
		"time bad nanos":  func(pb *eventkitpb.Envelope) { pb.Attributes["time"].GetCeTimestamp().Nanos = 2e9 },
		"time year 10000": func(pb *eventkitpb.Envelope) { pb.Attributes["time"].GetCeTimestamp().Seconds = 1e12 },
		"attribute empty": func(pb *eventkitpb.Envelope) { pb.Attributes["subject"] = &attr{} },
		"extension empty": func(pb *eventkitpb.Envelope) { pb.Attributes["traceparent"] = nil },
		"bad ts extension": func(pb *eventkitpb.Envelope) {
			pb.Attributes["when"] = &attr{Attr: &eventkitpb.Envelope_AttributeValue_CeTimestamp{CeTimestamp: &timestamppb.Timestamp{Nanos: -1}}}
		},
	} {
		pb := valid()
		mut(pb)
		cases[name] = marshal(pb)
	}
	for name, b := range cases {
		_, err := eventkit.DecodeProto(b)
		var de *eventkit.DecodeError
		if !errors.As(err, &de) || !errors.Is(err, eventkit.ErrDecode) || !eventkit.IsPermanent(err) {
			t.Errorf("%s: err = %v, want a *DecodeError", name, err)
			continue
		}
		if !bytes.Equal(de.Raw, b) || de.Format != "cloudevents+protobuf" {
			t.Errorf("%s: DecodeError does not keep the input: %q %q", name, de.Format, abbrev(de.Raw))
		}
	}
}

func TestMarshalProtoRejectsWhatProtobufCannotCarry(t *testing.T) {
	t.Parallel()
	for name, mut := range map[string]func(*eventkit.Event){
		"subject":                 func(e *eventkit.Event) { e.Subject = "\xff" },
		"id":                      func(e *eventkit.Event) { e.ID = "a\xc3" },
		"extensions[traceparent]": func(e *eventkit.Event) { e.Extensions["traceparent"] = "\xff" },
		"time":                    func(e *eventkit.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
	} {
		e := fullEvent()
		mut(&e)
		_, err := eventkit.MarshalProto(e)
		var ve *eventkit.ValidationError
		if !errors.As(err, &ve) || ve.Field != name || !errors.Is(err, eventkit.ErrInvalidEvent) {
			t.Errorf("%s: err = %v, want a *ValidationError for that field", name, err)
		}
	}
	// A time before 1970 is fine.
	e := fullEvent()
	e.Time = time.Date(1901, 2, 3, 4, 5, 6, 7, time.UTC)
	b, err := eventkit.MarshalProto(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eventkit.DecodeProto(b)
	if err != nil || !got.Time.Equal(e.Time) {
		t.Fatalf("pre-1970 time: %v %v", err, got.Time)
	}
}
