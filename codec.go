package eventkit

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"google.golang.org/protobuf/proto"
)

// A Codec encodes typed payloads into an event's Data and back. ContentType is
// the media type it writes into the event's DataContentType and expects when
// decoding. Codecs must be safe for concurrent use.
type Codec interface {
	// ContentType is the media type of the encoded payload: "application/json".
	ContentType() string
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, which is a non-nil pointer.
	Unmarshal(data []byte, v any) error
}

// The codecs eventkit ships.
var (
	// JSON encodes payloads with encoding/json (media type application/json).
	JSON Codec = JSONCodec{}
	// Protobuf encodes payloads that are proto.Message values (pointers to
	// generated structs) in the protobuf binary format (media type
	// application/protobuf, as the CloudEvents protobuf format names it).
	Protobuf Codec = ProtobufCodec{}
)

// Media types of the shipped codecs.
const (
	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/protobuf"
)

// JSONCodec is the JSON codec; use the JSON variable.
type JSONCodec struct{}

// ContentType returns "application/json".
func (JSONCodec) ContentType() string { return ContentTypeJSON }

// Marshal encodes v with encoding/json.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes data with encoding/json.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// ProtobufCodec is the protobuf codec; use the Protobuf variable.
type ProtobufCodec struct{}

// ContentType returns "application/protobuf".
func (ProtobufCodec) ContentType() string { return ContentTypeProtobuf }

// Marshal encodes v, which must be a proto.Message, deterministically (map
// entries sorted), so that equal messages give equal bytes.
func (ProtobufCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("eventkit: protobuf codec: %T is not a proto.Message", v)
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// Unmarshal decodes data into v, which must be a proto.Message (or a pointer
// to a proto.Message pointer, which is then allocated).
func (ProtobufCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case proto.Message:
		return proto.Unmarshal(data, m)
	default:
		// *T where T is a message pointer: allocate it.
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && !rv.IsNil() && rv.Elem().Kind() == reflect.Pointer &&
			rv.Elem().Type().Implements(protoMessageType) {
			msg := reflect.New(rv.Elem().Type().Elem())
			if err := proto.Unmarshal(data, msg.Interface().(proto.Message)); err != nil {
				return err
			}
			rv.Elem().Set(msg)
			return nil
		}
		return fmt.Errorf("eventkit: protobuf codec: %T is not a proto.Message", v)
	}
}

var protoMessageType = reflect.TypeFor[proto.Message]()

// checkType reports whether codec can handle values of type t, for the codecs
// eventkit knows; other codecs are trusted.
func checkType(codec Codec, t reflect.Type) error {
	if _, ok := codec.(ProtobufCodec); ok {
		if t.Kind() != reflect.Pointer || !t.Implements(protoMessageType) {
			return fmt.Errorf("the protobuf codec needs a generated message pointer type (*pb.X), not %s", t)
		}
	}
	return nil
}

// mediaType returns ct without parameters, trimmed and lower-cased.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// contentTypeMatches reports whether an event's DataContentType fits codec.
// Parameters (";charset=utf-8") and case are ignored. An empty content type
// means application/json, as CloudEvents says; a codec of application/json
// also accepts text/json and */*+json, and one of application/protobuf
// accepts application/x-protobuf.
func contentTypeMatches(eventCT string, codec Codec) bool {
	want := mediaType(codec.ContentType())
	got := mediaType(eventCT)
	if got == "" {
		got = ContentTypeJSON
	}
	switch {
	case got == want:
		return true
	case want == ContentTypeJSON:
		return got == "text/json" || strings.HasSuffix(got, "+json")
	case want == ContentTypeProtobuf:
		return got == "application/x-protobuf"
	}
	return false
}
