// Package natsbroker is the NATS JetStream adapter of package broker: a
// broker.Broker built on github.com/nats-io/nats.go's jetstream package,
// with an embedded server (package natsembed, so that importing this
// adapter does not link nats-server) for zero-setup use.
//
// # How eventkit maps onto JetStream
//
//   - A topic is a stream. Its name is the topic (prefixed with
//     Options.StreamPrefix); a topic with dots gets them replaced by '_' and a
//     short hash of the original appended ("orders.v1" → "orders_v1_3f2a9c1d"),
//     since stream names may not hold dots. The stream takes the subjects
//     "<stream>.>": an event is published to "<stream>.<type>", e.g.
//     "orders.order.created", so that other tools can filter by type. The
//     stream is created on first use (Publish or Subscribe) with limits
//     retention and StreamOptions (file storage by default, replicas, max
//     age, max bytes, duplicate window); an existing stream is used as it is
//     unless StreamOptions.Update is set.
//   - A group is a durable pull consumer on that stream (named like a
//     stream), created or updated idempotently by every Subscribe:
//     AckExplicit, AckWait = the subscription's AckWait, MaxDeliver
//     unlimited (the consumer runtime decides when to dead-letter, from
//     Attempt), DeliverAll (a new group replays the whole stream), and
//     MaxAckPending = MaxInFlight (broker.WithGroupMaxInFlight sets it per
//     subscription). Subscribers of one group compete for its
//     messages. The last Subscribe's settings win for the whole group.
//   - An event is a message in CloudEvents binary mode (NATS protocol
//     binding, eventkit.NATSBinding): attributes in "ce-" headers,
//     datacontenttype in "ce-datacontenttype" (the working draft; the
//     decoder reads "content-type" too), values percent-encoded as the
//     draft requires, the payload as the body unchanged, plus
//     "Nats-Msg-Id" = the event id (raw).
//
// # Guarantees
//
// Publishing: Publish sends the events of a call asynchronously (at most
// Options.PublishWindow awaiting their ack at once) and returns nil only when
// JetStream has acked every one, that is stored it (on disk with file
// storage; in a cluster, on a majority of replicas). Otherwise a
// *broker.PublishError names the events without an ack; the others are
// stored. Each message's ack or error is handed to that message's own
// record of its call, so concurrent calls never see each other's results.
// An event over the server's max_payload (header block included) is
// rejected before anything of the call is sent, with an error wrapping
// eventkit.ErrTooLarge that names the limit (the other events are named
// with broker.ErrNotSent). Events of one call from one connection are
// stored in order; after a partial failure, re-publishing the failed ones
// puts them after the ones that succeeded. To keep a subject in order
// through such a retry, once an event of a subject is known to have failed
// (a synchronous publish error, or an error ack already received) the
// call's later events of that subject are not sent (broker.ErrNotSent). An
// error ack that comes back after later events of its subject were sent,
// which happens within the publish window, cannot stop them; with
// Options.PublishWindow 1 every failure is known before the next event is
// sent, at the cost of one round trip per event.
//
// Deduplication: JetStream drops a message whose Nats-Msg-Id it has stored
// within the stream's duplicate window (2 minutes by default), and acks it
// as a duplicate, which Publish counts as success. Re-publishing after a
// failure or a crash (the outbox relay does) therefore stores each event
// once as long as the retry comes within the window. Outside it, or with
// Options.DisableDedupe, duplicates reach consumers, which must dedupe by
// event id (the consumer runtime's inbox does). Dedupe is per stream.
//
// Delivery is at least once. A delivery not settled within AckWait is
// redelivered; Nack(delay) is a JetStream NAK with that delay, done by the
// server (NativeDelay); Term is a TERM: never delivered to the group again.
// Attempt is the message's delivery count from the server (NumDelivered):
// it counts every delivery, including those after an AckWait expiry, a
// crashed subscriber or a lost connection. Ack is a plain JetStream ack,
// sent without waiting for a reply: an ack lost with the connection makes
// the event come again after AckWait. Options.ConfirmAcks waits for the
// server to confirm each ack (one round trip per delivery, much slower).
//
// Flow control: a subscription pulls at most MaxInFlight messages at a time
// and hands one to the handler only while fewer than MaxInFlight deliveries
// are unsettled; the consumer's MaxAckPending = MaxInFlight makes the server
// enforce the same bound, so messages are never buffered beyond it. With
// competing subscribers the group shares that bound; Options.MaxAckPending
// (every subscription of the broker) or broker.WithGroupMaxInFlight (one
// subscription; consumer.Config.GroupMaxInFlight) raises the server's bound
// (each subscription still hands out at most MaxInFlight, but may then hold
// up to MaxInFlight more prefetched). A delivery implements broker.Extender:
// InProgress restarts its ack wait on the server.
//
// Ordering: one subscriber of a group receives events in stream order
// (Ordered), until a Nack or an AckWait expiry puts a redelivery behind later
// events. Competing subscribers share the stream with no order between them
// (OrderedPerSubject is false).
//
// Durability: with file storage, stored events, consumers and their
// positions survive a server restart (Durable); with
// StreamOptions.Storage = MemoryStorage they are lost when the server
// stops. Retention is by limits (MaxAge, MaxBytes): events stay after every
// group has acked them, which is what lets a new group replay the topic.
//
// Crash and reconnect: the client reconnects forever with backoff
// (ConnectOptions). A subscriber that dies holds nothing: its unsettled
// deliveries come again after AckWait with a higher Attempt. During a
// disconnection, Publish calls fail (or are acked after the reconnect);
// subscriptions resume pulling by themselves after it.
//
// Closing a subscription (Close, or the end of Subscribe's ctx) first ends
// its pull: the iterator unsubscribes and drains, so that the server holds
// no live pull request for it and delivers nothing more into it; then the
// messages pulled but not handed to the handler, and the deliveries the
// handler nacks while Close runs, are nacked, so another subscriber of the
// group receives them at once, not after AckWait. (Before that, the server
// redelivered the nacks into the closing subscription's pull request, and
// they came back only after AckWait.) Deliveries still unsettled when
// Close's ctx ends come back after AckWait. Two limits remain: a message
// the server was routing to the subscription in the very instant its pull
// ended, and, on nats-server before 2.10.14, a message nacked in the
// instant before Close began, can come back only after AckWait.
//
// If the connection is closed for
// good, or the group's consumer or the topic's stream is deleted on the
// server, subscriptions stop and Err says why (a deletion is noticed at once
// or at the next missed pull heartbeat, within Options.PullExpiry).
//
// Limits: a message (headers plus payload) is at most the server's
// max_payload (1 MiB by default, in Capabilities.MaxPayload). Topic and
// group names follow broker.ValidateName.
//
// # Embedded server
//
// Package natsembed (natsembed.Start) runs nats-server
// (github.com/nats-io/nats-server/v2) with JetStream inside the process, storing in a directory, on a random loopback
// port (or in-process only), and returns it with a connected Broker; Close
// shuts both down. Starting again on the same directory (and port) finds
// every stream, consumer and unacked event.
//
// # Performance
//
// The benchmarks in this package compare the adapter with the raw
// jetstream client in the same run. Consuming with acks runs at the raw
// pull consumer's rate. Publishing runs at the raw client's rate for the
// same messages; the CloudEvents header block (and the server's dedupe
// bookkeeping for Nats-Msg-Id) makes messages costlier for the server than
// bare payloads, see BenchmarkPublishSideBySide.
//
// # Size limits on consume
//
// A subscription refuses a message larger than Options.MaxEventSize, if set
// below the server's max_payload, else max_payload (header names and values
// and body), however it got
// on the stream: it is delivered with DecodeErr set to a *eventkit.DecodeError
// whose Err is a *eventkit.SizeError (errors.Is with eventkit.ErrTooLarge
// holds), keeping at most broker.TooLargeKeep (1 KiB) of the body and the
// headers only if they are small. The consumer runtime dead-letters it at
// once as undecodable with the size error as its reason; it is never
// redelivered. The check allows for the binding's header names
// (broker.Allowance), so every event Publish accepted passes it.
//
// Buffering: the client reads a whole message before eventkit sees it,
// but the server refuses any publish over its max_payload (1 MiB by
// default), so nothing larger ever reaches a subscriber: max_payload is
// what bounds a consumer's memory (times the pull batch, MaxInFlight).
package natsbroker
