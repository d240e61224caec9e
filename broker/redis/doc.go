// Package redis is the eventkit broker adapter for Redis Streams (Redis 6.2
// or later; tested on 7.0), built on github.com/redis/go-redis/v9.
//
// # Mapping
//
//   - A topic is a stream, key Options.Prefix + topic ("eventkit:orders").
//   - A group is a consumer group of that stream. Subscribe creates it
//     idempotently (XGROUP CREATE ... MKSTREAM; BUSYGROUP is ignored),
//     starting at the oldest entry by default (Options.GroupStart
//     StartOldest, "0": a new group replays what the stream still holds,
//     Capabilities.Replay) or at the newest (StartNewest, "$").
//   - Each subscription is a consumer of the group with a unique name
//     (host-pid-random). Subscriptions of one group compete for entries.
//   - An event is one entry in CloudEvents binary mode with
//     eventkit.RedisBinding: fields "ce_specversion", "ce_id", "ce_source",
//     "ce_type", "ce_time", "ce_subject", "ce_dataversion", "ce_dataschema",
//     one "ce_<name>" per extension, "content-type", and the payload in the
//     field "data" (DataField).
//
// # Publishing
//
// Publish validates every event first (nothing is sent if one is invalid,
// and every event is named;
// an event over Options.MaxPayload, default 1 MiB + 64 KiB, fails with a
// *eventkit.SizeError wrapping eventkit.ErrTooLarge that names the limit),
// then sends one XADD per event in a single pipeline, one round trip per
// call, and returns when Redis replied to all of them. Entries that failed
// are listed in the *broker.PublishError; the others were added. Each call
// reads the replies of its own pipeline, so concurrent calls never see each
// other's results. Events of one Publish call are added in order; concurrent
// calls interleave. Every XADD of a call is written before any reply is
// read, so an XADD that Redis rejects (OOM under maxmemory, WRONGTYPE) does
// not stop the later ones of its subject; a broken connection fails the
// rest of the call. Per-key errors fail every event of the call alike.
// Options.MaxLen trims each stream to about that many entries (XADD MAXLEN
// ~); 0 (default) never trims.
//
// # Consuming and settling
//
// A subscription runs one reader, one dispatcher and one ack flusher. The
// reader fetches with XREADGROUP (COUNT up to the free MaxInFlight slots,
// BLOCK Options.Block, 100ms by default, so Close is prompt) and never reads
// more than MaxInFlight unsettled entries. The dispatcher calls the handler
// one delivery at a time.
//
//   - Ack and Term: XACK. Acks are queued and a background flusher sends
//     all that are queued in one XACK, so Ack returns before the XACK by
//     default (Options.SyncAck makes it wait). Only settled deliveries are
//     ever acked. A settled delivery frees its MaxInFlight slot at once; the
//     reader also stops while MaxInFlight acks wait to be flushed, so this
//     consumer's PEL holds at most 2 x MaxInFlight entries. If the process
//     dies before the flush, the entry is redelivered: at least once.
//     Term is an XACK too: dead letters are the consumer runtime's job.
//   - Nack(delay): the entry stays in this consumer's pending entries list
//     (PEL). When the delay is over (at once for 0), the reader claims it
//     again (XCLAIM, which adds one to its delivery counter) and delivers it
//     with Attempt one higher. While it waits, the reader refreshes its idle
//     time (XCLAIM JUSTID, counter unchanged) every AckWait/3 so that no
//     XAUTOCLAIM takes it early. The delay is a local timer: NativeDelay is
//     false.
//   - Ack wait and crashes: every subscription runs XAUTOCLAIM (min idle =
//     its AckWait) every AckWait/4 (at most every 5s) and takes entries of
//     any consumer of the group that were delivered and left unsettled for
//     longer: a crashed consumer's entries, including the ones it held for a
//     delayed Nack, and its own expired deliveries. A late Ack of an expired
//     delivery still acks the entry.
//   - Attempt() is the entry's delivery counter in the group's PEL
//     ("times delivered", read atomically with the claim by a Lua script):
//     1 on the first delivery, +1 on each redelivery by Nack, ack-wait
//     expiry or reclaim after a crash.
//   - Close stops fetching, waits (until its ctx ends) for the handler and
//     for deliveries in flight to be settled and their XACKs sent. Entries
//     fetched but not yet handed to the handler, and entries nacked and due,
//     are handed back to the group at once (XCLAIM IDLE ... RETRYCOUNT ...:
//     eligible for the next XAUTOCLAIM, counter restored so their next
//     Attempt is right), and so is an entry nacked with no delay by a
//     handler that was still running when Close's ctx ended or the
//     Subscribe context was cancelled (Broker.Close waits for such a
//     handler, until its own ctx ends, before it closes the connection);
//     deliveries left unsettled and delayed nacks are reclaimed by the
//     group after the ack wait (a delayed nack may so come back sooner or
//     later than its delay).
//
// Entries that are not events (added by redis-cli or another tool, missing
// attributes, garbage) are delivered with DecodeErr set to a
// *eventkit.DecodeError whose Raw is the "data" field, or, without one, all
// fields as a JSON object; they never stall the subscription. Pending
// entries deleted from the stream (XDEL, MAXLEN trimming) are acked away
// when they would be redelivered, not looped on.
//
// # What is guaranteed, and what is not
//
//   - At-least-once delivery per group, as long as the entry is in the
//     stream. Duplicates happen after an ack wait expires, a crash, or an
//     XACK lost with the connection. Publish can also add an event twice:
//     go-redis retries a pipeline whose connection broke, and Redis may have
//     run it already. NativeDedupe is false: dedupe by event id with the
//     consumer runtime's inbox.
//   - Connection failures are retried (with backoff, up to 2s) for as long
//     as the subscription runs; Err() stays nil.
//   - Order (Capabilities.Ordered): one subscription in a group with no
//     Nack and no ack wait expiry gets entries in stream order. Competing
//     subscriptions split the stream with no per-subject order
//     (OrderedPerSubject is false); redeliveries come out of order.
//   - Durability is Redis's. Publish returns when the primary has the
//     entries in memory. Whether they survive a restart depends on the
//     server's persistence: AOF (appendonly yes; appendfsync always loses
//     nothing, everysec up to a second), RDB snapshots (minutes), or none.
//     Capabilities.Durable is true only if the server reported appendonly
//     yes when New ran. The test server runs with no AOF and no RDB, so it
//     keeps nothing across a restart and Durable is false there. Replicas
//     are asynchronous (WAIT is not used): a failover can lose acknowledged
//     entries.
//   - Trimming: MaxLen (or a user's XTRIM) removes the oldest entries even
//     if a group has not read or acked them: those events are lost for that
//     group. Size the limit for the slowest group's backlog, or leave it 0
//     and trim by other means.
//   - Limits: one event up to Options.MaxPayload (Redis accepts up to
//     proto-max-bulk-len, 512 MB, per field; large entries cost memory and
//     latency for everyone). Streams live in memory.
//   - All consumers of a group should use the same AckWait: a consumer with
//     a shorter one reclaims the others' entries sooner.
//   - Consumer names: a subscription that closes with no pending entries
//     deletes its consumer; Subscribe deletes the group's consumers that
//     have no pending entries and were idle for Options.PruneAfter (1h),
//     left by crashed processes. A consumer with pending entries is never
//     deleted (XGROUP DELCONSUMER would drop them): its entries are
//     reclaimed first, and the name goes at a later prune.
//
// # Size limits on consume
//
// A subscription refuses a message larger than Options.MaxPayload (every
// field name and value of the entry), however it got
// on the stream: it is delivered with DecodeErr set to a *eventkit.DecodeError
// whose Err is a *eventkit.SizeError (errors.Is with eventkit.ErrTooLarge
// holds), keeping at most broker.TooLargeKeep (1 KiB) of the body and the
// headers only if they are small. The consumer runtime dead-letters it at
// once as undecodable with the size error as its reason; it is never
// redelivered. The check allows for the binding's header names
// (broker.Allowance), so every event Publish accepted passes it.
//
// Buffering: go-redis parses a whole XREADGROUP/XAUTOCLAIM reply before
// eventkit sees an entry, and the reply announces no entry size before its
// bytes, so nothing can be refused unread. Redis's proto-max-bulk-len
// (512 MB by default) bounds one value: lower it, and restrict XADD with
// ACLs, to bound a consumer's memory.
package redis
