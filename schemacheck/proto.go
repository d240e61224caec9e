package schemacheck

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Proto is the recorded descriptor of a Protobuf payload: the root message
// and every message and enum it reaches through its fields (well-known
// types included), each sorted by full name. It holds what the wire and
// JSON encodings depend on: numbers, names, JSON names, kinds, cardinality,
// oneofs and reserved ranges and names.
type Proto struct {
	Message  string         `json:"message"` // full name of the root message
	Messages []ProtoMessage `json:"messages"`
	Enums    []ProtoEnum    `json:"enums"`
}

// A ProtoMessage is one message: its fields sorted by number.
type ProtoMessage struct {
	Name            string       `json:"name"`
	MapEntry        bool         `json:"map_entry,omitempty"`
	Fields          []ProtoField `json:"fields"`
	ReservedNumbers []Range      `json:"reserved_numbers"`
	ReservedNames   []string     `json:"reserved_names"`
}

// A ProtoField is one field of a message.
type ProtoField struct {
	Number      int32  `json:"number"`
	Name        string `json:"name"`
	JSONName    string `json:"json_name"`
	Kind        string `json:"kind"`                // "int32", "string", "message", "enum", ...
	TypeName    string `json:"type_name,omitempty"` // message or enum full name
	Cardinality string `json:"cardinality"`         // "optional", "repeated" or "required"
	Oneof       string `json:"oneof,omitempty"`     // real (not synthetic) oneof
}

// A ProtoEnum is one enum: its values sorted by number, then name.
type ProtoEnum struct {
	Name            string      `json:"name"`
	Values          []EnumValue `json:"values"`
	ReservedNumbers []Range     `json:"reserved_numbers"`
	ReservedNames   []string    `json:"reserved_names"`
}

// An EnumValue is one value of an enum.
type EnumValue struct {
	Number int32  `json:"number"`
	Name   string `json:"name"`
}

// A Range is an inclusive range of reserved numbers: [start, end].
type Range [2]int32

func (r Range) has(n int32) bool { return n >= r[0] && n <= r[1] }

// DescribeProto records md and everything it reaches.
func DescribeProto(md protoreflect.MessageDescriptor) *Proto {
	p := &Proto{Message: string(md.FullName()), Messages: []ProtoMessage{}, Enums: []ProtoEnum{}}
	seenM := map[protoreflect.FullName]bool{}
	seenE := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seenM[md.FullName()] {
			return
		}
		seenM[md.FullName()] = true
		m := ProtoMessage{Name: string(md.FullName()), MapEntry: md.IsMapEntry(), Fields: []ProtoField{},
			ReservedNumbers: fieldRanges(md.ReservedRanges()), ReservedNames: names(md.ReservedNames())}
		fs := md.Fields()
		for i := range fs.Len() {
			fd := fs.Get(i)
			f := ProtoField{Number: int32(fd.Number()), Name: string(fd.Name()), JSONName: fd.JSONName(),
				Kind: fd.Kind().String(), Cardinality: fd.Cardinality().String()}
			if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
				f.Oneof = string(o.Name())
			}
			switch fd.Kind() {
			case protoreflect.MessageKind, protoreflect.GroupKind:
				f.TypeName = string(fd.Message().FullName())
				walk(fd.Message())
			case protoreflect.EnumKind:
				ed := fd.Enum()
				f.TypeName = string(ed.FullName())
				if !seenE[ed.FullName()] {
					seenE[ed.FullName()] = true
					p.Enums = append(p.Enums, describeEnum(ed))
				}
			}
			m.Fields = append(m.Fields, f)
		}
		slices.SortFunc(m.Fields, func(a, b ProtoField) int { return int(a.Number) - int(b.Number) })
		p.Messages = append(p.Messages, m)
	}
	walk(md)
	slices.SortFunc(p.Messages, func(a, b ProtoMessage) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(p.Enums, func(a, b ProtoEnum) int { return strings.Compare(a.Name, b.Name) })
	return p
}

func describeEnum(ed protoreflect.EnumDescriptor) ProtoEnum {
	e := ProtoEnum{Name: string(ed.FullName()), Values: []EnumValue{}, ReservedNames: names(ed.ReservedNames()), ReservedNumbers: []Range{}}
	vs := ed.Values()
	for i := range vs.Len() {
		v := vs.Get(i)
		e.Values = append(e.Values, EnumValue{Number: int32(v.Number()), Name: string(v.Name())})
	}
	slices.SortFunc(e.Values, func(a, b EnumValue) int {
		if a.Number != b.Number {
			return int(a.Number) - int(b.Number)
		}
		return strings.Compare(a.Name, b.Name)
	})
	rs := ed.ReservedRanges()
	for i := range rs.Len() {
		r := rs.Get(i)
		e.ReservedNumbers = append(e.ReservedNumbers, Range{int32(r[0]), int32(r[1])}) // enum ranges are inclusive
	}
	return e
}

func fieldRanges(rs protoreflect.FieldRanges) []Range {
	out := []Range{}
	for i := range rs.Len() {
		r := rs.Get(i)
		out = append(out, Range{int32(r[0]), int32(r[1]) - 1}) // field ranges are half-open
	}
	return out
}

func names(ns protoreflect.Names) []string {
	out := []string{}
	for i := range ns.Len() {
		out = append(out, string(ns.Get(i)))
	}
	return out
}

// validate checks what Compare relies on: the root message is listed,
// names are unique, field numbers are unique and in range, every field
// has a name, a kind and a cardinality, and message and enum fields name
// a listed type.
func (p *Proto) validate() error {
	msgs, enums := map[string]*ProtoMessage{}, map[string]bool{}
	for i := range p.Messages {
		m := &p.Messages[i]
		if m.Name == "" || msgs[m.Name] != nil {
			return fmt.Errorf("message %q: empty or listed twice", m.Name)
		}
		msgs[m.Name] = m
	}
	for _, e := range p.Enums {
		if e.Name == "" || enums[e.Name] {
			return fmt.Errorf("enum %q: empty or listed twice", e.Name)
		}
		enums[e.Name] = true
	}
	if msgs[p.Message] == nil {
		return fmt.Errorf("root message %q is not listed", p.Message)
	}
	for _, e := range p.Enums {
		if err := checkRanges(e.ReservedNumbers); err != nil {
			return fmt.Errorf("enum %s: %w", e.Name, err)
		}
	}
	for _, m := range p.Messages {
		if err := checkRanges(m.ReservedNumbers); err != nil {
			return fmt.Errorf("message %s: %w", m.Name, err)
		}
		nums := map[int32]bool{}
		for _, f := range m.Fields {
			switch {
			case f.Number < 1 || f.Number > 536870911:
				return fmt.Errorf("%s: field number %d out of range", m.Name, f.Number)
			case nums[f.Number]:
				return fmt.Errorf("%s: field number %d listed twice", m.Name, f.Number)
			case f.Name == "" || f.Kind == "":
				return fmt.Errorf("%s: field %d has no name or kind", m.Name, f.Number)
			case f.Cardinality != "optional" && f.Cardinality != "repeated" && f.Cardinality != "required":
				return fmt.Errorf("%s.%s: cardinality %q", m.Name, f.Name, f.Cardinality)
			case (f.Kind == "message" || f.Kind == "group") && msgs[f.TypeName] == nil:
				return fmt.Errorf("%s.%s: message type %q is not listed", m.Name, f.Name, f.TypeName)
			case f.Kind == "enum" && !enums[f.TypeName]:
				return fmt.Errorf("%s.%s: enum type %q is not listed", m.Name, f.Name, f.TypeName)
			}
			nums[f.Number] = true
		}
	}
	return nil
}

func (p *Proto) message(name string) *ProtoMessage {
	for i := range p.Messages {
		if p.Messages[i].Name == name {
			return &p.Messages[i]
		}
	}
	return nil
}

func (p *Proto) enum(name string) *ProtoEnum {
	for i := range p.Enums {
		if p.Enums[i].Name == name {
			return &p.Enums[i]
		}
	}
	return nil
}

// wireJSONGroup maps each scalar kind to a group of kinds that read each
// other's binary and JSON encodings: a value written as one is read as the
// same value by the other (the protobuf language guide's compatible
// integer widths that keep their JSON form). Kinds alone in their group
// are compatible only with themselves; string and bytes share a wire type
// but not a JSON form (bytes are base64), and enums and integers share a
// wire type but enums are names in JSON.
var wireJSONGroup = map[string]string{
	"int32": "int", "int64": "int",
	"uint32": "uint", "uint64": "uint",
	"sint32": "sint", "sint64": "sint",
}

func sameWireJSON(a, b ProtoField) bool {
	if a.Kind == b.Kind {
		return a.TypeName == b.TypeName
	}
	ga, gb := wireJSONGroup[a.Kind], wireJSONGroup[b.Kind]
	return ga != "" && ga == gb
}

// compareProto applies buf's WIRE_JSON rules to old and cur: the root
// message keeps its name, and every message reached from it in old keeps
// what the wire and JSON encodings of old data depend on.
func compareProto(old, cur *Proto, report func(path, rule, msg string)) {
	if old.Message != cur.Message {
		report(old.Message, "MESSAGE_NO_DELETE", fmt.Sprintf("the payload message is now %s (a rename breaks readers that resolve the type by name, such as Any and the dataschema)", cur.Message))
		return
	}
	done := map[string]bool{}
	var walk func(name string)
	walk = func(name string) {
		if done[name] {
			return
		}
		done[name] = true
		om, cm := old.message(name), cur.message(name)
		if om == nil || cm == nil {
			return // a field's type change is reported at the field
		}
		compareMessage(om, cm, report)
		for _, of := range om.Fields {
			cf := cm.field(of.Number)
			if cf == nil || cf.TypeName != of.TypeName {
				continue
			}
			switch of.Kind {
			case "message", "group":
				walk(of.TypeName)
			case "enum":
				if oe, ce := old.enum(of.TypeName), cur.enum(of.TypeName); oe != nil && ce != nil && !done["enum "+oe.Name] {
					done["enum "+oe.Name] = true
					compareEnum(oe, ce, report)
				}
			}
		}
	}
	walk(old.Message)
}

func (m *ProtoMessage) field(n int32) *ProtoField {
	for i := range m.Fields {
		if m.Fields[i].Number == n {
			return &m.Fields[i]
		}
	}
	return nil
}

func (m *ProtoMessage) fieldNamed(name string) *ProtoField {
	for i := range m.Fields {
		if m.Fields[i].Name == name {
			return &m.Fields[i]
		}
	}
	return nil
}

func reserved(rs []Range, n int32) bool {
	return slices.ContainsFunc(rs, func(r Range) bool { return r.has(n) })
}

func compareMessage(om, cm *ProtoMessage, report func(path, rule, msg string)) {
	for _, of := range om.Fields {
		path := om.Name + "." + of.Name
		cf := cm.field(of.Number)
		if cf == nil {
			moved := ""
			if nf := cm.fieldNamed(of.Name); nf != nil {
				moved = fmt.Sprintf(" (renumbered %d to %d)", of.Number, nf.Number)
			}
			if !reserved(cm.ReservedNumbers, of.Number) {
				report(path, "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED",
					fmt.Sprintf("field %d deleted without reserving its number%s", of.Number, moved))
			}
			if !slices.Contains(cm.ReservedNames, of.Name) && moved == "" {
				report(path, "FIELD_NO_DELETE_UNLESS_NAME_RESERVED",
					fmt.Sprintf("field %d deleted without reserving its name %q", of.Number, of.Name))
			}
			continue
		}
		if cf.Name != of.Name {
			report(path, "FIELD_SAME_NAME", fmt.Sprintf("field %d renamed %q to %q (the number is reused by another field, or the JSON key changed)", of.Number, of.Name, cf.Name))
		}
		if cf.JSONName != of.JSONName {
			report(path, "FIELD_SAME_JSON_NAME", fmt.Sprintf("field %d JSON name %q changed to %q", of.Number, of.JSONName, cf.JSONName))
		}
		if !sameWireJSON(of, *cf) {
			report(path, "FIELD_WIRE_JSON_COMPATIBLE_TYPE", fmt.Sprintf("field %d type %s changed to %s", of.Number, kindName(of), kindName(*cf)))
		}
		switch {
		case (of.Cardinality == "required") != (cf.Cardinality == "required"):
			report(path, "MESSAGE_SAME_REQUIRED_FIELDS", fmt.Sprintf("field %d changed from %s to %s", of.Number, of.Cardinality, cf.Cardinality))
		case of.Cardinality != cf.Cardinality:
			report(path, "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY", fmt.Sprintf("field %d changed from %s to %s", of.Number, of.Cardinality, cf.Cardinality))
		}
		if cf.Oneof != of.Oneof {
			report(path, "FIELD_SAME_ONEOF", fmt.Sprintf("field %d moved from oneof %q to %q", of.Number, of.Oneof, cf.Oneof))
		}
	}
	for _, cf := range cm.Fields {
		if om.field(cf.Number) == nil && cf.Cardinality == "required" {
			report(cm.Name+"."+cf.Name, "MESSAGE_SAME_REQUIRED_FIELDS", fmt.Sprintf("required field %d added (old data lacks it)", cf.Number))
		}
		if om.field(cf.Number) == nil && reserved(om.ReservedNumbers, cf.Number) {
			report(cm.Name+"."+cf.Name, "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", fmt.Sprintf("field %d reuses a reserved number", cf.Number))
		}
	}
	for _, r := range om.ReservedNumbers {
		if !covered(cm.ReservedNumbers, r) {
			report(om.Name, "RESERVED_MESSAGE_NO_DELETE", fmt.Sprintf("reserved numbers %d to %d no longer reserved", r[0], r[1]))
		}
	}
	for _, n := range om.ReservedNames {
		if !slices.Contains(cm.ReservedNames, n) {
			report(om.Name, "RESERVED_MESSAGE_NO_DELETE", fmt.Sprintf("reserved name %q no longer reserved", n))
		}
	}
}

// covered reports whether every number of r is in one of rs.
func covered(rs []Range, r Range) bool {
	for n := r[0]; ; {
		end, ok := int32(0), false
		for _, x := range rs {
			if x.has(n) && (!ok || x[1] > end) {
				end, ok = x[1], true
			}
		}
		if !ok {
			return false
		}
		if end >= r[1] {
			return true
		}
		n = end + 1
	}
}

func kindName(f ProtoField) string {
	if f.TypeName != "" {
		return f.Kind + " " + f.TypeName
	}
	return f.Kind
}

func compareEnum(oe, ce *ProtoEnum, report func(path, rule, msg string)) {
	for _, ov := range oe.Values {
		path := oe.Name + "." + ov.Name
		byNum := ce.valuesNumbered(ov.Number)
		if len(byNum) == 0 {
			if !reserved(ce.ReservedNumbers, ov.Number) {
				report(path, "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED", fmt.Sprintf("value %d deleted without reserving its number", ov.Number))
			}
			if !slices.Contains(ce.ReservedNames, ov.Name) && !ce.hasName(ov.Name) {
				report(path, "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED", fmt.Sprintf("value %d deleted without reserving its name %q", ov.Number, ov.Name))
			}
			continue
		}
		if !slices.Contains(byNum, ov.Name) {
			report(path, "ENUM_VALUE_SAME_NAME", fmt.Sprintf("number %d is now named %s (JSON readers of old data see an unknown name)", ov.Number, strings.Join(byNum, ", ")))
		}
	}
	for _, r := range oe.ReservedNumbers {
		if !covered(ce.ReservedNumbers, r) {
			report(oe.Name, "RESERVED_ENUM_NO_DELETE", fmt.Sprintf("reserved numbers %d to %d no longer reserved", r[0], r[1]))
		}
	}
	for _, n := range oe.ReservedNames {
		if !slices.Contains(ce.ReservedNames, n) {
			report(oe.Name, "RESERVED_ENUM_NO_DELETE", fmt.Sprintf("reserved name %q no longer reserved", n))
		}
	}
}

func (e *ProtoEnum) valuesNumbered(n int32) []string {
	var out []string
	for _, v := range e.Values {
		if v.Number == n {
			out = append(out, v.Name)
		}
	}
	return out
}

func (e *ProtoEnum) hasName(name string) bool {
	return slices.ContainsFunc(e.Values, func(v EnumValue) bool { return v.Name == name })
}

var errRange = errors.New("reserved range start after end")

func checkRanges(rs []Range) error {
	for _, r := range rs {
		if r[0] > r[1] {
			return errRange
		}
	}
	return nil
}
