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
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil { // rejects trailing data too
		return Event{}, err
	}
	if m == nil {
		return Event{}, errors.New("not a JSON object")
	}
	var e Event
	var spec string
	str := func(name string, dst *string) error {
		raw, ok := m[name]
		if !ok {
			return nil
		}
		if err := unmarshalJSONString(raw, dst); err != nil {
			return fmt.Errorf("attribute %s must be a string", name)
		}
		return nil
	}
	var ts string
	for _, f := range [...]struct {
		name string
		dst  *string
	}{
		{"specversion", &spec}, {"id", &e.ID}, {"source", &e.Source}, {"type", &e.Type},
		{"subject", &e.Subject}, {"time", &ts}, {"dataversion", &e.DataVersion},
		{"datacontenttype", &e.DataContentType}, {"dataschema", &e.DataSchema},
	} {
		if err := str(f.name, f.dst); err != nil {
			return Event{}, err
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
	if raw, ok := m["data_base64"]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Event{}, errors.New("data_base64 must be a string")
		}
		d, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return Event{}, fmt.Errorf("data_base64: %w", err)
		}
		e.Data = d
	} else if raw, ok := m["data"]; ok {
		if isJSONType(e.DataContentType) {
			e.Data = []byte(raw)
		} else {
			// A non-JSON payload in "data" is a JSON string holding the text.
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return Event{}, fmt.Errorf("data of type %q must be a JSON string", e.DataContentType)
			}
			e.Data = []byte(s)
		}
	}
	for k, raw := range m {
		if reserved[k] || k == "specversion" {
			continue
		}
		if !ValidExtensionName(k) {
			continue // unknown attribute names that are not valid extensions are ignored
		}
		var s string
		if err := unmarshalJSONString(raw, &s); err != nil {
			// CloudEvents extensions may be booleans or numbers: keep their
			// text, as valid UTF-8 like every decoded string.
			s = strings.ToValidUTF8(string(raw), "\uFFFD")
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]string, 4)
		}
		e.Extensions[k] = s
	}
	return e, nil
}
