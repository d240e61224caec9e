// Package kafka is the eventkit broker adapter for Apache Kafka, built on
// franz-go (github.com/twmb/franz-go/pkg/kgo and pkg/kadm). It delivers at
// least once: a record's offset is committed only when it and every record
// before it on its partition are settled, so a crash, a rebalance or
// out-of-order acks skip nothing; a crash redelivers what was settled since
// the last commit (every Options.CommitInterval). Events of one subject are
// in one partition and delivered in order to one member of a group at a time
// (Capabilities.OrderedPerSubject); Publish returns once every record is
// acknowledged by the idempotent acks=all producer, and a *broker.PublishError
// names exactly the events that failed.
//
//	b, err := kafka.New(ctx, kafka.Options{Brokers: []string{"127.0.0.1:9092"}})
//	err = b.Publish(ctx, "orders", events...)
//	sub, err := b.Subscribe(ctx, "orders", "billing", handler)
//
// An eventkit topic is a Kafka topic (created on demand with
// Options.Partitions); a group on a topic is the consumer group
// "<group>@<topic>"; an event is one record in CloudEvents binary mode (key =
// subject). A record that does not decode is delivered with DecodeErr set,
// never dropped. Nack(delay) copies the record to the group's retry topic
// "<topic>.retry.<group>", which the group's members also consume when due.
//
// Limits: a redelivery breaks the order of its subject (a retried record
// comes back after later ones); there is no native delay (the retry topic
// holds records until due, and a long delay holds back those behind it in its
// retry partition) and no native dedupe (dedupe by event id in the inbox);
// order across subjects only with one partition; a handler that ignores its
// cancelled context after a rebalance can apply its effect after the next
// owner applied later records; a topic-level max.message.bytes below the
// brokers' is not checked before publishing.
//
// The mapping, publishing, each guarantee, rebalances, retries and the
// client options in detail: docs/design.md, section "Package broker/kafkabroker".
package kafkabroker
