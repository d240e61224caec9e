package debezium

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// Encoded is one message of the outbox event router as Encode builds it:
// what the sink would deliver for one row of eventkit's outbox table.
type Encoded struct {
	// Key is the record key: the subject column through Format.Key (the
	// empty string for an event without subject, as the router copies it).
	Key []byte
	// Value is the record value (the data column, or the envelope, through
	// Format.Value); nil for a null value (an event without data, no
	// envelope).
	Value []byte
	// Headers are the placed columns, in the order of docs/debezium.md's
	// table.fields.additional.placement, "id" first. A nil header value is
	// a null (a NULL extensions column under Raw headers).
	Headers []Header
}

// column is one outbox column's text value: null when !ok.
type column struct {
	v  string
	ok bool
}

// Encode returns the message the outbox event router publishes, under the
// configuration f describes, for the outbox row that eventkit's store wrote
// for e (its id, type, source, subject, event_time, data_version,
// data_content_type, data_schema, extensions and data columns): what
// Debezium would deliver for it, which f.Decode reads back as e. The
// placement is docs/debezium.md's: every attribute a header named by
// f.Names (and each f.Extensions attribute a header of its own); with
// f.Envelope the type is also placed in the envelope
// (type:envelope:<Names.Type>), so that the value is never null. An event
// Decode could not read back (a non-UTF-8 payload under a JSON value
// converter without BinaryPayload, an envelope under a Raw value converter)
// is an error.
func (f Format) Encode(e eventkit.Event) (Encoded, error) {
	n := f.Names.withDefaults()
	var out Encoded
	var err error
	if out.Key, err = encodeScalar(f.Key, column{e.Subject, true}, false); err != nil {
		return out, err
	}
	ext := column{}
	if len(e.Extensions) > 0 {
		b, err := json.Marshal(e.Extensions)
		if err != nil {
			return out, err
		}
		ext = column{string(b), true}
	}
	cols := []struct {
		name     string
		c        column
		optional bool
	}{
		{n.ID, column{e.ID, true}, false},
		{n.Type, column{e.Type, true}, false},
		{n.Source, column{e.Source, true}, false},
		{n.Subject, column{e.Subject, true}, false},
		{n.Time, column{e.Time.UTC().Format(time.RFC3339Nano), true}, false},
		{n.DataVersion, column{e.DataVersion, true}, false},
		{n.DataContentType, column{e.DataContentType, true}, false},
		{n.DataSchema, column{e.DataSchema, true}, false},
		{n.Extensions, ext, true},
	}
	names := make([]string, 0, len(f.Extensions))
	for x := range f.Extensions {
		names = append(names, x)
	}
	slices.Sort(names)
	for _, x := range names {
		v, ok := e.Extensions[x]
		cols = append(cols, struct {
			name     string
			c        column
			optional bool
		}{f.Extensions[x], column{v, ok}, true})
	}
	for _, c := range cols {
		b, err := encodeScalar(f.Headers, c.c, c.optional)
		if err != nil {
			return out, err
		}
		out.Headers = append(out.Headers, Header{Key: c.name, Value: string(b)})
	}
	out.Value, err = f.encodeValue(e, n)
	return out, err
}

// encodeScalar writes one string column (null when !c.ok) as converter conv
// writes it: Raw the text (nil for null), JSON a JSON string literal,
// JSONWithSchema {"schema": {"type": "string", ...}, "payload": ...}.
func encodeScalar(conv Converter, c column, optional bool) ([]byte, error) {
	switch conv {
	case Raw:
		if !c.ok {
			return nil, nil
		}
		return []byte(c.v), nil
	case JSON:
		if !c.ok {
			return []byte("null"), nil
		}
		return json.Marshal(c.v)
	case JSONWithSchema:
		var p any
		if c.ok {
			p = c.v
		}
		return json.Marshal(withSchema{Schema: schema{Type: "string", Optional: optional}, Payload: p})
	}
	return nil, fmt.Errorf("debezium: unknown converter %v", conv)
}

type schema struct {
	Type     string   `json:"type"`
	Optional bool     `json:"optional"`
	Fields   []schema `json:"fields,omitempty"`
	Field    string   `json:"field,omitempty"`
}

type withSchema struct {
	Schema  schema `json:"schema"`
	Payload any    `json:"payload"`
}

// encodeValue is the record value: the data column (bytea/LONGBLOB), alone
// or in the envelope.
func (f Format) encodeValue(e eventkit.Event, n Names) ([]byte, error) {
	var payload any // the data column's JSON node (nil: null)
	if e.Data != nil {
		switch {
		case f.Value == Raw:
		case f.Value == JSONWithSchema || f.BinaryPayload:
			payload = base64.StdEncoding.EncodeToString(e.Data)
		case !utf8.Valid(e.Data):
			return nil, fmt.Errorf("debezium: event %s: data is not UTF-8 text, which a JSON value converter without BinaryPayload cannot carry", e.ID)
		default:
			payload = string(e.Data)
		}
	}
	// With schemas the payload is always base64 bytes: the data column is
	// bytea / LONGBLOB.
	dataSchema := schema{Type: "bytes", Optional: true, Field: "payload"}
	switch {
	case f.Value == Raw && f.Envelope:
		return nil, errors.New("debezium: an envelope needs a JSON value converter, not a raw one")
	case f.Value == Raw:
		if e.Data == nil {
			return nil, nil
		}
		return e.Data, nil
	case !f.Envelope && e.Data == nil:
		return nil, nil // the router's value is null
	case !f.Envelope && f.Value == JSON:
		return json.Marshal(payload)
	case !f.Envelope:
		dataSchema.Field = ""
		return json.Marshal(withSchema{Schema: dataSchema, Payload: payload})
	}
	env := map[string]any{"payload": payload, n.Type: e.Type}
	if f.Value == JSON {
		return json.Marshal(env)
	}
	return json.Marshal(withSchema{
		Schema:  schema{Type: "struct", Fields: []schema{dataSchema, {Type: "string", Field: n.Type}}},
		Payload: env,
	})
}

// RawPublisher is a broker that publishes a body with headers as another
// tool would, bypassing eventkit's encoding: the NATS JetStream and
// in-memory adapters (PublishRaw).
type RawPublisher interface {
	PublishRaw(ctx context.Context, topic string, headers map[string]string, body []byte) error
}

// RecordPublisher is a broker that produces Kafka records as they are: the
// Kafka adapter (PublishRecords).
type RecordPublisher interface {
	PublishRecords(ctx context.Context, recs ...*kgo.Record) error
}

// ErrNullValue is returned (permanent, see eventkit.IsPermanent) by a
// Publisher on a sink other than Kafka for an event without data under a
// Format without Envelope: the router's value is null, which Debezium
// Server's NATS JetStream sink skips (the event would be lost), so the
// Format must place a column in the envelope (docs/debezium.md).
var ErrNullValue = errors.New("debezium: the router's value is null (no data, no envelope), which Debezium Server's NATS JetStream sink skips")

// Publisher returns a broker.Publisher that publishes each event as the
// message the outbox event router (configured as f describes, see Encode)
// publishes for its outbox row, through b: Kafka records (key, value,
// headers, timestamp now, as the router takes the change event's ts_ms)
// when b is a RecordPublisher (the Kafka adapter), else bodies with headers
// as Debezium Server's NATS JetStream and RabbitMQ sinks send them (no key:
// the subject is a header) when b is a RawPublisher (the NATS and memory
// adapters). It lets eventkit's relay stand in for Debezium in tests and in
// `eventkit demo --relay-format debezium`:
//
//	relay := outbox.NewRelay(store, debezium.Publisher(natsBroker, f), outbox.RelayConfig{})
//	c, err := consumer.New(debezium.Wrap(natsBroker, f), cfg)
//
// Publish validates the events as the adapters do (adapterkit.ValidateEvents),
// then publishes them in order, one at a time, stopping at the first
// failure: the events from there on are named in the *broker.PublishError.
// An event Encode rejects fails permanently (eventkit.IsPermanent), as does
// ErrNullValue. Publisher returns an error wrapping errors.ErrUnsupported if
// b can publish neither records nor raw messages (RabbitMQ, Redis).
func Publisher(b broker.Publisher, f Format) (broker.Publisher, error) {
	switch b.(type) {
	case RecordPublisher, RawPublisher:
		return &publisher{b: b, f: f}, nil
	}
	return nil, fmt.Errorf("debezium: %T publishes neither Kafka records nor raw messages: %w", b, errors.ErrUnsupported)
}

type publisher struct {
	b broker.Publisher
	f Format
}

func (p *publisher) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if err := adapterkit.ValidateEvents(topic, math.MaxInt, events); err != nil {
		return err
	}
	rp, kafka := p.b.(RecordPublisher)
	for i, e := range events {
		fail := func(err error) error {
			pe := adapterkit.FailAll(topic, events[i:], err)
			for j := range pe.Failed {
				pe.Failed[j].Index += i
			}
			return pe
		}
		m, err := p.f.Encode(e)
		if err != nil {
			return fail(eventkit.Permanent(err))
		}
		if kafka {
			rec := &kgo.Record{Topic: topic, Key: m.Key, Value: m.Value, Timestamp: time.Now()}
			for _, h := range m.Headers {
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
			}
			err = rp.PublishRecords(ctx, rec)
		} else {
			if m.Value == nil {
				return fail(eventkit.Permanent(fmt.Errorf("event %s: %w", e.ID, ErrNullValue)))
			}
			hs := make(map[string]string, len(m.Headers))
			for _, h := range m.Headers {
				hs[h.Key] = h.Value
			}
			err = p.b.(RawPublisher).PublishRaw(ctx, topic, hs, m.Value)
		}
		if err != nil {
			return fail(err)
		}
	}
	return nil
}
