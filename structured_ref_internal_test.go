package eventkit

// The decoder structured.go had before it was rewritten to scan the JSON
// object itself, kept as the reference that FuzzDecodeStructuredReference
// compares the new one with.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func decodeStructuredReference(b []byte) (Event, error) {
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

func FuzzDecodeStructuredReference(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","data":{"a":[1,"}"]},"ext":1,"e2":"v"}`))
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","datacontenttype":"text/plain","data":"hi\n","data_base64":"AA=="}`))
	f.Add([]byte(` { "specversion" : "1.0" , "\u0069d" : "x" , "source":"s","type":"t","time":"2026-01-02T03:04:05Z","id":"y"} `))
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","subject":null,"ext":{"a":"\ud83d\ude00"},"x\u0079":[true,false,null]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[1]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeStructured(b)
		want, refErr := decodeStructuredReference(b)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("decodeStructured err = %v, reference err = %v", err, refErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeStructured = %#v\nreference = %#v", got, want)
		}
	})
}
