package debezium

import (
	"errors"
	"fmt"
	"maps"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
)

// DecodeRecord decodes a Kafka record of the outbox event router (Kafka
// Connect, or Debezium Server's Kafka sink): key = aggregate id, value =
// payload or envelope, headers "id" and the placed columns; the record
// timestamp is the event time when no time header is placed.
func (f Format) DecodeRecord(r *kgo.Record) (eventkit.Event, error) {
	return f.Decode(Message{
		Key:   r.Key,
		Value: r.Value,
		Time:  r.Timestamp,
		Headers: func(yield func(string, string) bool) {
			for _, h := range r.Headers {
				if !yield(h.Key, string(h.Value)) {
					return
				}
			}
		},
	})
}

// DecodeHeaders decodes a message of Debezium Server's NATS JetStream or
// RabbitMQ sink: the body is the record value and the headers are the
// record's headers (serialised with debezium.format.header). Neither sink
// sends the record key, so the subject must be placed as a header.
func (f Format) DecodeHeaders(headers map[string]string, body []byte) (eventkit.Event, error) {
	return f.Decode(Message{Value: body, Headers: maps.All(headers)})
}

// Redis extended-format field names (debezium.sink.redis.message.format=extended).
const (
	redisKeyField   = "key"
	redisValueField = "value"
)

// DecodeRedis decodes a stream entry of Debezium Server's Redis sink in the
// extended message format: fields "key" and "value" and one field per
// header, its name upper-cased ("ID", "TYPE", ...). The compact format (one
// field, key: value) carries no headers, so no event id: it gives a
// DecodeError wrapping ErrNotOutbox.
func (f Format) DecodeRedis(fields map[string]string) (eventkit.Event, error) {
	value, ok := fields[redisValueField]
	if !ok {
		return eventkit.Event{}, &eventkit.DecodeError{Format: "debezium outbox (redis)", Headers: fields,
			Err: fmt.Errorf("%w: entry has no %q field (set debezium.sink.redis.message.format=extended)", ErrNotOutbox, redisValueField)}
	}
	var key []byte
	if k, ok := fields[redisKeyField]; ok {
		key = []byte(k)
	}
	return f.Decode(Message{Key: key, Value: []byte(value), Headers: func(yield func(string, string) bool) {
		for k, v := range fields {
			if k == redisKeyField || k == redisValueField {
				continue
			}
			if !yield(k, v) {
				return
			}
		}
	}})
}

// recorder is implemented by the Kafka adapter's deliveries.
type recorder interface{ Record() *kgo.Record }

// decodeDelivery decodes what an adapter delivered as the router's output.
// broker names the adapter (Capabilities().Name).
func (f Format) decodeDelivery(brokerName string, d interface {
	DecodeErr() error
}) (eventkit.Event, error) {
	if r, ok := d.(recorder); ok {
		return f.DecodeRecord(r.Record())
	}
	var de *eventkit.DecodeError
	if !errors.As(d.DecodeErr(), &de) {
		return eventkit.Event{}, d.DecodeErr()
	}
	if brokerName == "redis" {
		// The Redis adapter keeps every field but "data" in Headers.
		fields := maps.Clone(de.Headers)
		if fields == nil {
			fields = map[string]string{}
		}
		return f.DecodeRedis(fields)
	}
	return f.DecodeHeaders(de.Headers, de.Raw)
}
