package eventkit_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
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
		pb.Attributes["dataschema"] = &attr{Attr: &eventkitpb.Envelope_AttributeValue_CeUri{CeUri: e.DataSchema}}
	}
	if !e.Time.IsZero() {
		pb.Attributes["time"] = &attr{Attr: &eventkitpb.Envelope_AttributeValue_CeTimestamp{CeTimestamp: timestamppb.New(e.Time)}}
	}
	for k, v := range e.Extensions {
		pb.Attributes[k] = strAttr(v)
	}
	if e.Data != nil {
		// text/* is text_data; JSON and XML (serializer output) binary_data.
		ct, _, _ := strings.Cut(strings.ToLower(e.DataContentType), ";")
		ct = strings.TrimSpace(ct)
		textual := strings.HasPrefix(ct, "text/") && ct != "text/json" && ct != "text/xml" &&
			!strings.HasSuffix(ct, "+json") && !strings.HasSuffix(ct, "+xml")
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
			// ToProto builds the same message; FromProto reads it back.
			viaTo, err := eventkit.ToProto(e)
			if err != nil || !proto.Equal(viaTo, toEnvelope(e)) {
				t.Fatalf("ToProto: %v %v", err, viaTo)
			}
			back, err := eventkit.FromProto(viaTo)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffEvents(e, back, true); d != "" {
				t.Fatal("FromProto:", d)
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

// Hand-made wire inputs for the corners of protobuf's rules, where the
// hand-written decoder must agree with proto.Unmarshal + FromProto.
func TestDecodeProtoWireCorners(t *testing.T) {
	t.Parallel()
	tag := protowire.AppendTag
	str := func(b []byte, n protowire.Number, s string) []byte {
		return protowire.AppendString(tag(b, n, protowire.BytesType), s)
	}
	msg := func(b []byte, n protowire.Number, m []byte) []byte {
		return protowire.AppendBytes(tag(b, n, protowire.BytesType), m)
	}
	varint := func(b []byte, n protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(b, n, protowire.VarintType), v)
	}
	entry := func(key string, value ...[]byte) []byte {
		e := str(nil, 1, key)
		for _, v := range value {
			e = msg(e, 2, v)
		}
		return e
	}
	ts := func(sec, nsec uint64) []byte {
		var b []byte
		if sec != 0 {
			b = varint(b, 1, sec)
		}
		if nsec != 0 {
			b = varint(b, 2, nsec)
		}
		return b
	}
	head := func() []byte {
		b := str(nil, 1, "id")
		b = str(b, 2, "src")
		b = str(b, 3, "1.0")
		return str(b, 4, "t")
	}
	cases := map[string][]byte{
		"duplicate key, first invalid":  msg(msg(head(), 5, entry("time", str(nil, 3, "bad"))), 5, entry("time", msg(nil, 7, ts(100, 5)))),
		"duplicate key, last invalid":   msg(msg(head(), 5, entry("time", msg(nil, 7, ts(100, 5)))), 5, entry("time", str(nil, 3, "bad"))),
		"value messages merge":          msg(head(), 5, entry("time", msg(nil, 7, ts(100, 0)), msg(nil, 7, ts(0, 7)))),
		"value oneof replaced":          msg(head(), 5, entry("time", msg(nil, 7, ts(100, 0)), str(nil, 3, "2026-01-01T00:00:00Z"))),
		"timestamp then timestamp":      msg(head(), 5, entry("time", append(msg(nil, 7, ts(100, 9)), msg(nil, 7, ts(200, 0))...))),
		"timestamp reset by other kind": msg(head(), 5, entry("time", append(append(msg(nil, 7, ts(100, 9)), str(nil, 3, "x")...), msg(nil, 7, ts(200, 0))...))),
		"entry key twice":               msg(head(), 5, append(str(nil, 1, "subject"), entry("traceparent", str(nil, 3, "v"))...)),
		"entry without value":           msg(head(), 5, str(nil, 1, "subject")),
		"entry without key":             msg(head(), 5, msg(nil, 2, str(nil, 3, "v"))),
		"empty value":                   msg(head(), 5, entry("abc", nil)),
		"wrong wire type for id":        varint(head(), 1, 5),
		"wrong wire type for data":      varint(head(), 6, 5),
		"wrong wire type in value":      msg(head(), 5, entry("abc", varint(nil, 3, 1))),
		"bool and int":                  msg(msg(head(), 5, entry("b", varint(nil, 1, 2))), 5, entry("i", varint(nil, 2, 1<<40|5))),
		"negative int":                  msg(head(), 5, entry("i", varint(nil, 2, uint64(1<<64-3)))),
		"unknown fields everywhere":     varint(msg(msg(head(), 5, append(varint(entry("abc", varint(str(nil, 3, "v"), 99, 1)), 9, 1), protowire.AppendFixed32(tag(nil, 3, protowire.Fixed32Type), 1)...)), 99, nil), 1000, 7),
		"group unknown field":           append(tag(tag(head(), 50, protowire.StartGroupType), 50, protowire.EndGroupType), str(nil, 4, "t2")...),
		"stray end group":               tag(head(), 50, protowire.EndGroupType),
		"mismatched group":              tag(tag(head(), 50, protowire.StartGroupType), 51, protowire.EndGroupType),
		"field number 0":                varint(head(), 0, 1),
		"max field number":              varint(head(), protowire.MaxValidNumber, 1),
		// ConsumeTag takes numbers up to 2^31-1; proto.Unmarshal only up to
		// MaxValidNumber, at every level but inside a skipped group.
		"field number over max":              varint(head(), protowire.MaxValidNumber+1, 1),
		"field number 2^31-1":                varint(head(), 1<<31-1, 1),
		"field number over max in entry":     msg(head(), 5, varint(entry("abc", str(nil, 3, "v")), protowire.MaxValidNumber+1, 1)),
		"field number over max in value":     msg(head(), 5, entry("abc", varint(str(nil, 3, "v"), protowire.MaxValidNumber+1, 1))),
		"field number over max in timestamp": msg(head(), 5, entry("time", msg(nil, 7, varint(ts(100, 0), protowire.MaxValidNumber+1, 1)))),
		"field number over max in any":       msg(head(), 8, varint(msg(nil, 2, []byte{1}), protowire.MaxValidNumber+1, 1)),
		"field number over max in group":     tag(varint(tag(head(), 50, protowire.StartGroupType), protowire.MaxValidNumber+1, 1), 50, protowire.EndGroupType),
		"reserved wire type":                 append(head(), 0x0e),
		"data oneof: binary then text":       str(msg(head(), 6, []byte{0xff}), 7, "txt"),
		"data oneof: text then binary":       msg(str(head(), 7, "txt"), 6, []byte{0xff}),
		"proto_data merges":                  msg(msg(head(), 8, str(nil, 1, "type.googleapis.com/x")), 8, msg(nil, 2, []byte{1, 2})),
		"proto_data after binary":            msg(msg(msg(head(), 8, str(nil, 1, "u")), 6, []byte{9}), 8, msg(nil, 2, []byte{1})),
		"proto_data with datacontenttype":    msg(msg(head(), 8, msg(nil, 2, []byte{1})), 5, entry("datacontenttype", str(nil, 3, "application/x-foo"))),
		"invalid utf-8 text_data":            msg(head(), 7, []byte{0xff}),
		"invalid utf-8 overwritten id":       str(msg(head(), 1, []byte{0xff}), 1, "ok"),
		"invalid utf-8 map key":              msg(head(), 5, append(msg(nil, 1, []byte{0xff}), msg(nil, 2, str(nil, 3, "v"))...)),
		"invalid utf-8 ce_bytes is fine":     msg(head(), 5, entry("blob", msg(nil, 4, []byte{0xff}))),
		"invalid utf-8 ce_uri":               msg(head(), 5, entry("u", msg(nil, 5, []byte{0xff}))),
		"invalid utf-8 type_url":             msg(head(), 8, msg(nil, 1, []byte{0xff})),
		"invalid utf-8 unknown string":       msg(head(), 20, []byte{0xff}),
		"ignored attributes":                 msg(msg(msg(head(), 5, entry("id", str(nil, 3, "x"))), 5, entry("Upper", str(nil, 3, "x"))), 5, entry("data", str(nil, 3, "x"))),
		"ignored attribute with no value":    msg(head(), 5, entry("Upper", nil)),
		"truncated length":                   append(head(), 0x0a, 0x05, 'a'),
		"overlong varint":                    append(head(), 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
	}
	for name, b := range cases {
		got, err := eventkit.DecodeProto(b)
		var pb eventkitpb.Envelope
		refErr := proto.Unmarshal(b, &pb)
		var ref eventkit.Event
		if refErr == nil {
			ref, refErr = eventkit.FromProto(&pb)
		}
		if (err == nil) != (refErr == nil) {
			t.Errorf("%s: DecodeProto err = %v, reference err = %v", name, err, refErr)
			continue
		}
		if err != nil {
			checkDecodeErr(t, err, b)
			continue
		}
		if d := diffEvents(ref, got, true); d != "" {
			t.Errorf("%s: %s", name, d)
		}
		t.Logf("%s: ok: time %v data %q ext %q", name, got.Time, got.Data, got.Extensions)
	}
}
