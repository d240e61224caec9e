package eventkit

import (
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"
)

// Binding describes how an event maps onto a protocol's message headers in
// CloudEvents binary content mode: every attribute becomes a header named
// Prefix+attribute, datacontenttype goes in ContentTypeKey, and the payload is
// the message body unchanged.
type Binding struct {
	Name           string // "nats", "kafka", "amqp", ...
	Prefix         string // "ce-", "ce_", "cloudEvents_"
	ContentTypeKey string // "content-type"; empty when the protocol has its own content-type field
}

// The bindings of the CloudEvents 1.0 protocol specifications.
var (
	// NATSBinding is the NATS protocol binding (headers "ce-id", ...; "content-type").
	NATSBinding = Binding{Name: "nats", Prefix: "ce-", ContentTypeKey: "content-type"}
	// KafkaBinding is the Kafka protocol binding (headers "ce_id", ...; "content-type").
	KafkaBinding = Binding{Name: "kafka", Prefix: "ce_", ContentTypeKey: "content-type"}
	// AMQPBinding is the AMQP binding (application properties "cloudEvents_id", ...;
	// the content type is the message's content-type property, set by the adapter).
	AMQPBinding = Binding{Name: "amqp", Prefix: "cloudEvents_"}
	// RedisBinding is used for Redis Streams entries, which have no CloudEvents
	// binding of their own: fields "ce_id", ... like Kafka headers.
	RedisBinding = KafkaBinding
)

// TimeFormat is the format of the time attribute in headers and JSON (RFC 3339
// with nanoseconds, as CloudEvents requires).
const TimeFormat = time.RFC3339Nano

// Headers calls set for each header that carries e in binary mode. The payload
// (e.Data) is the message body.
func (b Binding) Headers(e Event, set func(key, value string)) {
	p := b.Prefix
	n := headerNamesFor(p) // Prefix+attribute, without allocating for the standard prefixes
	set(n.specversion, SpecVersion)
	set(n.id, e.ID)
	set(n.source, e.Source)
	set(n.typ, e.Type)
	if !e.Time.IsZero() {
		set(n.time, e.Time.UTC().Format(TimeFormat))
	}
	if e.Subject != "" {
		set(n.subject, e.Subject)
	}
	if e.DataVersion != "" {
		set(n.dataversion, e.DataVersion)
	}
	if e.DataSchema != "" {
		set(n.dataschema, e.DataSchema)
	}
	if e.DataContentType != "" && b.ContentTypeKey != "" {
		set(b.ContentTypeKey, e.DataContentType)
	}
	for k, v := range e.Extensions {
		if reserved[k] || k == "specversion" {
			continue // an extension must not override an attribute set above
		}
		set(p+k, v)
	}
}

// HeaderCount is the number of headers Headers sets for e (to size maps).
func (b Binding) HeaderCount(e Event) int { return 9 + len(e.Extensions) }

// Decode reads an event in binary mode from headers and body. Headers that do
// not start with the prefix (and are not the content-type key) are ignored.
// contentType is the protocol's own content type field when ContentTypeKey is
// empty (AMQP), otherwise "". The body is used as e.Data without copying.
// A missing or malformed required attribute gives a *DecodeError that keeps
// the body and headers.
func (b Binding) Decode(headers iter.Seq2[string, string], contentType string, body []byte) (Event, error) {
	var e Event
	var spec string
	var err error
	var seenTime string
	e.DataContentType = contentType
	for k, v := range headers {
		if b.ContentTypeKey != "" && strings.EqualFold(k, b.ContentTypeKey) {
			e.DataContentType = v
			continue
		}
		if len(k) <= len(b.Prefix) || !strings.EqualFold(k[:len(b.Prefix)], b.Prefix) {
			continue
		}
		name := strings.ToLower(k[len(b.Prefix):])
		switch name {
		case "specversion":
			spec = v
		case "id":
			e.ID = v
		case "source":
			e.Source = v
		case "type":
			e.Type = v
		case "subject":
			e.Subject = v
		case "time":
			seenTime = v
		case "dataversion":
			e.DataVersion = v
		case "dataschema":
			e.DataSchema = v
		case "datacontenttype":
			e.DataContentType = v
		default:
			if ValidExtensionName(name) {
				if e.Extensions == nil {
					e.Extensions = make(map[string]string, 4)
				}
				e.Extensions[name] = v
			}
		}
	}
	if seenTime != "" {
		e.Time, err = parseTime(seenTime)
		if err != nil {
			err = fmt.Errorf("attribute time: %w", err)
		}
	}
	if err == nil {
		err = checkRequired(spec, e)
	}
	if err != nil {
		h := map[string]string{}
		for k, v := range headers {
			h[k] = v
		}
		return Event{}, &DecodeError{Format: b.Name + " binary", Raw: body, Headers: h, Err: err}
	}
	e.Data = body
	return e, nil
}

func checkRequired(spec string, e Event) error {
	switch {
	case spec == "":
		return errors.New("attribute specversion is missing (not a CloudEvent)")
	case spec != SpecVersion:
		return fmt.Errorf("specversion %q is not supported (want %q)", spec, SpecVersion)
	case e.ID == "":
		return errors.New("attribute id is missing")
	case e.Source == "":
		return errors.New("attribute source is missing")
	case e.Type == "":
		return errors.New("attribute type is missing")
	}
	return nil
}

// MapHeaders adapts a map to the iterator Decode takes.
func MapHeaders(m map[string]string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for k, v := range m {
			if !yield(k, v) {
				return
			}
		}
	}
}
