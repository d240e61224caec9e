package schemacheck

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

func fd(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label, typeName string) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum()}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	return f
}

const (
	opt = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	rep = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	req = descriptorpb.FieldDescriptorProto_LABEL_REQUIRED

	tString = descriptorpb.FieldDescriptorProto_TYPE_STRING
	tBytes  = descriptorpb.FieldDescriptorProto_TYPE_BYTES
	tInt32  = descriptorpb.FieldDescriptorProto_TYPE_INT32
	tInt64  = descriptorpb.FieldDescriptorProto_TYPE_INT64
	tUint32 = descriptorpb.FieldDescriptorProto_TYPE_UINT32
	tEnum   = descriptorpb.FieldDescriptorProto_TYPE_ENUM
	tMsg    = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
)

// baseFile is shop.v1 with
//
//	message Order {
//	  string id = 1; int32 qty = 2; Status status = 3; repeated string tags = 4;
//	  oneof pay { string card = 5; }
//	  repeated Line lines = 6;
//	  reserved 10; reserved "legacy";
//	  message Line { string sku = 1; }
//	}
//	enum Status { STATUS_UNKNOWN = 0; STATUS_OPEN = 1; STATUS_CLOSED = 2; reserved 9; }
func baseFile(syntax string) *descriptorpb.FileDescriptorProto {
	card := fd("card", 5, tString, opt, "")
	card.OneofIndex = proto.Int32(0)
	return &descriptorpb.FileDescriptorProto{
		Name: proto.String("shop/v1/order.proto"), Package: proto.String("shop.v1"), Syntax: proto.String(syntax),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Order"),
			Field: []*descriptorpb.FieldDescriptorProto{
				fd("id", 1, tString, opt, ""), fd("qty", 2, tInt32, opt, ""), fd("status", 3, tEnum, opt, ".shop.v1.Status"),
				fd("tags", 4, tString, rep, ""), card, fd("lines", 6, tMsg, rep, ".shop.v1.Order.Line"),
			},
			OneofDecl:     []*descriptorpb.OneofDescriptorProto{{Name: proto.String("pay")}},
			NestedType:    []*descriptorpb.DescriptorProto{{Name: proto.String("Line"), Field: []*descriptorpb.FieldDescriptorProto{fd("sku", 1, tString, opt, "")}}},
			ReservedRange: []*descriptorpb.DescriptorProto_ReservedRange{{Start: proto.Int32(10), End: proto.Int32(11)}},
			ReservedName:  []string{"legacy"},
		}},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Status"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("STATUS_UNKNOWN"), Number: proto.Int32(0)},
				{Name: proto.String("STATUS_OPEN"), Number: proto.Int32(1)},
				{Name: proto.String("STATUS_CLOSED"), Number: proto.Int32(2)},
			},
			ReservedRange: []*descriptorpb.EnumDescriptorProto_EnumReservedRange{{Start: proto.Int32(9), End: proto.Int32(9)}},
		}},
	}
}

// describe builds the file with protodesc and records its first message.
func describe(t *testing.T, f *descriptorpb.FileDescriptorProto) *Proto {
	t.Helper()
	file, err := protodesc.NewFile(f, nil)
	if err != nil {
		t.Fatalf("protodesc: %v", err)
	}
	return DescribeProto(file.Messages().Get(0))
}

func protoEntry(p *Proto) Entry {
	return Entry{Type: "order.placed", Version: "1", ContentType: "application/protobuf", Protobuf: p}
}

func rules(r *Report) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.Rule)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func order(f *descriptorpb.FileDescriptorProto) *descriptorpb.DescriptorProto {
	return f.MessageType[0]
}

func dropField(m *descriptorpb.DescriptorProto, name string) {
	m.Field = slices.DeleteFunc(m.Field, func(f *descriptorpb.FieldDescriptorProto) bool { return f.GetName() == name })
}

func field(m *descriptorpb.DescriptorProto, name string) *descriptorpb.FieldDescriptorProto {
	for _, f := range m.Field {
		if f.GetName() == name {
			return f
		}
	}
	panic(name)
}

func status(f *descriptorpb.FileDescriptorProto) *descriptorpb.EnumDescriptorProto {
	return f.EnumType[0]
}

// TestProtoRules: each breaking change of a Protobuf payload is caught
// under its buf rule, at its field, and each compatible one passes.
func TestProtoRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		syntax string // default proto3
		change func(f *descriptorpb.FileDescriptorProto)
		want   []string // rules; nil: compatible
		path   string   // the path of the first finding
	}{
		{name: "unchanged", change: func(*descriptorpb.FileDescriptorProto) {}},
		{name: "field deleted", change: func(f *descriptorpb.FileDescriptorProto) { dropField(order(f), "qty") },
			want: []string{"FIELD_NO_DELETE_UNLESS_NAME_RESERVED", "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"}, path: "shop.v1.Order.qty"},
		{name: "field deleted, number reserved only", change: func(f *descriptorpb.FileDescriptorProto) {
			dropField(order(f), "qty")
			order(f).ReservedRange = append(order(f).ReservedRange, &descriptorpb.DescriptorProto_ReservedRange{Start: proto.Int32(2), End: proto.Int32(3)})
		}, want: []string{"FIELD_NO_DELETE_UNLESS_NAME_RESERVED"}},
		{name: "field renumbered", change: func(f *descriptorpb.FileDescriptorProto) { field(order(f), "qty").Number = proto.Int32(7) },
			want: []string{"FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"}, path: "shop.v1.Order.qty"},
		{name: "field number reused", change: func(f *descriptorpb.FileDescriptorProto) {
			dropField(order(f), "qty")
			order(f).Field = append(order(f).Field, fd("count", 2, tInt32, opt, ""))
		}, want: []string{"FIELD_SAME_JSON_NAME", "FIELD_SAME_NAME"}, path: "shop.v1.Order.qty"},
		{name: "field renamed", change: func(f *descriptorpb.FileDescriptorProto) { field(order(f), "qty").Name = proto.String("quantity") },
			want: []string{"FIELD_SAME_JSON_NAME", "FIELD_SAME_NAME"}},
		{name: "type int32 to string", change: func(f *descriptorpb.FileDescriptorProto) { field(order(f), "qty").Type = tString.Enum() },
			want: []string{"FIELD_WIRE_JSON_COMPATIBLE_TYPE"}, path: "shop.v1.Order.qty"},
		{name: "type int32 to uint32", change: func(f *descriptorpb.FileDescriptorProto) { field(order(f), "qty").Type = tUint32.Enum() },
			want: []string{"FIELD_WIRE_JSON_COMPATIBLE_TYPE"}},
		{name: "type string to bytes", change: func(f *descriptorpb.FileDescriptorProto) { field(order(f), "id").Type = tBytes.Enum() },
			want: []string{"FIELD_WIRE_JSON_COMPATIBLE_TYPE"}},
		{name: "type enum to int32", change: func(f *descriptorpb.FileDescriptorProto) {
			s := field(order(f), "status")
			s.Type, s.TypeName = tInt32.Enum(), nil
		}, want: []string{"FIELD_WIRE_JSON_COMPATIBLE_TYPE"}},
		{name: "type of a nested message's field", change: func(f *descriptorpb.FileDescriptorProto) {
			order(f).NestedType[0].Field[0].Type = tInt64.Enum()
		}, want: []string{"FIELD_WIRE_JSON_COMPATIBLE_TYPE"}, path: "shop.v1.Order.Line.sku"},
		{name: "repeated to singular", change: func(f *descriptorpb.FileDescriptorProto) { field(order(f), "tags").Label = opt.Enum() },
			want: []string{"FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY"}, path: "shop.v1.Order.tags"},
		{name: "out of a oneof", change: func(f *descriptorpb.FileDescriptorProto) {
			field(order(f), "card").OneofIndex = nil
			order(f).OneofDecl = nil
		}, want: []string{"FIELD_SAME_ONEOF"}},
		{name: "optional to required", syntax: "proto2", change: func(f *descriptorpb.FileDescriptorProto) { field(order(f), "id").Label = req.Enum() },
			want: []string{"MESSAGE_SAME_REQUIRED_FIELDS"}, path: "shop.v1.Order.id"},
		{name: "required field added", syntax: "proto2", change: func(f *descriptorpb.FileDescriptorProto) {
			order(f).Field = append(order(f).Field, fd("region", 8, tString, req, ""))
		}, want: []string{"MESSAGE_SAME_REQUIRED_FIELDS"}, path: "shop.v1.Order.region"},
		{name: "enum value deleted", change: func(f *descriptorpb.FileDescriptorProto) { status(f).Value = status(f).Value[:2] },
			want: []string{"ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED", "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED"}, path: "shop.v1.Status.STATUS_CLOSED"},
		{name: "enum number reused", change: func(f *descriptorpb.FileDescriptorProto) { status(f).Value[2].Name = proto.String("STATUS_DONE") },
			want: []string{"ENUM_VALUE_SAME_NAME"}, path: "shop.v1.Status.STATUS_CLOSED"},
		{name: "enum reserved number dropped", change: func(f *descriptorpb.FileDescriptorProto) { status(f).ReservedRange = nil },
			want: []string{"RESERVED_ENUM_NO_DELETE"}},
		{name: "message renamed", change: func(f *descriptorpb.FileDescriptorProto) {
			order(f).Name = proto.String("Purchase")
			field(order(f), "lines").TypeName = proto.String(".shop.v1.Purchase.Line")
		},
			want: []string{"MESSAGE_NO_DELETE"}, path: "shop.v1.Order"},
		{name: "field's message type renamed", change: func(f *descriptorpb.FileDescriptorProto) {
			order(f).NestedType[0].Name = proto.String("Item")
			field(order(f), "lines").TypeName = proto.String(".shop.v1.Order.Item")
		}, want: []string{"FIELD_WIRE_JSON_COMPATIBLE_TYPE"}, path: "shop.v1.Order.lines"},
		{name: "reserved range dropped", change: func(f *descriptorpb.FileDescriptorProto) { order(f).ReservedRange = nil },
			want: []string{"RESERVED_MESSAGE_NO_DELETE"}},
		{name: "reserved number reused", change: func(f *descriptorpb.FileDescriptorProto) {
			order(f).ReservedRange = nil
			order(f).Field = append(order(f).Field, fd("extra", 10, tString, opt, ""))
		}, want: []string{"FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", "RESERVED_MESSAGE_NO_DELETE"}},

		// Compatible.
		{name: "new optional field", change: func(f *descriptorpb.FileDescriptorProto) {
			order(f).Field = append(order(f).Field, fd("note", 7, tString, opt, ""))
		}},
		{name: "new enum value", change: func(f *descriptorpb.FileDescriptorProto) {
			status(f).Value = append(status(f).Value, &descriptorpb.EnumValueDescriptorProto{Name: proto.String("STATUS_HELD"), Number: proto.Int32(3)})
		}},
		{name: "field deleted, number and name reserved", change: func(f *descriptorpb.FileDescriptorProto) {
			dropField(order(f), "qty")
			order(f).ReservedRange = append(order(f).ReservedRange, &descriptorpb.DescriptorProto_ReservedRange{Start: proto.Int32(2), End: proto.Int32(3)})
			order(f).ReservedName = append(order(f).ReservedName, "qty")
		}},
		{name: "enum value deleted, number and name reserved", change: func(f *descriptorpb.FileDescriptorProto) {
			status(f).Value = status(f).Value[:2]
			status(f).ReservedRange = append(status(f).ReservedRange, &descriptorpb.EnumDescriptorProto_EnumReservedRange{Start: proto.Int32(2), End: proto.Int32(2)})
			status(f).ReservedName = []string{"STATUS_CLOSED"}
		}},
		{name: "int32 to int64", change: func(f *descriptorpb.FileDescriptorProto) { field(order(f), "qty").Type = tInt64.Enum() }},
		{name: "reserved range widened", change: func(f *descriptorpb.FileDescriptorProto) {
			order(f).ReservedRange = []*descriptorpb.DescriptorProto_ReservedRange{{Start: proto.Int32(9), End: proto.Int32(20)}}
		}},
		{name: "proto3 optional (explicit presence)", change: func(f *descriptorpb.FileDescriptorProto) {
			q := field(order(f), "qty")
			q.Proto3Optional = proto.Bool(true)
			q.OneofIndex = proto.Int32(1)
			order(f).OneofDecl = append(order(f).OneofDecl, &descriptorpb.OneofDescriptorProto{Name: proto.String("_qty")})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			syntax := tc.syntax
			if syntax == "" {
				syntax = "proto3"
			}
			base := baseFile(syntax)
			changed := proto.Clone(base).(*descriptorpb.FileDescriptorProto)
			tc.change(changed)
			old := &Lock{Format: FormatVersion, Types: []Entry{protoEntry(describe(t, base))}}
			cur := &Lock{Format: FormatVersion, Types: []Entry{protoEntry(describe(t, changed))}}
			r := Compare(old, cur, CompareOptions{})
			if got := rules(r); !slices.Equal(got, tc.want) {
				t.Fatalf("rules %v, want %v; findings:\n%s", got, tc.want, lines(r))
			}
			if tc.path != "" && r.Findings[0].Path != tc.path {
				t.Errorf("path %q, want %q:\n%s", r.Findings[0].Path, tc.path, lines(r))
			}
			for _, f := range r.Findings {
				if f.Type != "order.placed" || f.Version != "1" || !strings.Contains(f.String(), f.Rule) || !strings.Contains(f.String(), f.Path) {
					t.Errorf("finding %q does not name the type, version, field and rule", f)
				}
			}
		})
	}
}

func lines(r *Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString(f.String() + "\n")
	}
	return b.String()
}
