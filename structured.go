package eventkit

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// StructuredContentType is the media type of structured-mode CloudEvents in JSON.
const StructuredContentType = "application/cloudevents+json"

// MarshalJSON encodes e as a CloudEvent in structured JSON mode. A JSON
// payload (datacontenttype application/json or */*+json, or empty) that is
// valid JSON is written as "data" unchanged; any other payload as
// "data_base64".
func (e Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 256+len(e.Data)*4/3)), nil
}

// AppendJSON appends the structured JSON encoding of e to b.
func (e Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	if e.Subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, e.Subject)
	}
	if !e.Time.IsZero() {
		b = append(b, `,"time":"`...)
		b = e.Time.UTC().AppendFormat(b, TimeFormat)
		b = append(b, '"')
	}
	if e.DataVersion != "" {
		b = append(b, `,"dataversion":`...)
		b = appendString(b, e.DataVersion)
	}
	if e.DataContentType != "" {
		b = append(b, `,"datacontenttype":`...)
		b = appendString(b, e.DataContentType)
	}
	if e.DataSchema != "" {
		b = append(b, `,"dataschema":`...)
		b = appendString(b, e.DataSchema)
	}
	for k, v := range e.Extensions {
		b = append(b, ',')
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, v)
	}
	if e.Data != nil {
		if isJSONType(e.DataContentType) && json.Valid(e.Data) {
			b = append(b, `,"data":`...)
			b = append(b, e.Data...)
		} else {
			b = append(b, `,"data_base64":"`...)
			b = base64.StdEncoding.AppendEncode(b, e.Data)
			b = append(b, '"')
		}
	}
	return append(b, '}')
}

func isJSONType(ct string) bool {
	if ct == "" {
		return true
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(strings.ToLower(ct))
	return ct == "application/json" || ct == "text/json" || strings.HasSuffix(ct, "+json")
}

func appendString(b []byte, s string) []byte {
	if !needsEscape(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s) // never fails for a string; invalid UTF-8 becomes U+FFFD
	return append(b, q...)
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// UnmarshalJSON decodes a structured-mode CloudEvent. Errors are *DecodeError.
func (e *Event) UnmarshalJSON(b []byte) error {
	ev, err := DecodeStructured(b)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// DecodeStructured decodes a CloudEvent in structured JSON mode. Any failure
// is a *DecodeError that keeps b.
func DecodeStructured(b []byte) (Event, error) {
	e, err := decodeStructured(b)
	if err != nil {
		return Event{}, &DecodeError{Format: "cloudevents+json", Raw: b, Err: err}
	}
	return e, nil
}

func decodeStructured(b []byte) (Event, error) {
	// Validate once, then scan the object's members without building a map:
	// a fraction of the allocations of json.Unmarshal into a map.
	if !json.Valid(b) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil { // for the error's detail
			return Event{}, err
		}
		return Event{}, errors.New("invalid JSON")
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		if b[i] == 'n' { // null
			return Event{}, errors.New("not a JSON object")
		}
		return Event{}, fmt.Errorf("not a JSON object but a JSON %s", jsonKind(b[i]))
	}

	// The last member of each name wins, as with json.Unmarshal into a map.
	const (
		aSpec = iota
		aID
		aSource
		aType
		aSubject
		aTime
		aDataVersion
		aContentType
		aSchema
		aData
		aDataBase64
		nAttrs
	)
	var attrs [nAttrs][]byte // raw JSON values; nil when absent
	var extBuf [8]jsonMember
	exts := extBuf[:0]
	for i = skipSpace(b, i+1); b[i] != '}'; {
		// b is valid JSON: a key string, a colon, a value, then ',' or '}'.
		kEnd := skipValue(b, i)
		key, err := jsonMemberName(b[i:kEnd])
		if err != nil {
			return Event{}, err
		}
		vStart := skipSpace(b, skipSpace(b, kEnd)+1)
		vEnd := skipValue(b, vStart)
		val := b[vStart:vEnd]
		switch string(key) {
		case "specversion":
			attrs[aSpec] = val
		case "id":
			attrs[aID] = val
		case "source":
			attrs[aSource] = val
		case "type":
			attrs[aType] = val
		case "subject":
			attrs[aSubject] = val
		case "time":
			attrs[aTime] = val
		case "dataversion":
			attrs[aDataVersion] = val
		case "datacontenttype":
			attrs[aContentType] = val
		case "dataschema":
			attrs[aSchema] = val
		case "data":
			attrs[aData] = val
		case "data_base64":
			attrs[aDataBase64] = val
		default:
			if validExtensionNameBytes(key) {
				exts = append(exts, jsonMember{key, val})
			}
		}
		i = skipSpace(b, vEnd)
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}

	var e Event
	var spec, ts string
	for _, f := range [...]struct {
		attr int
		name string
		dst  *string
	}{
		{aSpec, "specversion", &spec}, {aID, "id", &e.ID}, {aSource, "source", &e.Source}, {aType, "type", &e.Type},
		{aSubject, "subject", &e.Subject}, {aTime, "time", &ts}, {aDataVersion, "dataversion", &e.DataVersion},
		{aContentType, "datacontenttype", &e.DataContentType}, {aSchema, "dataschema", &e.DataSchema},
	} {
		if raw := attrs[f.attr]; raw != nil {
			if err := unmarshalJSONString(raw, f.dst); err != nil {
				return Event{}, fmt.Errorf("attribute %s must be a string", f.name)
			}
		}
	}
	if ts != "" {
		t, err := parseTime(ts)
		if err != nil {
			return Event{}, fmt.Errorf("attribute time: %w", err)
		}
		e.Time = t
	}
	if err := checkRequired(spec, e); err != nil {
		return Event{}, err
	}
	if raw := attrs[aDataBase64]; raw != nil {
		var s string
		if err := unmarshalJSONString(raw, &s); err != nil {
			return Event{}, errors.New("data_base64 must be a string")
		}
		d, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return Event{}, fmt.Errorf("data_base64: %w", err)
		}
		e.Data = d
	} else if raw := attrs[aData]; raw != nil {
		if isJSONType(e.DataContentType) {
			e.Data = append([]byte{}, raw...) // a copy: never alias b
		} else {
			// A non-JSON payload in "data" is a JSON string holding the text.
			var s string
			if err := unmarshalJSONString(raw, &s); err != nil {
				return Event{}, fmt.Errorf("data of type %q must be a JSON string", e.DataContentType)
			}
			e.Data = []byte(s)
		}
	}
	for _, m := range exts {
		var s string
		if err := unmarshalJSONString(m.value, &s); err != nil {
			// CloudEvents extensions may be booleans or numbers: keep their
			// text, as valid UTF-8 like every decoded string.
			s = strings.ToValidUTF8(string(m.value), "\uFFFD")
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]string, len(exts))
		}
		e.Extensions[string(m.name)] = s
	}
	return e, nil
}
