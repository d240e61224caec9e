// Package kafka is the eventkit broker adapter for Apache Kafka, built on
// franz-go (github.com/twmb/franz-go/pkg/kgo and pkg/kadm).
//
// # Mapping
//
//   - An eventkit topic is a Kafka topic. Publish and Subscribe create it on
//     demand (kadm CreateTopics) with Options.Partitions partitions (default
//     6) and Options.ReplicationFactor (default: the broker's default); an
//     existing topic is used as it is.
//   - An eventkit group on a topic is a Kafka consumer group named
//     "<group>@<topic>" (Options.GroupID): eventkit groups are per topic,
//     Kafka's group ids are global. Each Subscribe is one group member with
//     its own franz-go client; members of a group share the partitions
//     (cooperative-sticky balancing).
//   - An event is one record in CloudEvents binary content mode, Kafka
//     protocol binding: key = subject (nil when empty), value = Data,
//     headers "ce_id", "ce_source", "ce_type", ... and "content-type".
//     A record that does not decode (another producer's, garbage) is
//     delivered with DecodeErr set (a *eventkit.DecodeError with the value
//     and headers), never dropped or redelivered for ever.
//   - Every group has a retry topic "<topic>.retry.<group>"
//     (Options.RetryTopic), created with the topic, consumed by the same
//     group members. See Retries.
//
// # Publishing
//
// The producer is idempotent with acks=all (kgo's defaults, which also make
// it retry transient failures without duplicates or reordering). Publish
// validates every event and its record size first (an event over the limit
// fails with a *eventkit.SizeError naming message.max.bytes, and nothing of
// the call is sent: the other events are named with broker.ErrNotSent), produces all records of the call at once and returns
// when every one is acknowledged; a *broker.PublishError names the events
// that failed, found by their record (franz-go reports results in the order
// they complete, partition by partition, not the order given), so each call
// names exactly its own failures. A subject is one partition, whose records
// the idempotent producer sends in order in batches; a failed batch fails
// the later events of its subject in it too. The size limit is the brokers' message.max.bytes, read at New
// (Options.MaxMessageBytes overrides it); a topic-level max.message.bytes
// lower than that is not checked up front (such a publish fails with
// MESSAGE_TOO_LARGE from the broker).
//
// # Guarantees
//
//   - At least once. A record's offset is committed only when it and every
//     record before it on its partition are settled (Ack, Term, or a Nack
//     whose retry record was acknowledged), so nothing is skipped by a
//     crash, a rebalance or out-of-order acks from a worker pool. Settled
//     offsets are committed every Options.CommitInterval (500ms), on
//     rebalance and on Close; a crash redelivers what was settled since the
//     last commit.
//   - Order per subject (Capabilities.OrderedPerSubject): records with the
//     same key are in one partition, which only one member of a group
//     consumes at a time, and are delivered in offset order. Across
//     subjects there is no order unless the topic has one partition
//     (Capabilities.Ordered is true only when Options.Partitions is 1).
//     Redeliveries break the order of their subject, see Retries.
//   - Rebalances: when partitions are revoked the member stops delivering
//     them, waits up to Options.RevokeWait (5s) for their deliveries to be
//     settled (a Nack meanwhile copies nothing to the retry topic: the
//     record is left to the next owner), commits the settled prefix and
//     lets go. Then the contexts of the partition's deliveries (the
//     handler's ctx, Delivery.Context) are cancelled, and their Ack returns
//     ErrRevoked and commits nothing: the old owner never settles a record
//     that the next owner reads again, from the first unsettled record, in
//     order. With handlers that settle within RevokeWait a rebalance
//     duplicates nothing. A handler that ignores its cancelled context can
//     still apply its effect after the next owner applied later records of
//     the subject; the consumer runtime's handlers run on a context that
//     ends with the delivery's. Partitions lost without a revoke (session
//     timeout) are treated the same way, from the last commit.
//   - Backpressure: at most MaxInFlight deliveries of a subscription are
//     unsettled; at the limit the member stops polling (franz-go keeps at
//     most one buffered fetch per partition). Retry records waiting for
//     their due time are not deliveries and do not count; they are bounded
//     by one poll per retry partition, which is paused while they wait.
//   - Durable and replayable: records live as long as the topic's
//     retention; a new group starts at the beginning of the log
//     (Capabilities.Replay).
//   - Not provided: native delays (NativeDelay is false; delays are
//     implemented with the retry topic), deduplication of re-published
//     events (NativeDedupe is false: the idempotent producer only removes
//     duplicates of its own retries; dedupe by event id in the consumer's
//     inbox).
//
// # Retries
//
// Kafka cannot re-queue a record, so Nack(delay) produces a copy of the
// record (same key, value and headers) to the group's retry topic with the
// headers eventkit-topic (the original topic), eventkit-attempt (the next
// attempt) and eventkit-due (Unix ms), waits for its acknowledgement, and
// then settles the original. The members of the group consume the retry
// topic too: a record that is not yet due is held and its retry partition
// paused (main partitions keep flowing) until it is due; then it is
// delivered with Attempt() from its header and Topic() the original topic.
// One retry topic serves every delay, so within a retry partition a record
// with a long delay holds back the records behind it (they are delivered
// late, never early).
//
// A delivery left unsettled past its ack wait is treated as a Nack(0): it
// goes to the retry topic with the next attempt, so a lost delivery cannot
// hold its partition's commit offset back for ever. A late Ack of it is
// accepted and ignored (the copy is still delivered).
//
// The ordering consequence: a retried record is redelivered after records
// of the same subject that were published after it. A consumer that needs
// strict per-subject order must retry in place instead of nacking (the
// consumer runtime's ordered mode does) and treat Term/dead letters with
// care.
//
// # Attempts
//
// Attempt() is 1 for a first delivery and the header value for a retry.
// After a crash it is carried in the offset commit: before the member hands
// out records it commits, in the commit metadata of their partition, how
// far it has delivered and the highest attempt in the uncommitted window
// ("eventkit1 d=<offset> a=<attempt>"). The member that takes the
// partition over redelivers the records up to that offset with attempt+1.
// This costs one offset commit per poll that moves past the marker. The
// count can be too high: every record of the window gets the window's
// highest attempt plus one, and records fetched but never handed out can
// count as delivered. It can be too low only when the marker commit itself
// fails (coordinator failover, the member just lost its partitions): the
// records are then delivered anyway, and if they are redelivered before a
// later commit succeeds they come with the attempt they had.
//
// # Close
//
// Subscription.Close stops delivering, waits (until its ctx ends) for the
// handler and for deliveries in flight to be settled, commits the settled
// prefix of each partition, and leaves the group (a rebalance gives its
// partitions to the other members at once). Records fetched but not handed
// out, records handed back with Delivery.Release (the consumer runtime
// releases the deliveries it had queued but not started when it shuts
// down), and deliveries still unsettled are not committed: the next owner
// (another member, or this one after a restart) reads them again from the
// committed offset, in order, nothing of them is copied to the retry topic,
// and the final commit's delivered marker counts an attempt only for the
// records that were handed out and not released. Broker.Close closes every
// subscription and the producer.
//
// # Testing
//
// The tests run against kfake (github.com/twmb/franz-go/pkg/kfake), an
// in-process Kafka that speaks the real protocol, with three brokers:
// the brokertest conformance suite, rebalances with deliveries in flight,
// the loss of a broker, retries and ack-wait expiry, and contiguous
// commits after a crash.
//
// # Size limits on consume
//
// A subscription refuses a message larger than Options.MaxMessageBytes (key,
// value and header names and values), however it got
// on the topic: it is delivered with DecodeErr set to a *eventkit.DecodeError
// whose Err is a *eventkit.SizeError (errors.Is with eventkit.ErrTooLarge
// holds), keeping at most broker.TooLargeKeep (1 KiB) of the body and the
// headers only if they are small. The consumer runtime dead-letters it at
// once as undecodable with the size error as its reason; it is never
// redelivered. The check allows for the binding's header names
// (broker.Allowance), so every event Publish accepted passes it.
//
// Buffering: franz-go reads a fetched record batch whole before eventkit
// sees a record. kgo.FetchMaxBytes and FetchMaxPartitionBytes are soft
// (since KIP-74 the broker returns the first batch of a partition even if it
// is larger), so they cannot refuse a huge record; kgo.BrokerMaxReadBytes is
// a hard cap, but a fetch response over it fails the connection and is
// retried forever, stalling the partition, so the adapter does not lower
// it. What bounds a consumer's memory is the broker's message.max.bytes
// (and a topic's max.message.bytes): keep them at the size you publish.
package kafka
