// Package pgcdc relays a Postgres outbox table by change data capture, with
// the guarantees of the polling relay: at least once, per-subject order (no
// later event of a subject at the broker before an earlier one was
// confirmed), and the slot moves past a row only after the broker confirmed
// its event and the row was deleted (or marked or parked) as the database
// reported. It reads the table's inserts from a logical replication slot
// (the built-in pgoutput plugin, through github.com/jackc/pglogrepl) instead
// of polling the table. It is a stream Source under the one relay engine
// (outbox.Relay): publishing, retries, MaxAttempts and parking, metrics,
// health and leadership are the engine's, configured by the same
// outbox.RelayConfig (Config.RelayConfig).
//
// The table is the one outbox/postgres creates and writes (Store.Add inside
// the caller's transaction); nothing changes for the writer. The relay needs
// wal_level = logical on the server, a role with the REPLICATION attribute
// (or a superuser) that owns the table (to create the publication), and one
// slot out of max_replication_slots. It speaks pgoutput protocol version 1,
// with values in binary format on PostgreSQL 14 and later (bytea is then
// sent raw instead of hex-encoded) and in text format before.
//
// # Setting up and running
//
//	relay, _ := pgcdc.New(pool, publisher, pgcdc.Config{Table: "eventkit_outbox"})
//	_ = relay.Setup(ctx)      // publication (inserts only) + durable slot; idempotent
//	_ = relay.Run(ctx)        // until ctx ends
//	st, _ := relay.Status(ctx) // slot lag, WAL retained, rows left
//	_ = relay.Teardown(ctx)   // drop slot and publication
//
// The CLI's `eventkit relay --mode cdc` calls Setup and then Run; Status
// and Teardown are what an operator's status and drop commands call.
//
// # Names, one database at a time
//
// Replication slots are cluster-wide while publications, the outbox table
// and the leadership lock (an advisory lock) belong to a database. So that
// two services with the default table on one server (one database each)
// never share a slot, the default slot name is scoped to the database and
// the table: DefaultSlotName(current_database(), Table), e.g.
// "eventkit_shop_eventkit_outbox_b7a662892c7c" (sanitised and shortened
// readable part, then a hash of the exact names; at most 63 bytes). The
// publication defaults to the same name. The default depends on the
// database, so it is resolved when the relay first talks to it (Names,
// Setup, Run, Status, Teardown, Lag); New does not. A name set in
// Config.Slot (CLI: --slot) is used as is.
//
// The relay acts only on its own database's slot: Status reports only a
// slot of this database (OtherDatabase names the database of a foreign
// slot of the name); Teardown (`eventkit outbox cdc drop`) never
// terminates or drops another database's slot, even when named
// explicitly, and returns ErrMismatch instead; Setup and Run stop at once
// with ErrMismatch when the slot belongs to another database or the
// publication lacks the table (ErrPublicationNotFound when it is missing),
// never in a retry loop.
//
// Upgrading from a version whose default slot was "eventkit_" + table
// (which collided across databases): if this database has a pgoutput slot
// of that old name and none of the new one, the relay adopts it (and its
// publication of the same name), so an existing relay keeps its position
// and nothing is redelivered or lost. To move to the new name, stop the
// relays, drop the old slot and publication (Teardown does, as long as it
// is adopted) and start again (the new slot's relay backfills the rows
// still waiting from the table); or set Config.Slot to keep any name for
// good.
//
// # What is guaranteed
//
//   - At least once. An event is published, and confirmed by the broker,
//     before the slot's confirmed position moves past its transaction's
//     commit. The relay tells the server only the confirmed position, never
//     the received one, also when answering keepalives. If the broker is
//     down, Publish is retried with backoff forever and the slot does not
//     move.
//   - Commit order. Transactions are published in the order they committed
//     (not in seq order: a transaction that took lower seqs but committed
//     later is published later), and events of one transaction in insert
//     order, with the engine's per-subject rules (see package outbox): a
//     Publish call carries at most one event per subject, and a subject
//     whose event failed waits, unpublished, until that event is confirmed
//     or parked. Several transactions are batched up to BatchSize.
//   - Complete is checked. The stream can hand a transaction over before
//     its rows are visible to other sessions. A row is finished only when
//     the relay's DELETE (or UPDATE) returned it; one it did not find is
//     tried again until it is found, or until its transaction is visible to
//     a snapshot taken before the statement and the row still is not there
//     (deleted by something else: logged). The slot's confirmed position
//     moves past a transaction only when all its rows, and all earlier
//     transactions', are finished (Stats.Rechecks counts the retries).
//   - Restart resumes from the slot. After a crash, the next relay (in this
//     or another process) starts at the slot's confirmed_flush_lsn. The
//     duplicates are the events that were published but not yet confirmed
//     in the slot at the crash: the batches between Publish and the deletion
//     of their rows (the batch in flight and the received transactions
//     not yet completed) plus the confirmations not yet reported to the server
//     (reported within 100ms while events flow, within FeedbackInterval
//     otherwise). In the crash test (10,000 events, a broker taking 20 ms a
//     call, the relay killed 6-10 times mid-stream, half of the kills with
//     its connection cut first so that it cannot report anything) that is
//     0-20% of the events. Consumers dedupe by event id (package inbox).
//     When only the replication connection breaks, the transactions already
//     received stay buffered and are published, and streaming resumes after
//     them, without duplicates.
//   - Rows do not pile up. After the broker confirms a batch, its rows are
//     deleted (Config.Retention > 0: marked delivered_at and deleted later),
//     and only then is the position confirmed, so no row outlives the
//     slot's interest in it.
//   - An event the broker rejects permanently (eventkit.IsPermanent) is
//     tried MaxAttempts times with RetryDelay between them, as by the
//     polling relay, then parked (parked_at, last_error); a row that is not
//     a valid event is parked at once. The stream goes on (other subjects
//     flow meanwhile); parked rows show in Status().Outbox.Parked.
//   - Start-up checks. Run returns at once, instead of retrying, when the
//     table is missing or of another shape (outbox.ErrNoTable,
//     outbox.ErrTableShape), the slot is missing (ErrSlotNotFound) or the
//     publication does not carry the table's inserts (ErrMismatch), or the
//     outbox is split into partitions (ErrPartitioned: the slot streams
//     the whole table, so CDC is one partition; a relay that stood by while
//     the count was changed stops with it when it takes the lock).
//   - A parked row stays parked. The stream's completions and attempt
//     counts never touch a parked row (AND parked_at IS NULL), and a
//     transaction the stream hands over again after a restart is dropped
//     when its rows were visible to the new leader's backfill list (see
//     Backfill), so a row an earlier leader parked is neither published nor
//     deleted until it is requeued; the backfill then delivers it.
//
// # Polling or CDC, not both
//
// Run one relay mode per table. The CDC relay takes the same leadership lock
// (a Postgres advisory lock) as the polling relay of outbox/postgres, so a
// polling relay and a CDC relay on one table never publish at the same time,
// and a second CDC relay stands by until the first stops. Switching modes
// gives duplicates, not loss.
//
// # Backfill: rows the stream does not carry
//
// The slot streams only what commits after its position, and the
// publication carries inserts only. Rows committed before the slot existed,
// rows left behind by an earlier leader, and parked rows requeued by an
// operator (`eventkit outbox requeue`, Store.Requeue: an UPDATE) are read
// from the table instead: whenever a relay becomes the leader it lists, in
// one snapshot and before its stream starts, every waiting row, and
// publishes those rows first, in seq order, BatchSize at a time (the
// streamed rows wait meanwhile); while leading it lists requeued rows every
// BackfillInterval (default 5s) and publishes them ahead of the streamed
// rows not yet sent. A streamed transaction visible to the list's snapshot
// is dropped (its rows are on the list, or no longer waiting), so a row is
// published once, from the table. Per-subject order holds (Add serializes a
// subject's writers, so a snapshot holds a prefix of each subject's
// commits; its later rows come from the stream after it). Duplicates stay
// within the bound above: a kill during a backfill republishes at most the
// batch in flight. Stats.Backfilled counts the rows read from the table. The
// list snapshot holds one int64 per waiting row in memory. The next chunk is
// read while the one before is published (as the polling relay reads
// ahead). Before its stream starts, the new leader skips the slot
// (pg_replication_slot_advance, which reads the WAL without decoding rows)
// to the WAL position read before the list, once every transaction that
// had an id then has ended: every commit before it was visible to the
// list, so the server does not decode and send a backlog only for the
// relay to drop it. A transaction left open elsewhere for more than 2 s
// cancels the skip (the stream then starts at the slot and drops its
// copies, as it must).
//
// # The slot keeps WAL: do not leave it behind
//
// A replication slot makes the server keep every WAL segment from the
// slot's restart position on, whether or not a relay is running. A relay
// that is down (or cannot publish because the broker is down) therefore
// makes pg_wal grow until the disk is full, unless max_slot_wal_keep_size
// limits it (the slot is then invalidated: Status().WALStatus "lost", and it
// must be dropped and recreated, with the table drained by the polling
// relay). The relay measures the lag (pg_current_wal_lsn() -
// confirmed_flush_lsn) every Config.LagInterval, logs a warning beyond
// Config.LagWarnBytes and reports it to Metrics (LagMetrics); Status and Lag
// read it for operators (`eventkit outbox status`). While the outbox is
// idle the relay confirms the server's WAL end (when nothing it received is
// unconfirmed) and, every Config.HeartbeatInterval, writes a tiny
// pg_logical_emit_message so that the server reports it: an idle outbox in
// a busy database does not pin WAL.
//
// To stop using CDC, stop the relays and drop the slot with Teardown (or
// `eventkit outbox cdc drop`, or in SQL, in the outbox's database, with
// the names Status or Names reports: SELECT pg_drop_replication_slot('<slot>');
// DROP PUBLICATION <publication>;). Events committed but not yet relayed
// stay in the table for the polling relay.
//
// # What is not guaranteed
//
// Exactly once (see above); order across topics; transactions are held in memory whole until
// completed (up to QueueSize transactions; a transaction of a million
// events needs the memory for them).
package pgcdc
