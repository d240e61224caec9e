package eventkit

//go:generate go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate proto --template proto/buf.gen.yaml

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/eventkit/eventkit/eventkitpb"
)

// ProtoContentType is the media type of an event in the CloudEvents protobuf
// format (what MarshalProto writes).
const ProtoContentType = "application/cloudevents+protobuf"

// Field numbers of eventkitpb.Envelope (= io.cloudevents.v1.CloudEvent).
const (
	pbID          protowire.Number = 1
	pbSource      protowire.Number = 2
	pbSpecVersion protowire.Number = 3
	pbType        protowire.Number = 4
	pbAttributes  protowire.Number = 5
	pbBinaryData  protowire.Number = 6
	pbTextData    protowire.Number = 7

	pbMapKey   protowire.Number = 1
	pbMapValue protowire.Number = 2

	pbAttrString    protowire.Number = 3
	pbAttrURI       protowire.Number = 5
	pbAttrTimestamp protowire.Number = 7
)

// Valid range of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// MarshalProto encodes e in the CloudEvents protobuf format: the bytes are an
// eventkitpb.Envelope, which is wire-identical to io.cloudevents.v1.CloudEvent,
// so any CloudEvents SDK reads them (media type ProtoContentType).
//
// Time becomes the ce_timestamp attribute "time"; Subject, DataVersion,
// DataContentType and Extensions ce_string attributes; DataSchema the ce_uri
// attribute "dataschema" (the core spec types dataschema as URI; readers that
// follow the type, such as the Go SDK, drop a ce_uri_ref). Data is text_data
// when the media type is text/* (other than text/json and text/xml) and Data
// is valid UTF-8, as the format requires of text; JSON and XML payloads
// (application/json, */*+json, XML) are binary_data, the serializer's output
// bytes, which is how the Go SDK writes and reads them (it JSON-encodes a
// text_data string again, see docs/cloudevents.md); Data is absent when nil. Extensions named like an attribute eventkit
// sets itself are left out. The encoding is deterministic (attributes sorted
// by name): it is byte-identical to proto.Marshal of the equivalent
// eventkitpb.Envelope with Deterministic set.
//
// MarshalProto fails with a *ValidationError (wrapping ErrInvalidEvent) when a
// string is not valid UTF-8, which protobuf forbids, or when Time is outside
// the range of google.protobuf.Timestamp (years 1 to 9999).
func MarshalProto(e Event) ([]byte, error) {
	return AppendProto(nil, e)
}

// AppendProto appends the protobuf encoding of e (see MarshalProto) to b.
func AppendProto(b []byte, e Event) ([]byte, error) {
	var buf [16]pbAttr
	attrs, err := protoAttrs(buf[:0], e)
	if err != nil {
		return b, err
	}
	size := 0
	size += pbSizeString(pbID, e.ID) + pbSizeString(pbSource, e.Source) + pbSizeString(pbSpecVersion, SpecVersion) + pbSizeString(pbType, e.Type)
	for i := range attrs {
		attrs[i].size()
		size += protowire.SizeTag(pbAttributes) + protowire.SizeBytes(attrs[i].entrySize)
	}
	text := e.Data != nil && protoText(e.DataContentType) && utf8.Valid(e.Data)
	if e.Data != nil {
		size += protowire.SizeTag(pbBinaryData) + protowire.SizeBytes(len(e.Data))
	}
	b = slices.Grow(b, size)
	b = pbAppendString(b, pbID, e.ID)
	b = pbAppendString(b, pbSource, e.Source)
	b = pbAppendString(b, pbSpecVersion, SpecVersion)
	b = pbAppendString(b, pbType, e.Type)
	for i := range attrs {
		b = attrs[i].append(b)
	}
	if e.Data != nil {
		if text {
			b = protowire.AppendTag(b, pbTextData, protowire.BytesType)
		} else {
			b = protowire.AppendTag(b, pbBinaryData, protowire.BytesType)
		}
		b = protowire.AppendBytes(b, e.Data)
	}
	return b, nil
}

// sizeString is the size of a proto3 string field (absent when empty).
func pbSizeString(n protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(n) + protowire.SizeBytes(len(s))
}

func pbAppendString(b []byte, n protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// pbAttr is one entry of the attributes map being encoded.
type pbAttr struct {
	key       string
	kind      protowire.Number // pbAttrString, pbAttrURI or pbAttrTimestamp
	s         string
	sec       int64
	nsec      int32
	valueSize int // size of the CloudEventAttributeValue message
	entrySize int // size of the map entry message
}

func (a *pbAttr) size() {
	if a.kind == pbAttrTimestamp {
		ts := 0
		if a.sec != 0 {
			ts += protowire.SizeTag(1) + protowire.SizeVarint(uint64(a.sec))
		}
		if a.nsec != 0 {
			ts += protowire.SizeTag(2) + protowire.SizeVarint(uint64(a.nsec))
		}
		a.valueSize = protowire.SizeTag(a.kind) + protowire.SizeBytes(ts)
	} else {
		a.valueSize = protowire.SizeTag(a.kind) + protowire.SizeBytes(len(a.s))
	}
	a.entrySize = protowire.SizeTag(pbMapKey) + protowire.SizeBytes(len(a.key)) +
		protowire.SizeTag(pbMapValue) + protowire.SizeBytes(a.valueSize)
}

func (a *pbAttr) append(b []byte) []byte {
	b = protowire.AppendTag(b, pbAttributes, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(a.entrySize))
	b = protowire.AppendTag(b, pbMapKey, protowire.BytesType)
	b = protowire.AppendString(b, a.key)
	b = protowire.AppendTag(b, pbMapValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(a.valueSize))
	b = protowire.AppendTag(b, a.kind, protowire.BytesType)
	if a.kind != pbAttrTimestamp {
		return protowire.AppendString(b, a.s)
	}
	ts := 0
	if a.sec != 0 {
		ts += protowire.SizeTag(1) + protowire.SizeVarint(uint64(a.sec))
	}
	if a.nsec != 0 {
		ts += protowire.SizeTag(2) + protowire.SizeVarint(uint64(a.nsec))
	}
	b = protowire.AppendVarint(b, uint64(ts))
	if a.sec != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(a.sec))
	}
	if a.nsec != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(a.nsec))
	}
	return b
}

// protoAttrs collects the attributes of e, sorted by name, and checks that
// every string is valid UTF-8.
func protoAttrs(attrs []pbAttr, e Event) ([]pbAttr, error) {
	bad := func(field, reason string) error { return &ValidationError{ID: e.ID, Field: field, Reason: reason} }
	for _, f := range [...]struct{ name, v string }{
		{"id", e.ID}, {"source", e.Source}, {"type", e.Type}, {"subject", e.Subject},
		{"dataversion", e.DataVersion}, {"datacontenttype", e.DataContentType}, {"dataschema", e.DataSchema},
	} {
		if !utf8.ValidString(f.v) {
			return nil, bad(f.name, "is not valid UTF-8 (protobuf strings must be)")
		}
	}
	if e.Subject != "" {
		attrs = append(attrs, pbAttr{key: "subject", kind: pbAttrString, s: e.Subject})
	}
	if e.DataVersion != "" {
		attrs = append(attrs, pbAttr{key: "dataversion", kind: pbAttrString, s: e.DataVersion})
	}
	if e.DataContentType != "" {
		attrs = append(attrs, pbAttr{key: "datacontenttype", kind: pbAttrString, s: e.DataContentType})
	}
	if e.DataSchema != "" {
		attrs = append(attrs, pbAttr{key: "dataschema", kind: pbAttrURI, s: e.DataSchema})
	}
	if !e.Time.IsZero() {
		sec, nsec := e.Time.Unix(), int32(e.Time.Nanosecond())
		if sec < minTimestampSeconds || sec > maxTimestampSeconds {
			return nil, bad("time", "is outside the range of google.protobuf.Timestamp (years 1 to 9999)")
		}
		attrs = append(attrs, pbAttr{key: "time", kind: pbAttrTimestamp, sec: sec, nsec: nsec})
	}
	for k, v := range e.Extensions {
		if reserved[k] || k == "specversion" {
			continue
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, bad("extensions["+k+"]", "is not valid UTF-8 (protobuf strings must be)")
		}
		attrs = append(attrs, pbAttr{key: k, kind: pbAttrString, s: v})
	}
	slices.SortFunc(attrs, func(a, b pbAttr) int { return strings.Compare(a.key, b.key) })
	return attrs, nil
}

// protoText reports whether a payload of media type ct is text that
// MarshalProto carries as text_data: text/*, except text/json and text/xml,
// which like every JSON and XML media type are a serializer's bytes and go in
// binary_data.
func protoText(ct string) bool {
	mt := mediaType(ct)
	return strings.HasPrefix(mt, "text/") && mt != "text/json" && mt != "text/xml" &&
		!strings.HasSuffix(mt, "+json") && !strings.HasSuffix(mt, "+xml")
}

// DecodeProto decodes an event in the CloudEvents protobuf format (what
// MarshalProto writes, or any CloudEvents SDK's protobuf encoding). Any
// failure is a *DecodeError that keeps b.
//
// Attribute values of any CloudEvents type are accepted: "time" as a
// ce_timestamp (or a ce_string in RFC 3339), the others in their canonical
// string form (booleans "true"/"false", integers in decimal, bytes in base64,
// timestamps in RFC 3339); dataschema as ce_uri, ce_uri_ref or ce_string.
// Attributes whose names are not valid eventkit
// extension names are ignored, as in the other decoders. A proto_data payload
// becomes Data (the message bytes), with DataContentType
// "application/protobuf" and DataSchema the Any's type URL unless the event
// sets them. The event does not alias b (Data is a copy). Unknown fields are
// skipped, so later versions of the format stay readable.
func DecodeProto(b []byte) (Event, error) {
	e, err := decodeProtoWire(b)
	if err != nil {
		return Event{}, &DecodeError{Format: "cloudevents+protobuf", Raw: b, Err: err}
	}
	return e, nil
}

// FromProto converts a decoded protobuf envelope to an Event, with the same
// rules as DecodeProto (which does the same without building the message).
// Use it when an Envelope is embedded in your own protobuf messages. Any
// failure is a *DecodeError (without Raw bytes).
func FromProto(pb *eventkitpb.Envelope) (Event, error) {
	e, err := fromProto(pb)
	if err != nil {
		return Event{}, &DecodeError{Format: "eventkitpb.Envelope", Err: err}
	}
	return e, nil
}

func fromProto(pb *eventkitpb.Envelope) (Event, error) {
	e := Event{ID: pb.GetId(), Source: pb.GetSource(), Type: pb.GetType()}
	if err := checkRequired(pb.GetSpecVersion(), e); err != nil {
		return Event{}, err
	}
	for k, v := range pb.GetAttributes() {
		if k == "time" {
			t, err := protoTime(v)
			if err != nil {
				return Event{}, fmt.Errorf("attribute time: %w", err)
			}
			e.Time = t
			continue
		}
		var dst *string
		switch k {
		case "subject":
			dst = &e.Subject
		case "dataversion":
			dst = &e.DataVersion
		case "datacontenttype":
			dst = &e.DataContentType
		case "dataschema":
			dst = &e.DataSchema
		default:
			if !ValidExtensionName(k) {
				continue
			}
		}
		s, err := protoAttrString(v)
		if err != nil {
			return Event{}, fmt.Errorf("attribute %s: %w", k, err)
		}
		if dst != nil {
			*dst = s
			continue
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]string, len(pb.Attributes))
		}
		e.Extensions[k] = s
	}
	switch d := pb.GetData().(type) {
	case *eventkitpb.Envelope_BinaryData:
		e.Data = d.BinaryData
		if e.Data == nil {
			e.Data = []byte{}
		}
	case *eventkitpb.Envelope_TextData:
		e.Data = []byte(d.TextData)
	case *eventkitpb.Envelope_ProtoData:
		e.Data = d.ProtoData.GetValue()
		if e.Data == nil {
			e.Data = []byte{}
		}
		if e.DataContentType == "" {
			e.DataContentType = ContentTypeProtobuf
		}
		if e.DataSchema == "" {
			e.DataSchema = d.ProtoData.GetTypeUrl()
		}
	}
	return e, nil
}

// ToProto converts e to the generated protobuf envelope, with the same
// mapping and errors as MarshalProto (which writes the bytes directly,
// without building the message).
func ToProto(e Event) (*eventkitpb.Envelope, error) {
	var buf [16]pbAttr
	attrs, err := protoAttrs(buf[:0], e)
	if err != nil {
		return nil, err
	}
	pb := &eventkitpb.Envelope{Id: e.ID, Source: e.Source, SpecVersion: SpecVersion, Type: e.Type}
	if len(attrs) > 0 {
		pb.Attributes = make(map[string]*eventkitpb.Envelope_AttributeValue, len(attrs))
	}
	for _, a := range attrs {
		v := &eventkitpb.Envelope_AttributeValue{}
		switch a.kind {
		case pbAttrTimestamp:
			v.Attr = &eventkitpb.Envelope_AttributeValue_CeTimestamp{CeTimestamp: &timestamppb.Timestamp{Seconds: a.sec, Nanos: a.nsec}}
		case pbAttrURI:
			v.Attr = &eventkitpb.Envelope_AttributeValue_CeUri{CeUri: a.s}
		default:
			v.Attr = &eventkitpb.Envelope_AttributeValue_CeString{CeString: a.s}
		}
		pb.Attributes[a.key] = v
	}
	if e.Data != nil {
		if protoText(e.DataContentType) && utf8.Valid(e.Data) {
			pb.Data = &eventkitpb.Envelope_TextData{TextData: string(e.Data)}
		} else {
			pb.Data = &eventkitpb.Envelope_BinaryData{BinaryData: e.Data}
		}
	}
	return pb, nil
}

func protoTime(v *eventkitpb.Envelope_AttributeValue) (time.Time, error) {
	switch a := v.GetAttr().(type) {
	case *eventkitpb.Envelope_AttributeValue_CeTimestamp:
		if err := a.CeTimestamp.CheckValid(); err != nil {
			return time.Time{}, err
		}
		return a.CeTimestamp.AsTime(), nil // UTC
	case *eventkitpb.Envelope_AttributeValue_CeString:
		t, err := parseTime(a.CeString)
		if err != nil {
			return time.Time{}, err
		}
		if s := t.Unix(); s < minTimestampSeconds || s > maxTimestampSeconds {
			return time.Time{}, errors.New("is outside the range of google.protobuf.Timestamp (years 1 to 9999)")
		}
		return t, nil
	default:
		return time.Time{}, fmt.Errorf("must be a timestamp, not %T", v.GetAttr())
	}
}

// protoAttrString is the canonical string form of an attribute value.
func protoAttrString(v *eventkitpb.Envelope_AttributeValue) (string, error) {
	switch a := v.GetAttr().(type) {
	case *eventkitpb.Envelope_AttributeValue_CeString:
		return a.CeString, nil
	case *eventkitpb.Envelope_AttributeValue_CeUri:
		return a.CeUri, nil
	case *eventkitpb.Envelope_AttributeValue_CeUriRef:
		return a.CeUriRef, nil
	case *eventkitpb.Envelope_AttributeValue_CeBoolean:
		return strconv.FormatBool(a.CeBoolean), nil
	case *eventkitpb.Envelope_AttributeValue_CeInteger:
		return strconv.FormatInt(int64(a.CeInteger), 10), nil
	case *eventkitpb.Envelope_AttributeValue_CeBytes:
		return base64.StdEncoding.EncodeToString(a.CeBytes), nil
	case *eventkitpb.Envelope_AttributeValue_CeTimestamp:
		if err := a.CeTimestamp.CheckValid(); err != nil {
			return "", err
		}
		return a.CeTimestamp.AsTime().Format(TimeFormat), nil
	default:
		return "", errors.New("has no value")
	}
}
