// Package rabbitmq is the RabbitMQ adapter of eventkit's broker API, built on
// github.com/rabbitmq/amqp091-go (AMQP 0-9-1). It is a thin transport:
// retries with backoff, dead letters, worker pools, per-key order and
// deduplication live in the consumer runtime.
//
// # Topology
//
//	topic "orders"            -> durable topic exchange "orders"
//	group "billing" on it     -> durable queue "orders.billing" (quorum on
//	                             RabbitMQ 3.8+, else classic; Options.QueueType),
//	                             bound with "#"; a group with a dot, "b.v2",
//	                             gets "orders:b.v2" (see QueueName: no two
//	                             (topic, group) pairs share a queue)
//	Nack(delay) of that group -> durable queue "orders.billing:retry:<ms>" per
//	                             delay bucket: x-message-ttl=<ms>, dead-lettered
//	                             through the default exchange back to
//	                             "orders.billing"
//
// Messages are persistent (delivery mode 2) and routed with the event type as
// routing key. Events are encoded in CloudEvents binary mode with the AMQP
// binding (eventkit.AMQPBinding): the attributes are application properties
// "cloudEvents:id", "cloudEvents:type", ... in the headers table (read with
// either "cloudEvents:" or "cloudEvents_", values as strings or native AMQP
// types such as a timestamp "time"), the content
// type is the message's content-type property, the message id is the event
// id and the body is the payload unchanged. Messages that do not decode
// (another tool's, garbage) are delivered with DecodeErr set, keeping body and
// headers.
//
// # Publishing
//
// Publish declares the topic's exchange (once per connection) and publishes
// every event with the mandatory flag on a confirm-mode channel that the
// call holds for itself until its last confirm (idle channels are kept for
// later calls, up to 16; concurrent calls open more), at most
// Options.PublishWindow awaiting their confirm, and returns only when the
// server has confirmed every one. Each basic.return and basic.nack is
// attributed to the exact call and event that sent it, under any number of
// concurrent callers: a channel carries one call's messages, the server
// handles them in order and sends a message's basic.return before its ack,
// so when an event's confirm arrives its return, if any, is the first
// unmatched return of the channel (checked against exchange, routing key
// and message id). A call that gives up (ctx ended) with confirms
// outstanding closes its channel rather than leave late answers to the next
// call. (A single channel shared by concurrent calls cannot do this:
// basic.return carries no delivery tag, and matching by message id fails
// when one event goes to two topics at once, or its id is over 255 bytes.
// The channel per call also publishes faster with 8 concurrent callers; see
// docs/design.md.) It returns a *broker.PublishError naming each event that
// was
//
//   - returned as unroutable (ErrUnroutable): no queue is bound to the
//     exchange, i.e. no group exists yet. RabbitMQ would otherwise drop the
//     event silently. A topic's groups are created by Subscribe, or ahead of
//     time by Provision(ctx, topic, groups...), which a producer or a
//     deployment step calls for the groups that must not miss events;
//   - nacked by the server (ErrNacked);
//   - not confirmed because the channel or connection was lost first
//     (ErrConnectionLost), or because ctx ended: such an event may or may
//     not have been stored, so it must be retried (consumers dedupe by id);
//   - not sent because ctx ended while the server was blocking publishers
//     for a memory or disk alarm (ErrBlocked). Publish does not write to a
//     blocked connection, where the write would hang regardless of ctx;
//   - not sent (broker.ErrNotSent) because an earlier event of the call
//     with the same subject had already failed when its turn came: a
//     return or nack already received, or a failed write (which stops the
//     call). With up to PublishWindow messages in flight, a nack or return
//     that arrives after a later event of the subject was written cannot
//     stop it: that event may be stored ahead of the failed one's retry.
//     Callers that need per-subject order through failures (the outbox
//     relay) must not have a later event of a subject in flight before an
//     earlier one is confirmed.
//
// Events over Options.MaxMessageSize (default 4 MiB; the server's own
// max_message_size is 128 MiB by default) fail before anything is sent, with
// a *eventkit.SizeError naming the option; the other events of the call are
// named with broker.ErrNotSent.
//
// # Consuming
//
// Each subscription has its own channel, consumes its group's queue with
// manual acks and a prefetch (basic.qos) of MaxInFlight, so a slow consumer
// applies real backpressure: the server sends no more than MaxInFlight
// unacked messages. The handler is called one delivery at a time; deliveries
// may be settled from any goroutine (settles are serialized per channel by
// amqp091's channel lock).
//
//   - Ack and Term ack the message (the consumer runtime dead-letters a
//     termed event itself before calling Term).
//   - Nack(0) requeues the message (basic.nack requeue=true) on a quorum
//     queue of RabbitMQ 3.x; on a classic queue, and on RabbitMQ 4 (whose
//     quorum queues have a default delivery limit of 20 requeues), it
//     re-publishes it to the group's queue with the attempt header, like a
//     delayed Nack without the delay.
//   - Nack(delay) re-publishes a copy to the retry queue of the delay
//     rounded up to the next of Options.DelayBuckets (250ms, 1s, 2s, 5s,
//     10s, 30s, 1m, 2m, 5m, 10m, 30m, 1h by default; longer delays are capped
//     at the largest), with the header "x-eventkit-attempt" set to the next
//     attempt, waits for the server's confirm, and only then acks the
//     original: a crash in between duplicates the event, never loses it. When
//     the message's TTL expires the server dead-letters it back to the
//     group's queue, behind the events queued meanwhile. Retry queues are
//     quorum queues with at-least-once dead-lettering on RabbitMQ 3.10+
//     (with quorum group queues); otherwise classic queues, whose
//     dead-lettering is at most once: a server crash at the moment a
//     message expires can lose it. If
//     the re-publish fails, the message is requeued without delay. This is an
//     emulation, so Capabilities.NativeDelay is false.
//   - Close stops consuming, waits (until its ctx ends) for the handler and
//     for handed-out deliveries to be settled, then closes the channel: the
//     server requeues at once every message still unacked on it (the
//     prefetched ones, a Nack(0) requeued back into the prefetch, and
//     deliveries left unsettled), so another subscriber of the group
//     receives them without waiting for AckWait.
//   - A delivery left unsettled longer than AckWait is requeued by the
//     adapter (like Nack(0)); settling it later returns
//     broker.ErrAlreadySettled. (RabbitMQ's own consumer_timeout, 30 minutes
//     by default, closes a channel whose deliveries stay unacked longer; the
//     subscription then resumes on a new channel.)
//
// Attempt() is the attempt recorded in "x-eventkit-attempt" (1 if absent)
// plus the server's redelivery count since: x-delivery-count on quorum
// queues, which counts requeues and crashed consumers exactly; a classic
// queue only flags a message as redelivered, so there a requeue after a
// crash counts as one more attempt however many times it happened.
//
// # Connection loss
//
// amqp091-go does not reconnect by itself (its opt-in recovery is not used:
// eventkit must know which publishes and deliveries a loss affected). The
// Broker watches its connection and re-dials with exponential backoff
// (Options.ReconnectMin..ReconnectMax). Meanwhile Publish, Subscribe and
// Provision wait for the connection up to Options.ConnectTimeout (or their
// ctx); publishes that were awaiting a confirm when the connection went are
// reported as failed (ErrConnectionLost), never as sent. Each subscription
// re-opens its channel, re-declares its exchange, queue and binding, and
// resumes consuming; deliveries received on the lost channel can no longer be
// settled (their Ack returns ErrConnectionLost) and the server redelivers
// them, so a loss causes duplicates, not gaps. A subscription stops with Err
// set only if the server refuses its topology (for instance a queue that
// exists with another type or other arguments) or deletes its queue
// (ErrQueueDeleted: the subscription does not re-create it, since the events
// it held are gone).
//
// # Guarantees
//
//   - At least once: an event confirmed by Publish is in every bound group's
//     durable queue; it is delivered until a subscriber acks or terms it.
//   - Durable: persistent messages in durable (quorum: replicated, fsynced)
//     queues survive a broker restart.
//   - Ordered: a single subscriber of a group with no Nack and no connection
//     loss receives events in publish order (Publish keeps the order of its
//     events; concurrent Publish calls interleave). Competing subscribers, a
//     Nack, a requeue or a reconnection reorder. There is no per-subject
//     order across competing consumers (OrderedPerSubject false).
//   - No replay: a group's queue receives only events published after it
//     was bound (Replay false). No broker-side deduplication (NativeDedupe
//     false): dedupe by event id in the consumer runtime.
//   - Names: the exchange is the topic, the queue "<topic>.<group>"; with the
//     retry suffix they must fit RabbitMQ's 255-byte limit, checked by
//     Subscribe. Routing keys (the event type) are cut to 255 bytes.
//
// DeleteTopology removes a topic's exchange and its groups' queues (tests,
// decommissioning).
//
// # Size limits on consume
//
// A subscription refuses a message larger than Options.MaxMessageSize (body
// plus header names and values as text), however it got
// on the queue: it is delivered with DecodeErr set to a *eventkit.DecodeError
// whose Err is a *eventkit.SizeError (errors.Is with eventkit.ErrTooLarge
// holds), keeping at most broker.TooLargeKeep (1 KiB) of the body and the
// headers only if they are small. The consumer runtime dead-letters it at
// once as undecodable with the size error as its reason; it is never
// redelivered. The check allows for the binding's header names
// (broker.Allowance), so every event Publish accepted passes it.
//
// Buffering: amqp091 assembles the whole body from its frames before it
// hands over a delivery (the content header announces the body size, but
// the client does not expose it first), so the check runs on a body that
// is already in memory. The server's max_message_size bounds that: set it
// to the size you publish (rabbitmq.conf max_message_size).
package rabbitmq
