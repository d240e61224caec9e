package eventkit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// decodeProtoWire decodes an eventkitpb.Envelope straight from the wire into
// an Event, without building the generated message (a fraction of the
// allocations). It follows protobuf's rules exactly as proto.Unmarshal
// followed by FromProto does (a fuzz test checks that the two agree): fields
// in any order, the last of a repeated scalar wins, repeated embedded messages
// merge, a later member of a oneof replaces an earlier one, a later map entry
// replaces an earlier one with the same key, unknown fields and fields of an
// unexpected wire type are skipped, and strings must be valid UTF-8.
func decodeProtoWire(b []byte) (Event, error) {
	var (
		e        Event
		spec     []byte
		dataKind protowire.Number // 0, pbBinaryData, pbTextData or pbProtoData
		data     []byte
		anyURL   []byte
		buf      [16]wireAttr
		attrs    = buf[:0]
	)
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return Event{}, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType || num < pbID || num > pbProtoData {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Event{}, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return Event{}, protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case pbID, pbSource, pbSpecVersion, pbType, pbTextData:
			if !utf8.Valid(v) {
				return Event{}, fmt.Errorf("field %d: string is not valid UTF-8", num)
			}
		}
		switch num {
		case pbID:
			e.ID = string(v)
		case pbSource:
			e.Source = string(v)
		case pbSpecVersion:
			spec = v
		case pbType:
			e.Type = string(v)
		case pbAttributes:
			a, err := parseWireEntry(v)
			if err != nil {
				return Event{}, fmt.Errorf("attributes: %w", err)
			}
			attrs = append(attrs, a)
		case pbBinaryData, pbTextData:
			dataKind, data = num, v
		case pbProtoData:
			if dataKind != pbProtoData { // a new Any; otherwise merge into it
				data, anyURL = nil, nil
			}
			dataKind = pbProtoData
			var err error
			if anyURL, data, err = mergeWireAny(v, anyURL, data); err != nil {
				return Event{}, fmt.Errorf("proto_data: %w", err)
			}
		}
	}
	specVersion := SpecVersion // no allocation for the usual value
	if string(spec) != SpecVersion {
		specVersion = string(spec)
	}
	if err := checkRequired(specVersion, e); err != nil {
		return Event{}, err
	}

	// A later map entry replaces an earlier one with the same key: keep the
	// last of each key (stable sort by key, then take the last of each run).
	if len(attrs) > 1 {
		slices.SortStableFunc(attrs, func(x, y wireAttr) int { return bytes.Compare(x.key, y.key) })
	}
	for i := range attrs {
		a := &attrs[i]
		if i+1 < len(attrs) && bytes.Equal(a.key, attrs[i+1].key) {
			continue
		}
		if err := applyWireAttr(&e, a, len(attrs)); err != nil {
			return Event{}, fmt.Errorf("attribute %s: %w", a.key, err)
		}
	}

	switch dataKind {
	case pbBinaryData, pbTextData:
		e.Data = append([]byte{}, data...)
	case pbProtoData:
		e.Data = append([]byte{}, data...)
		if e.DataContentType == "" {
			e.DataContentType = ContentTypeProtobuf
		}
		if e.DataSchema == "" {
			e.DataSchema = string(anyURL)
		}
	}
	return e, nil
}

const pbProtoData protowire.Number = 8

// consumeTag is protowire.ConsumeTag with proto.Unmarshal's range check:
// ConsumeTag accepts field numbers up to 2^31-1, proto.Unmarshal (at every
// level of a message, though not inside a skipped group) only up to
// protowire.MaxValidNumber.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -2 // protowire's code for an invalid field number
	}
	return num, typ, n
}

// wireAttr is one parsed entry of the attributes map.
type wireAttr struct {
	key  []byte
	kind protowire.Number // 0 when the value has no member set
	str  []byte           // ce_string, ce_uri, ce_uri_ref, ce_bytes
	num  uint64           // ce_boolean, ce_integer
	sec  int64            // ce_timestamp
	nsec int32
}

// parseWireEntry parses a map entry {1: key, 2: value}. Within it, the last
// key wins and value messages merge.
func parseWireEntry(b []byte) (wireAttr, error) {
	var a wireAttr
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return a, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType || (num != pbMapKey && num != pbMapValue) {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return a, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return a, protowire.ParseError(n)
		}
		b = b[n:]
		if num == pbMapKey {
			if !utf8.Valid(v) {
				return a, errors.New("key is not valid UTF-8")
			}
			a.key = v
			continue
		}
		if err := mergeWireValue(&a, v); err != nil {
			return a, err
		}
	}
	return a, nil
}

// mergeWireValue merges a CloudEventAttributeValue message into a.
func mergeWireValue(a *wireAttr, b []byte) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		want := protowire.BytesType
		if num == 1 || num == 2 { // ce_boolean, ce_integer
			want = protowire.VarintType
		}
		if num < 1 || num > 7 || typ != want {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		if want == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			a.kind, a.num = num, v
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 3, 5, 6: // strings
			if !utf8.Valid(v) {
				return errors.New("string value is not valid UTF-8")
			}
			a.kind, a.str = num, v
		case 4:
			a.kind, a.str = num, v
		case 7:
			if a.kind != 7 { // a new Timestamp; otherwise merge into it
				a.sec, a.nsec = 0, 0
			}
			a.kind = 7
			if err := mergeWireTimestamp(a, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func mergeWireTimestamp(a *wireAttr, b []byte) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if (num != 1 && num != 2) || typ != protowire.VarintType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 {
			a.sec = int64(v)
		} else {
			a.nsec = int32(v)
		}
	}
	return nil
}

// mergeWireAny merges a google.protobuf.Any {1: type_url, 2: value}.
func mergeWireAny(b, url, value []byte) ([]byte, []byte, error) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		b = b[n:]
		if (num != 1 && num != 2) || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, nil, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 {
			if !utf8.Valid(v) {
				return nil, nil, errors.New("type_url is not valid UTF-8")
			}
			url = v
		} else {
			value = v
		}
	}
	return url, value, nil
}

// applyWireAttr sets the attribute a on e, as fromProto does.
func applyWireAttr(e *Event, a *wireAttr, n int) error {
	if string(a.key) == "time" {
		t, err := wireTime(a)
		if err != nil {
			return err
		}
		e.Time = t
		return nil
	}
	var dst *string
	switch string(a.key) {
	case "subject":
		dst = &e.Subject
	case "dataversion":
		dst = &e.DataVersion
	case "datacontenttype":
		dst = &e.DataContentType
	case "dataschema":
		dst = &e.DataSchema
	default:
		if !validExtensionNameBytes(a.key) {
			return nil
		}
	}
	s, err := wireString(a)
	if err != nil {
		return err
	}
	if dst != nil {
		*dst = s
		return nil
	}
	if e.Extensions == nil {
		e.Extensions = make(map[string]string, n)
	}
	e.Extensions[string(a.key)] = s
	return nil
}

func validExtensionNameBytes(k []byte) bool {
	if len(k) == 0 || len(k) > 20 {
		return false
	}
	for _, c := range k {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return !reserved[string(k)]
}

func wireTimestamp(a *wireAttr) (time.Time, error) {
	// The checks of timestamppb.Timestamp.CheckValid.
	switch {
	case a.sec < minTimestampSeconds:
		return time.Time{}, fmt.Errorf("timestamp (%d, %d) before 0001-01-01", a.sec, a.nsec)
	case a.sec > maxTimestampSeconds:
		return time.Time{}, fmt.Errorf("timestamp (%d, %d) after 9999-12-31", a.sec, a.nsec)
	case a.nsec < 0 || a.nsec >= 1e9:
		return time.Time{}, fmt.Errorf("timestamp (%d, %d) has out-of-range nanos", a.sec, a.nsec)
	}
	return time.Unix(a.sec, int64(a.nsec)).UTC(), nil
}

func wireTime(a *wireAttr) (time.Time, error) {
	switch a.kind {
	case 7:
		return wireTimestamp(a)
	case 3:
		t, err := parseTime(string(a.str))
		if err != nil {
			return time.Time{}, err
		}
		if s := t.Unix(); s < minTimestampSeconds || s > maxTimestampSeconds {
			return time.Time{}, errors.New("is outside the range of google.protobuf.Timestamp (years 1 to 9999)")
		}
		return t, nil
	default:
		return time.Time{}, fmt.Errorf("must be a timestamp, not attribute value kind %d", a.kind)
	}
}

func wireString(a *wireAttr) (string, error) {
	switch a.kind {
	case 3, 5, 6:
		return string(a.str), nil
	case 1:
		return strconv.FormatBool(protowire.DecodeBool(a.num)), nil
	case 2:
		return strconv.FormatInt(int64(int32(a.num)), 10), nil
	case 4:
		return base64.StdEncoding.EncodeToString(a.str), nil
	case 7:
		t, err := wireTimestamp(a)
		if err != nil {
			return "", err
		}
		return t.Format(TimeFormat), nil
	default:
		return "", errors.New("has no value")
	}
}
