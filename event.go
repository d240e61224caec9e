package eventkit

import (
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"
)

// SpecVersion is the CloudEvents specification version eventkit maps onto.
const SpecVersion = "1.0"

// DefaultMaxSize is the default limit on an event's encoded size (payload plus
// attributes) enforced by Validate: 1 MiB plus room for the attributes.
const DefaultMaxSize = 1<<20 + 64<<10

// DefaultSource is used by New when no source is given.
const DefaultSource = "eventkit"

// Event is the envelope of every event. It maps one-to-one onto a CloudEvent.
//
// Subject is the key: the id of the aggregate the event is about (an order
// id). Brokers partition by it and keep per-subject order where they can.
type Event struct {
	// ID is globally unique; New sets a UUIDv7. Together with Source it
	// identifies the event; consumers dedupe by it.
	ID string
	// Type names what happened, reverse-DNS or dotted: "order.created".
	Type string
	// Source identifies the producer (a URI-reference): "/orders" or "orders-service".
	Source string
	// Subject is the partition / ordering key, usually the aggregate id.
	Subject string
	// Time is when the occurrence happened (UTC, nanosecond precision kept).
	Time time.Time
	// DataVersion is the version of the payload's schema ("1", "2", ...).
	// It is carried as the CloudEvents extension "dataversion".
	DataVersion string
	// DataContentType is the media type of Data: "application/json",
	// "application/protobuf", ...
	DataContentType string
	// DataSchema optionally points at the payload's schema (a URI).
	DataSchema string
	// Data is the encoded payload.
	Data []byte
	// Extensions are further CloudEvents extension attributes, all strings:
	// traceparent, tracestate, correlationid, causationid, ... Names must be
	// lower-case ASCII letters and digits.
	Extensions map[string]string
}

// Option sets an optional attribute of an event built by New.
type Option func(*Event)

// WithSubject sets the subject (partition and ordering key).
func WithSubject(s string) Option { return func(e *Event) { e.Subject = s } }

// WithSource sets the source.
func WithSource(s string) Option { return func(e *Event) { e.Source = s } }

// WithID overrides the generated id (e.g. to make a retried command idempotent).
func WithID(id string) Option { return func(e *Event) { e.ID = id } }

// WithTime overrides the event time.
func WithTime(t time.Time) Option { return func(e *Event) { e.Time = t } }

// WithDataVersion sets the schema version of the payload.
func WithDataVersion(v string) Option { return func(e *Event) { e.DataVersion = v } }

// WithDataSchema sets the dataschema URI.
func WithDataSchema(s string) Option { return func(e *Event) { e.DataSchema = s } }

// WithExtension sets one extension attribute.
func WithExtension(name, value string) Option {
	return func(e *Event) {
		if e.Extensions == nil {
			e.Extensions = make(map[string]string, 2)
		}
		e.Extensions[name] = value
	}
}

// New builds an event of the given type carrying data (already encoded, with
// its content type). It sets a UUIDv7 id, the current time and DefaultSource
// unless options say otherwise. New does not validate; Publish does.
func New(eventType, contentType string, data []byte, opts ...Option) Event {
	e := Event{
		ID:              NewID(),
		Type:            eventType,
		Source:          DefaultSource,
		Time:            time.Now().UTC(),
		DataVersion:     "1",
		DataContentType: contentType,
		Data:            data,
	}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// NewID returns a new UUIDv7 string: unique, and ordered by creation time.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil { // only if the system's random source fails
		return uuid.NewString()
	}
	return id.String()
}

// Clone returns a deep copy of e (Data and Extensions are copied).
func (e Event) Clone() Event {
	c := e
	if e.Data != nil {
		c.Data = append([]byte(nil), e.Data...)
	}
	c.Extensions = maps.Clone(e.Extensions)
	return c
}

// Extension returns the named extension attribute ("" if absent).
func (e Event) Extension(name string) string { return e.Extensions[name] }

// String is a short human description for logs.
func (e Event) String() string {
	return fmt.Sprintf("%s %s (subject %q, %d bytes)", e.Type, e.ID, e.Subject, len(e.Data))
}

// Size is the approximate encoded size of the event: payload plus attributes.
func (e Event) Size() int {
	n := len(e.ID) + len(e.Type) + len(e.Source) + len(e.Subject) + len(e.DataVersion) +
		len(e.DataContentType) + len(e.DataSchema) + len(e.Data) + 35 // time
	for k, v := range e.Extensions {
		n += len(k) + len(v)
	}
	return n
}
