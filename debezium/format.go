package debezium

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math"
	"strings"
	"time"

	"github.com/eventkit/eventkit"
)

// Converter is how Kafka Connect (or Debezium Server's debezium.format.*)
// serialised the key, the value or the headers of a record.
type Converter int

const (
	// Raw: the bytes are the column's value as it is: Kafka Connect's
	// StringConverter and SimpleHeaderConverter, Debezium's
	// BinaryDataConverter, Debezium Server's "simplestring" and "binary"
	// formats.
	Raw Converter = iota
	// JSON: Kafka Connect's JsonConverter with schemas.enable=false
	// (Debezium Server's "json" format with
	// debezium.format.*.schemas.enable=false): a string is a JSON string
	// literal, a bytes column a base64 JSON string.
	JSON
	// JSONWithSchema: JsonConverter with schemas.enable=true, the default
	// of both Kafka Connect and Debezium Server: every value is wrapped in
	// {"schema": ..., "payload": ...}; a bytes column is a base64 string
	// whose schema says "bytes".
	JSONWithSchema
)

func (c Converter) String() string {
	switch c {
	case Raw:
		return "raw"
	case JSON:
		return "json"
	case JSONWithSchema:
		return "json+schema"
	}
	return fmt.Sprintf("Converter(%d)", int(c))
}

// Names are the names the outbox event router gives each CloudEvents
// attribute in the message: the alias of its column in
// table.fields.additional.placement (a header or, with Envelope, a field of
// the value's envelope). An empty name takes the default shown, which is the
// alias docs/debezium.md configures.
type Names struct {
	ID              string // "id": the router always writes the event id column as header "id"
	Type            string // "type"
	Source          string // "source"
	Subject         string // "subject"; when absent from the message, the record key is the subject
	Time            string // "time"
	DataVersion     string // "dataversion"
	DataContentType string // "datacontenttype"
	DataSchema      string // "dataschema"
	// Extensions is the header or field holding eventkit's extensions
	// column, a JSON object of strings (subjectseq among them).
	Extensions string // "extensions"
}

func (n Names) withDefaults() Names {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&n.ID, "id")
	def(&n.Type, "type")
	def(&n.Source, "source")
	def(&n.Subject, "subject")
	def(&n.Time, "time")
	def(&n.DataVersion, "dataversion")
	def(&n.DataContentType, "datacontenttype")
	def(&n.DataSchema, "dataschema")
	def(&n.Extensions, "extensions")
	return n
}

// Format describes the messages one Debezium deployment publishes: the
// converters it runs and the router options that change the messages'
// shape. The zero Format is the Kafka Connect configuration of
// docs/debezium.md (StringConverter keys, BinaryDataConverter values,
// SimpleHeaderConverter headers, every attribute a header).
type Format struct {
	Key, Value, Headers Converter

	// Envelope is set when table.fields.additional.placement puts at least
	// one column in the envelope: the value is then an object
	// {"payload": ..., "<alias>": ...} (it needs a JSON value converter).
	// Attributes are looked up in the headers first, then in the envelope.
	Envelope bool
	// BinaryPayload says the payload column is binary (eventkit's data
	// column: bytea, LONGBLOB), so that with the JSON value converter and
	// no schema a JSON string payload is base64 and is decoded. With
	// JSONWithSchema the payload's schema ("bytes") says so by itself.
	BinaryPayload bool

	// Names of the attributes in the messages (defaults: see Names).
	Names Names
	// Extensions maps an extension attribute to a header or envelope field
	// of its own (for example {"subjectseq": "subjectseq"} for a column the
	// user placed), read on top of the Names.Extensions object.
	Extensions map[string]string

	// DefaultSource is the event source when the message carries none (an
	// outbox table of the router's default layout has no source column).
	// Empty: a message without source is rejected.
	DefaultSource string
	// DefaultType is the event type when the message carries none. Empty:
	// a message without type is rejected.
	DefaultType string
	// DefaultContentType is the datacontenttype when the message carries
	// none. Empty: the event has none.
	DefaultContentType string
}

// Header is one message header as the sink wrote it.
type Header struct{ Key, Value string }

// Message is one message of the outbox event router, as a sink delivered
// it: Key is the record key (nil if none), Value the record value (nil for
// a null value), Headers its headers.
type Message struct {
	Key     []byte
	Value   []byte
	Headers iter.Seq2[string, string]
	// Time is the record's timestamp (Kafka: the router sets it from the
	// change event's ts_ms or table.field.event.timestamp), the event time
	// when the message has no time attribute. Zero if the sink has none.
	Time time.Time
}

// ErrNotOutbox is wrapped by the DecodeError of a message that is not an
// outbox event (no id header, a tombstone, a Redis entry without headers).
var ErrNotOutbox = errors.New("debezium: not an outbox event router message")

// Decode turns one message of the outbox event router into an event. A
// message it cannot decode gives a *eventkit.DecodeError (errors.Is
// ErrDecode) keeping the value and the headers; it never panics.
func (f Format) Decode(m Message) (eventkit.Event, error) {
	var hs []Header
	if m.Headers != nil {
		for k, v := range m.Headers {
			hs = append(hs, Header{k, v})
		}
	}
	e, err := f.decode(m.Key, m.Value, m.Time, hs)
	if err != nil {
		h := make(map[string]string, len(hs))
		for _, x := range hs {
			h[x.Key] = x.Value
		}
		return eventkit.Event{}, &eventkit.DecodeError{Format: "debezium outbox", Raw: m.Value, Headers: h, Err: err}
	}
	return e, nil
}

func (f Format) decode(key, value []byte, ts time.Time, hs []Header) (eventkit.Event, error) {
	n := f.Names.withDefaults()
	data, env, err := f.value(value)
	if err != nil {
		return eventkit.Event{}, err
	}
	// attr finds an attribute: a header (names compared case-insensitively:
	// Debezium Server's Redis sink upper-cases them), else an envelope field.
	attr := func(name string) (string, bool, error) {
		for _, h := range hs {
			if strings.EqualFold(h.Key, name) {
				return scalar(f.Headers, []byte(h.Value), "header "+h.Key)
			}
		}
		if raw, ok := env[name]; ok {
			return jsonScalar(raw, "envelope field "+name)
		}
		return "", false, nil
	}
	var e eventkit.Event
	var ok bool
	if e.ID, ok, err = attr(n.ID); err != nil {
		return e, err
	} else if !ok || e.ID == "" {
		return e, fmt.Errorf("%w: no %q header", ErrNotOutbox, n.ID)
	}
	for _, a := range []struct {
		name string
		dst  *string
		def  string
	}{
		{n.Type, &e.Type, f.DefaultType},
		{n.Source, &e.Source, f.DefaultSource},
		{n.DataVersion, &e.DataVersion, ""},
		{n.DataContentType, &e.DataContentType, f.DefaultContentType},
		{n.DataSchema, &e.DataSchema, ""},
	} {
		v, _, err := attr(a.name)
		if err != nil {
			return e, err
		}
		if v == "" {
			v = a.def
		}
		*a.dst = v
	}
	subj, ok, err := attr(n.Subject)
	if err != nil {
		return e, err
	}
	if !ok && key != nil {
		if subj, _, err = scalar(f.Key, key, "key"); err != nil {
			return e, err
		}
	}
	e.Subject = subj
	tm, _, err := attr(n.Time)
	if err != nil {
		return e, err
	}
	if tm != "" {
		if e.Time, err = time.Parse(time.RFC3339Nano, tm); err != nil {
			return e, fmt.Errorf("bad time %q: %w", tm, err)
		}
	}
	if e.Time.IsZero() {
		e.Time = ts.UTC()
	}
	ext, _, err := attr(n.Extensions)
	if err != nil {
		return e, err
	}
	if ext != "" && ext != "null" {
		if err := json.Unmarshal([]byte(ext), &e.Extensions); err != nil {
			return e, fmt.Errorf("extensions %q are not a JSON object of strings: %w", ext, err)
		}
	}
	for x, name := range f.Extensions {
		v, ok, err := attr(name)
		if err != nil {
			return e, err
		}
		if ok && v != "" {
			if e.Extensions == nil {
				e.Extensions = map[string]string{}
			}
			e.Extensions[x] = v
		}
	}
	if len(e.Extensions) == 0 {
		e.Extensions = nil
	}
	if len(data) > 0 {
		e.Data = data
	}
	if err := e.Validate(math.MaxInt); err != nil {
		return eventkit.Event{}, err
	}
	if _, _, err := eventkit.SubjectSeq(e); err != nil {
		return eventkit.Event{}, err
	}
	return e, nil
}

// value splits a record value into the payload bytes and, with Envelope,
// the envelope's other fields.
func (f Format) value(value []byte) (data []byte, env map[string]json.RawMessage, err error) {
	if f.Value == Raw {
		if f.Envelope {
			return nil, nil, errors.New("an envelope needs a JSON value converter, not a raw one")
		}
		return value, nil, nil
	}
	if len(bytes.TrimSpace(value)) == 0 {
		return nil, nil, nil // a null value: the event has no data
	}
	node, schema := json.RawMessage(value), json.RawMessage(nil)
	if f.Value == JSONWithSchema {
		var w struct {
			Schema  json.RawMessage `json:"schema"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := strictObject(value, &w); err != nil {
			return nil, nil, fmt.Errorf("value is not a JsonConverter {schema, payload} object: %w", err)
		}
		node, schema = w.Payload, w.Schema
	}
	if f.Envelope {
		if err := strictObject(node, &env); err != nil {
			return nil, nil, fmt.Errorf("value is not an envelope object: %w", err)
		}
		node = env["payload"]
		delete(env, "payload")
		schema = fieldSchema(schema, "payload")
	}
	binary := f.BinaryPayload
	if schema != nil {
		var s struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(schema, &s)
		binary = s.Type == "bytes"
	}
	data, err = payload(node, binary)
	return data, env, err
}

// payload is the event data a JSON payload node carries: a string is the
// column's text (base64-decoded for a binary column), null nothing, and an
// object or array (table.expand.json.payload) the JSON itself.
func payload(node json.RawMessage, binary bool) ([]byte, error) {
	t := bytes.TrimSpace(node)
	switch {
	case len(t) == 0 || string(t) == "null":
		return nil, nil
	case t[0] == '"':
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return nil, fmt.Errorf("bad payload string: %w", err)
		}
		if !binary {
			return []byte(s), nil
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("binary payload is not base64: %w", err)
		}
		return b, nil
	default:
		if !json.Valid(t) {
			return nil, errors.New("payload is not valid JSON")
		}
		return t, nil
	}
}

// fieldSchema is the schema of field name in a struct schema (nil if none).
func fieldSchema(schema json.RawMessage, name string) json.RawMessage {
	if schema == nil {
		return nil
	}
	var s struct {
		Fields []struct {
			Field string `json:"field"`
		} `json:"fields"`
	}
	var raw struct {
		Fields []json.RawMessage `json:"fields"`
	}
	if json.Unmarshal(schema, &s) != nil || json.Unmarshal(schema, &raw) != nil || len(s.Fields) != len(raw.Fields) {
		return nil
	}
	for i, x := range s.Fields {
		if x.Field == name {
			return raw.Fields[i]
		}
	}
	return nil
}

// strictObject decodes a JSON object (not null, not another type).
func strictObject(b []byte, v any) error {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return errors.New("not a JSON object")
	}
	return json.Unmarshal(t, v)
}

// scalar decodes one key or header value written by converter c. ok is false
// for a null.
func scalar(c Converter, b []byte, what string) (string, bool, error) {
	switch c {
	case Raw:
		return string(b), true, nil
	case JSON:
		return jsonScalar(b, what)
	case JSONWithSchema:
		var w struct {
			Schema  json.RawMessage `json:"schema"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := strictObject(b, &w); err != nil {
			return "", false, fmt.Errorf("%s is not a JsonConverter {schema, payload} object: %w", what, err)
		}
		return jsonScalar(w.Payload, what)
	}
	return "", false, fmt.Errorf("%s: unknown converter %v", what, c)
}

// jsonScalar reads a JSON string, number or boolean as text; an object or
// array is kept as its JSON text (an extensions column the connector
// expanded); null is absent.
func jsonScalar(b []byte, what string) (string, bool, error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || string(t) == "null" {
		return "", false, nil
	}
	if !json.Valid(t) {
		return "", false, fmt.Errorf("%s is not JSON: %.40q", what, t)
	}
	if t[0] == '"' {
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return "", false, fmt.Errorf("%s: %w", what, err)
		}
		return s, true, nil
	}
	return string(t), true, nil
}

// MarshalText writes the converter's name ("raw", "json", "json+schema").
func (c Converter) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a converter's name.
func (c *Converter) UnmarshalText(b []byte) error {
	switch string(b) {
	case "raw", "":
		*c = Raw
	case "json":
		*c = JSON
	case "json+schema":
		*c = JSONWithSchema
	default:
		return fmt.Errorf("debezium: unknown converter %q (raw, json, json+schema)", b)
	}
	return nil
}
