package asyncapi

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var (
	timeType          = reflect.TypeFor[time.Time]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
	protoMessageType  = reflect.TypeFor[proto.Message]()
)

// JSONSchema returns the JSON Schema of the JSON encoding/json writes for
// values of t: struct fields by their json tags (a field without omitempty or
// omitzero is required, since it is always written), embedded structs
// inlined, nil slices, maps and pointers as null, []byte as base64, time.Time
// as a date-time string, TextMarshalers as strings. A type with its own
// MarshalJSON, an interface, or a recursive reference is described by the
// empty schema (any value). Channels, functions and complex numbers, which
// encoding/json cannot encode, are an error.
func JSONSchema(t reflect.Type) (map[string]any, error) {
	o, err := goSchema(t, map[reflect.Type]bool{})
	if err != nil {
		return nil, err
	}
	return toMap(o), nil
}

// toMap turns an *obj tree into plain maps (for callers of JSONSchema).
func toMap(v any) map[string]any {
	o := v.(*obj)
	m := make(map[string]any, len(o.keys))
	for _, k := range o.keys {
		m[k] = plain(o.vals[k])
	}
	return m
}

func plain(v any) any {
	switch x := v.(type) {
	case *obj:
		return toMap(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

func nullable(typ string) []any { return []any{typ, "null"} }

func goSchema(t reflect.Type, seen map[reflect.Type]bool) (*obj, error) {
	if t == timeType {
		return newObj("type", "string", "format", "date-time"), nil
	}
	if t.Kind() == reflect.Pointer && t.Elem() == timeType {
		return newObj("type", nullable("string"), "format", "date-time"), nil
	}
	if t.Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(jsonMarshalerType) {
		return newObj("description", "custom JSON encoding ("+t.String()+")"), nil
	}
	if t.Implements(textMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType) {
		if t.Kind() == reflect.Pointer {
			return newObj("type", nullable("string")), nil
		}
		return newObj("type", "string"), nil
	}
	switch t.Kind() {
	case reflect.Bool:
		return newObj("type", "boolean"), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return newObj("type", "integer"), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return newObj("type", "integer", "minimum", 0), nil
	case reflect.Float32, reflect.Float64:
		return newObj("type", "number"), nil
	case reflect.String:
		return newObj("type", "string"), nil
	case reflect.Interface:
		return newObj(), nil
	case reflect.Pointer:
		if seen[t.Elem()] {
			return newObj("description", "recursive reference to "+t.Elem().String()), nil
		}
		s, err := goSchema(t.Elem(), seen)
		if err != nil {
			return nil, err
		}
		return orNull(s), nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !reflect.PointerTo(t.Elem()).Implements(textMarshalerType) {
			return newObj("type", nullable("string"), "contentEncoding", "base64"), nil
		}
		items, err := goSchema(t.Elem(), seen)
		if err != nil {
			return nil, err
		}
		return newObj("type", nullable("array"), "items", items), nil
	case reflect.Array:
		items, err := goSchema(t.Elem(), seen)
		if err != nil {
			return nil, err
		}
		return newObj("type", "array", "items", items, "minItems", t.Len(), "maxItems", t.Len()), nil
	case reflect.Map:
		switch k := t.Key(); {
		case k.Kind() == reflect.String, k.Implements(textMarshalerType):
		case k.Kind() >= reflect.Int && k.Kind() <= reflect.Uintptr:
		default:
			return nil, fmt.Errorf("asyncapi: map key type %s cannot be encoded as JSON", k)
		}
		vs, err := goSchema(t.Elem(), seen)
		if err != nil {
			return nil, err
		}
		return newObj("type", nullable("object"), "additionalProperties", vs), nil
	case reflect.Struct:
		return structSchema(t, seen)
	}
	return nil, fmt.Errorf("asyncapi: %s (%s) cannot be encoded as JSON", t, t.Kind())
}

// orNull widens s to accept null (what encoding/json writes for a nil pointer).
func orNull(s *obj) *obj {
	switch typ := s.get("type").(type) {
	case string:
		return s.set("type", nullable(typ))
	case []any:
		return s // already nullable
	}
	if len(s.keys) == 0 || !s.has("type") {
		return s // the empty schema already admits null
	}
	return s
}

func structSchema(t reflect.Type, seen map[reflect.Type]bool) (*obj, error) {
	seen[t] = true
	defer delete(seen, t)
	props := newObj()
	var required []any
	if err := addFields(t, props, &required, seen); err != nil {
		return nil, err
	}
	s := newObj("type", "object", "properties", props)
	if len(required) > 0 {
		s.set("required", required)
	}
	return s, nil
}

// addFields adds t's JSON fields to props, inlining untagged embedded
// structs as encoding/json does. (encoding/json's rule for conflicting
// names at the same depth is not reproduced: the first wins.)
func addFields(t reflect.Type, props *obj, required *[]any, seen map[reflect.Type]bool) error {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			et := ft
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				if err := addFields(et, props, required, seen); err != nil {
					return err
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if props.has(name) {
			continue
		}
		var s *obj
		if hasOpt(opts, "string") && isScalar(ft) {
			s = newObj("type", "string")
		} else {
			var err error
			if s, err = goSchema(ft, seen); err != nil {
				return fmt.Errorf("field %s.%s: %w", t, f.Name, err)
			}
		}
		props.set(name, s)
		if !hasOpt(opts, "omitempty") && !hasOpt(opts, "omitzero") {
			*required = append(*required, name)
		}
	}
	return nil
}

func hasOpt(opts, want string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

func isScalar(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

// ProtoSchema returns the JSON Schema of the protojson form of the message
// described by md (the form the CloudEvents JSON format and JSON tools see):
// fields by their JSON names, all optional (proto3), 64-bit integers as
// strings or numbers, enums by name, bytes as base64, and the well-known
// types (Timestamp, Duration, wrappers, Struct, ...) as protojson writes
// them. A recursive message reference is the empty schema.
func ProtoSchema(md protoreflect.MessageDescriptor) map[string]any {
	return toMap(protoMessage(md, map[protoreflect.FullName]bool{}))
}

func protoMessage(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) *obj {
	if s := wellKnown(md); s != nil {
		return s
	}
	if seen[md.FullName()] {
		return newObj("description", "recursive reference to "+string(md.FullName()))
	}
	seen[md.FullName()] = true
	defer delete(seen, md.FullName())
	props := newObj()
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		props.set(fd.JSONName(), protoField(fd, seen))
	}
	return newObj("type", "object", "title", string(md.FullName()), "properties", props)
}

func protoField(fd protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool) *obj {
	switch {
	case fd.IsMap():
		return newObj("type", "object", "additionalProperties", protoValue(fd.MapValue(), seen))
	case fd.IsList():
		return newObj("type", "array", "items", protoValue(fd, seen))
	}
	return protoValue(fd, seen)
}

func protoValue(fd protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool) *obj {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return newObj("type", "boolean")
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return newObj("type", "integer", "format", "int32")
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return newObj("type", "integer", "minimum", 0, "format", "uint32")
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return newObj("type", []any{"string", "integer"}, "pattern", "^-?[0-9]+$", "format", "int64")
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return newObj("type", []any{"string", "integer"}, "pattern", "^[0-9]+$", "format", "uint64")
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		// protojson writes NaN and the infinities as strings.
		return newObj("oneOf", []any{newObj("type", "number"), newObj("type", "string", "enum", []any{"NaN", "Infinity", "-Infinity"})})
	case protoreflect.StringKind:
		return newObj("type", "string")
	case protoreflect.BytesKind:
		return newObj("type", "string", "contentEncoding", "base64")
	case protoreflect.EnumKind:
		ed := fd.Enum()
		if ed.FullName() == "google.protobuf.NullValue" {
			return newObj("type", "null")
		}
		vals := ed.Values()
		names := make([]any, 0, vals.Len())
		for i := range vals.Len() {
			names = append(names, string(vals.Get(i).Name()))
		}
		return newObj("title", string(ed.FullName()), "oneOf", []any{newObj("type", "string", "enum", names), newObj("type", "integer")})
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protoMessage(fd.Message(), seen)
	}
	return newObj()
}

// wellKnown returns the protojson schema of a well-known type, or nil.
func wellKnown(md protoreflect.MessageDescriptor) *obj {
	if md.ParentFile() == nil || !strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return nil
	}
	switch md.Name() {
	case "Timestamp":
		return newObj("type", "string", "format", "date-time")
	case "Duration":
		return newObj("type", "string", "pattern", `^-?[0-9]+(\.[0-9]+)?s$`)
	case "FieldMask":
		return newObj("type", "string")
	case "Struct":
		return newObj("type", "object")
	case "ListValue":
		return newObj("type", "array")
	case "Value":
		return newObj()
	case "Empty":
		return newObj("type", "object", "maxProperties", 0)
	case "Any":
		return newObj("type", "object", "properties", newObj("@type", newObj("type", "string")), "required", []any{"@type"})
	case "BoolValue":
		return newObj("type", "boolean")
	case "Int32Value", "UInt32Value":
		return newObj("type", "integer")
	case "Int64Value", "UInt64Value":
		return newObj("type", []any{"string", "integer"}, "pattern", "^-?[0-9]+$")
	case "FloatValue", "DoubleValue":
		return newObj("type", []any{"number", "string"})
	case "StringValue":
		return newObj("type", "string")
	case "BytesValue":
		return newObj("type", "string", "contentEncoding", "base64")
	}
	return nil
}

// payloadSchema is the schema of a registered Go type's payload, and
// whether there is one: the descriptor's for Protobuf messages, the
// reflected one for JSON codecs, none for other codecs.
func payloadSchema(t reflect.Type, contentType string) (*obj, bool, error) {
	if t.Implements(protoMessageType) {
		var m proto.Message
		if t.Kind() == reflect.Pointer {
			m, _ = reflect.New(t.Elem()).Interface().(proto.Message)
		}
		if m == nil {
			return nil, false, nil
		}
		return protoMessage(m.ProtoReflect().Descriptor(), map[protoreflect.FullName]bool{}), true, nil
	}
	if !isJSONMedia(contentType) {
		return nil, false, nil
	}
	s, err := goSchema(t, map[reflect.Type]bool{})
	return s, err == nil, err
}

func isJSONMedia(ct string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(ct), ";")
	mt = strings.TrimSpace(mt)
	return mt == "" || mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}
