// Package debezium reads what Debezium's outbox event router publishes from
// eventkit's outbox table, so that Debezium (Kafka Connect or Debezium
// Server) can be the relay instead of eventkit's: each message decodes to
// the eventkit.Event the producer added, with its event id (so the inbox
// drops duplicates exactly as with eventkit's relay), its subject (the
// aggregate id: per-subject order and strict order work unchanged) and its
// subjectseq extension. A message that is not an outbox event gives one
// *eventkit.DecodeError keeping its bytes; decoding never panics.
//
// docs/debezium.md gives the connector and router configuration that maps
// eventkit's outbox columns onto the router's options (route.by.field=topic,
// table.field.event.key=subject, table.field.event.payload=data, the other
// attributes as headers via table.fields.additional.placement) for Kafka
// Connect and for Debezium Server's NATS JetStream, RabbitMQ and Redis
// sinks. A Format describes one deployment's converters and router options;
// the zero Format is the Kafka Connect configuration of docs/debezium.md.
//
// Wrap plugs a Format into any broker.Broker, so the consumer runtime reads
// Debezium's messages with no other change:
//
//	b := debezium.Wrap(kafkaBroker, debezium.Format{})
//	c, err := consumer.New(b, consumer.Config{Inbox: in, Mode: consumer.Strict()})
//
// Publisher does the reverse, for tests and for `eventkit demo
// --relay-format debezium`: a broker.Publisher that publishes each event as
// the router publishes its outbox row (Format.Encode), through the Kafka
// adapter's PublishRecords or the NATS and memory adapters' PublishRaw, so
// that eventkit's relay can stand in for Debezium:
//
//	pub, err := debezium.Publisher(natsBroker, debezium.Format{Headers: debezium.JSON})
//	relay := outbox.NewRelay(store, pub, outbox.RelayConfig{})
//
// Limits: the router emits each outbox row once per capture, at least once
// (a connector restart may publish a row again: the inbox drops the copy);
// it ignores updates and deletes, so eventkit's relay must not run on the
// same table, and rows are deleted by the application (see
// docs/debezium.md). Ordering per subject holds on Kafka because the record
// key is the subject; on the other sinks it holds with consumer.Strict, which
// orders by subjectseq whatever the delivery order.
package debezium
