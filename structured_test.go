package eventkit_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eventkit/eventkit"
)

// The structured encoding is what the CloudEvents JSON format specifies:
// attribute names, data vs data_base64.
func TestStructuredJSONShape(t *testing.T) {
	t.Parallel()
	e := fullEvent()
	b, _ := e.MarshalJSON()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"specversion": "1.0", "id": e.ID, "source": e.Source, "type": e.Type, "subject": e.Subject,
		"time": "2026-11-29T09:30:15.123456789Z", "dataversion": "2", "datacontenttype": "application/json",
		"dataschema": e.DataSchema, "traceparent": e.Extensions["traceparent"],
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if _, ok := m["data"].(map[string]any); !ok {
		t.Errorf("JSON data not embedded as JSON: %s", b)
	}

	bin := sampleEvents()["binary"]
	b, _ = bin.MarshalJSON()
	m = nil
	_ = json.Unmarshal(b, &m)
	if _, ok := m["data"]; ok || m["data_base64"] != base64.StdEncoding.EncodeToString(bin.Data) {
		t.Errorf("binary data not in data_base64: %s", b)
	}

	// JSON content type but not valid JSON: data_base64, so the output stays JSON.
	bad := fullEvent()
	bad.Data = []byte(`{"unterminated`)
	b, _ = bad.MarshalJSON()
	if !json.Valid(b) || !strings.Contains(string(b), `"data_base64"`) {
		t.Errorf("invalid JSON payload: %s", b)
	}
	got, err := eventkit.DecodeStructured(b)
	if err != nil || string(got.Data) != string(bad.Data) {
		t.Fatalf("%v %q", err, got.Data)
	}

	// AppendJSON appends.
	out := bin.AppendJSON([]byte("x"))
	if out[0] != 'x' || !json.Valid(out[1:]) {
		t.Errorf("AppendJSON: %s", out)
	}
}

// What other CloudEvents producers write: text data in "data" as a JSON
// string, extensions of other JSON types, offsets in time, unknown members.
func TestDecodeStructuredForeign(t *testing.T) {
	t.Parallel()
	in := `{"specversion":"1.0","id":"x","source":"s","type":"t",
		"time":"2026-01-02T03:04:05.5+01:00","datacontenttype":"text/plain",
		"data":"hello \u00e9","flag":true,"count":42,"nothing":null,"obj":{"a":1},
		"Upper":"ignored","with-dash":"ignored","data_base64x":"ignored"}`
	e, err := eventkit.DecodeStructured([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Data) != "hello é" {
		t.Errorf("data %q", e.Data)
	}
	if !e.Time.Equal(time.Date(2026, 1, 2, 2, 4, 5, 5e8, time.UTC)) {
		t.Errorf("time %v", e.Time)
	}
	want := map[string]string{"flag": "true", "count": "42", "nothing": "", "obj": `{"a":1}`}
	if len(e.Extensions) != len(want) {
		t.Errorf("extensions %q", e.Extensions)
	}
	for k, v := range want {
		if e.Extensions[k] != v {
			t.Errorf("extension %s = %q, want %q", k, e.Extensions[k], v)
		}
	}

	// No datacontenttype means JSON.
	e, err = eventkit.DecodeStructured([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","data":{"k":[1,2]}}`))
	if err != nil || string(e.Data) != `{"k":[1,2]}` {
		t.Fatalf("%v %q", err, e.Data)
	}
	// data_base64 wins over data.
	e, err = eventkit.DecodeStructured([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","data":1,"data_base64":"AAE="}`))
	if err != nil || string(e.Data) != "\x00\x01" {
		t.Fatalf("%v %q", err, e.Data)
	}
}

// Invalid UTF-8 in an attribute never comes out of the decoder: it becomes
// U+FFFD (so the event can be validated and re-encoded).
func TestDecodeStructuredInvalidUTF8(t *testing.T) {
	t.Parallel()
	in := []byte("{\"specversion\":\"1.0\",\"id\":\"a\xffb\",\"source\":\"s\",\"type\":\"t\",\"subject\":\"\xc3\",\"ext\":\"\xfe\"}")
	e, err := eventkit.DecodeStructured(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{e.ID, e.Subject, e.Extensions["ext"]} {
		if !utf8.ValidString(s) || !strings.Contains(s, "\uFFFD") {
			t.Errorf("%q", s)
		}
	}
	// Encoding an event with invalid UTF-8 still gives valid JSON.
	bad := fullEvent()
	bad.Subject = "\xff"
	bad.Extensions["x"] = "\xfe"
	b, _ := bad.MarshalJSON()
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %q", b)
	}
}

func TestDecodeStructuredErrors(t *testing.T) {
	t.Parallel()
	for name, in := range map[string]string{
		"empty":             ``,
		"null":              `null`,
		"array":             `[]`,
		"string":            `"x"`,
		"truncated":         `{"specversion":"1.0","id":"x"`,
		"trailing garbage":  `{"specversion":"1.0","id":"x","source":"s","type":"t"} {}`,
		"no specversion":    `{"id":"x","source":"s","type":"t"}`,
		"specversion 0.3":   `{"specversion":"0.3","id":"x","source":"s","type":"t"}`,
		"specversion num":   `{"specversion":1.0,"id":"x","source":"s","type":"t"}`,
		"no id":             `{"specversion":"1.0","source":"s","type":"t"}`,
		"id not string":     `{"specversion":"1.0","id":1,"source":"s","type":"t"}`,
		"no source":         `{"specversion":"1.0","id":"x","type":"t"}`,
		"no type":           `{"specversion":"1.0","id":"x","source":"s"}`,
		"bad time":          `{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2026-13-01T00:00:00Z"}`,
		"time not string":   `{"specversion":"1.0","id":"x","source":"s","type":"t","time":5}`,
		"time year 10000":   `{"specversion":"1.0","id":"x","source":"s","type":"t","time":"9999-12-31T23:59:59-01:00"}`,
		"time year -1":      `{"specversion":"1.0","id":"x","source":"s","type":"t","time":"0000-01-01T00:00:00+01:00"}`,
		"bad base64":        `{"specversion":"1.0","id":"x","source":"s","type":"t","data_base64":"!!"}`,
		"base64 not string": `{"specversion":"1.0","id":"x","source":"s","type":"t","data_base64":[1]}`,
		"text data object":  `{"specversion":"1.0","id":"x","source":"s","type":"t","datacontenttype":"text/plain","data":{}}`,
		"subject number":    `{"specversion":"1.0","id":"x","source":"s","type":"t","subject":7}`,
	} {
		_, err := eventkit.DecodeStructured([]byte(in))
		var de *eventkit.DecodeError
		if !errors.As(err, &de) || !errors.Is(err, eventkit.ErrDecode) || !eventkit.IsPermanent(err) {
			t.Errorf("%s: err = %v, want a *DecodeError", name, err)
			continue
		}
		if string(de.Raw) != in || de.Format != "cloudevents+json" {
			t.Errorf("%s: DecodeError does not keep the input: %q %q", name, de.Format, de.Raw)
		}
		var e eventkit.Event
		if err := json.Unmarshal([]byte(`[`+in+`]`), &[]eventkit.Event{e}); err == nil && in != "" && in != "null" {
			// json.Unmarshal goes through UnmarshalJSON; it must fail too
			// (except where encoding/json itself rejects the input first).
			t.Errorf("%s: json.Unmarshal accepted it", name)
		}
	}
}
