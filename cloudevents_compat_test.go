package eventkit_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	_ "google.golang.org/protobuf/types/known/anypb" // registers google/protobuf/any.proto
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/eventkit/eventkit"
)

// officialCloudEvent builds, independently of eventkit's .proto, the message
// descriptor of the official CloudEvents protobuf format
// (cloudevents/spec cloudevents/formats/cloudevents.proto, package
// io.cloudevents.v1), so that the test can read eventkit's bytes the way
// another language's CloudEvents SDK does.
func officialCloudEvent(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	s := proto.String
	i := proto.Int32
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	rep := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	typ := func(t descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto_Type {
		return t.Enum()
	}
	const (
		str  = descriptorpb.FieldDescriptorProto_TYPE_STRING
		byt  = descriptorpb.FieldDescriptorProto_TYPE_BYTES
		msg  = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
		bol  = descriptorpb.FieldDescriptorProto_TYPE_BOOL
		i32  = descriptorpb.FieldDescriptorProto_TYPE_INT32
		none = -1
	)
	field := func(name string, num int32, ty descriptorpb.FieldDescriptorProto_Type, typeName string, oneof int32) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: s(name), Number: i(num), Label: opt, Type: typ(ty), JsonName: s(name)}
		if typeName != "" {
			f.TypeName = s(typeName)
		}
		if oneof != none {
			f.OneofIndex = i(oneof)
		}
		return f
	}
	attrs := field("attributes", 5, msg, ".io.cloudevents.v1.CloudEvent.AttributesEntry", none)
	attrs.Label = rep
	fd := &descriptorpb.FileDescriptorProto{
		Name: s("cloudevents_test.proto"), Package: s("io.cloudevents.v1"), Syntax: s("proto3"),
		Dependency: []string{"google/protobuf/any.proto", "google/protobuf/timestamp.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: s("CloudEvent"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("id", 1, str, "", none), field("source", 2, str, "", none),
				field("spec_version", 3, str, "", none), field("type", 4, str, "", none), attrs,
				field("binary_data", 6, byt, "", 0), field("text_data", 7, str, "", 0),
				field("proto_data", 8, msg, ".google.protobuf.Any", 0),
			},
			OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: s("data")}},
			NestedType: []*descriptorpb.DescriptorProto{
				{
					Name:    s("AttributesEntry"),
					Field:   []*descriptorpb.FieldDescriptorProto{field("key", 1, str, "", none), field("value", 2, msg, ".io.cloudevents.v1.CloudEvent.CloudEventAttributeValue", none)},
					Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				},
				{
					Name: s("CloudEventAttributeValue"),
					Field: []*descriptorpb.FieldDescriptorProto{
						field("ce_boolean", 1, bol, "", 0), field("ce_integer", 2, i32, "", 0),
						field("ce_string", 3, str, "", 0), field("ce_bytes", 4, byt, "", 0),
						field("ce_uri", 5, str, "", 0), field("ce_uri_ref", 6, str, "", 0),
						field("ce_timestamp", 7, msg, ".google.protobuf.Timestamp", 0),
					},
					OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: s("attr")}},
				},
			},
		}},
	}
	f, err := protodesc.NewFile(fd, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return f.Messages().ByName("CloudEvent")
}

// eventkit's protobuf bytes are a valid io.cloudevents.v1.CloudEvent, and an
// official CloudEvent built by another SDK decodes in eventkit.
func TestProtoIsOfficialCloudEvent(t *testing.T) {
	t.Parallel()
	md := officialCloudEvent(t)
	fields := md.Fields()
	e := fullEvent()
	b, err := eventkit.MarshalProto(e)
	if err != nil {
		t.Fatal(err)
	}
	m := dynamicpb.NewMessage(md)
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
	if len(m.GetUnknown()) != 0 {
		t.Fatalf("unknown fields for the official schema: %x", m.GetUnknown())
	}
	get := func(name string) protoreflect.Value { return m.Get(fields.ByName(protoreflect.Name(name))) }
	if get("id").String() != e.ID || get("source").String() != e.Source || get("spec_version").String() != "1.0" ||
		get("type").String() != e.Type || string(get("binary_data").Bytes()) != string(e.Data) {
		t.Fatalf("required attributes or data differ: %v", m)
	}
	attrs := get("attributes").Map()
	valueMD := md.Messages().ByName("CloudEventAttributeValue")
	attr := func(name, member string) protoreflect.Value {
		v := attrs.Get(protoreflect.ValueOfString(name).MapKey())
		if !v.IsValid() {
			t.Fatalf("attribute %s missing", name)
		}
		am := v.Message()
		fd := valueMD.Fields().ByName(protoreflect.Name(member))
		if !am.Has(fd) {
			t.Fatalf("attribute %s is not a %s: %v", name, member, am)
		}
		return am.Get(fd)
	}
	if attr("subject", "ce_string").String() != e.Subject || attr("dataversion", "ce_string").String() != e.DataVersion ||
		attr("datacontenttype", "ce_string").String() != e.DataContentType || attr("dataschema", "ce_uri").String() != e.DataSchema ||
		attr("traceparent", "ce_string").String() != e.Extensions["traceparent"] {
		t.Fatalf("attributes differ: %v", m)
	}
	tsm := attr("time", "ce_timestamp").Message().Interface()
	ts := &timestamppb.Timestamp{}
	tb, _ := proto.Marshal(tsm)
	if err := proto.Unmarshal(tb, ts); err != nil || !ts.AsTime().Equal(e.Time) {
		t.Fatalf("time: %v %v", err, ts.AsTime())
	}

	// The other way: build an official CloudEvent dynamically and decode it.
	off := dynamicpb.NewMessage(md)
	off.Set(fields.ByName("id"), protoreflect.ValueOfString("x-1"))
	off.Set(fields.ByName("source"), protoreflect.ValueOfString("/java-sdk"))
	off.Set(fields.ByName("spec_version"), protoreflect.ValueOfString("1.0"))
	off.Set(fields.ByName("type"), protoreflect.ValueOfString("com.example.ping"))
	off.Set(fields.ByName("binary_data"), protoreflect.ValueOfBytes([]byte{0, 1}))
	am := off.Mutable(fields.ByName("attributes")).Map()
	sv := dynamicpb.NewMessage(valueMD)
	sv.Set(valueMD.Fields().ByName("ce_string"), protoreflect.ValueOfString("application/octet-stream"))
	am.Set(protoreflect.ValueOfString("datacontenttype").MapKey(), protoreflect.ValueOfMessage(sv))
	tv := dynamicpb.NewMessage(valueMD)
	tv.Set(valueMD.Fields().ByName("ce_timestamp"), protoreflect.ValueOfMessage(timestamppb.New(time.Unix(1700000000, 42)).ProtoReflect()))
	am.Set(protoreflect.ValueOfString("time").MapKey(), protoreflect.ValueOfMessage(tv))
	ob, err := proto.Marshal(off)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eventkit.DecodeProto(ob)
	if err != nil {
		t.Fatal(err)
	}
	want := eventkit.Event{ID: "x-1", Source: "/java-sdk", Type: "com.example.ping", Time: time.Unix(1700000000, 42).UTC(),
		DataContentType: "application/octet-stream", Data: []byte{0, 1}}
	if d := diffEvents(want, got, true); d != "" {
		t.Fatal(d)
	}
}
