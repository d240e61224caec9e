// Package rabbitmq is the RabbitMQ adapter of eventkit's broker API, built on
// github.com/rabbitmq/amqp091-go (AMQP 0-9-1). An event whose Publish
// returned nil was confirmed by the broker and is in every bound group's
// durable queue (persistent messages; quorum queues are replicated and
// fsynced), and it is delivered at least once: until a subscriber acks or
// terms it, across subscriber crashes, connection loss and broker restarts.
// A single subscriber of a group, with no Nack and no reconnection, receives
// events in publish order.
//
//	b, err := rabbitmq.New(ctx, rabbitmq.Options{URL: "amqp://guest:guest@127.0.0.1:5672/"})
//	err = b.Publish(ctx, "orders", events...)
//	sub, err := b.Subscribe(ctx, "orders", "billing", handler)
//
// A topic is a durable topic exchange, a group on it a durable queue
// "<topic>.<group>" (quorum on RabbitMQ 3.8+), and Nack(delay) goes through
// a per-delay retry queue that dead-letters back to the group's queue.
// Events are encoded in CloudEvents binary mode with the AMQP binding. It is
// a thin transport: retries with backoff, dead letters, worker pools, per-key
// order and deduplication live in the consumer runtime. DeleteTopology
// removes a topic's exchange and its groups' queues.
//
// Limits: competing subscribers, a Nack, a requeue or a reconnection reorder
// (no per-subject order: OrderedPerSubject false); a group's queue receives
// only events published after it was bound (no replay); no broker-side
// dedupe (dedupe by event id in the inbox); names with the retry suffix must
// fit 255 bytes, routing keys are cut to 255 bytes.
//
// Topology, publishing, consuming, connection loss, each guarantee and size
// limits on consume in detail: docs/design.md, section "Package
// broker/rabbitmqbroker".
package rabbitmqbroker
