// Package sqlinbox is the transactional inbox: the record that a consumer
// processed an event is written in the same database transaction as the
// handler's effects. With the consumer runtime (or Process directly), a handler whose
// effects are writes through the transaction it is given (Tx(ctx) for
// database/sql, PgxTx(ctx) for pgx) applies them exactly once per consumer
// and event id, however often and however concurrently the event is
// delivered, and whatever crashes: the runtime begins a transaction, inserts
// (consumer, event_id) into processed_events (a conflict means "already
// done": ack and skip), runs the handler, commits, and only then acks. A
// crash before the commit rolls everything back and the redelivery runs the
// handler again; a crash between commit and ack makes the redelivery a
// duplicate that is skipped. Concurrent deliveries of the same event wait on
// the key's row lock; the loser sees the winner's commit and skips (or, if
// the winner rolled back, takes over). Effects outside the transaction are
// not covered; keep them idempotent (UpsertSQL, CompareAndSwap). Keys are
// kept until Prune (see inbox.RunRetention) deletes them: a duplicate that
// arrives after its key was pruned is processed again, so keep keys longer
// than the broker can redeliver. The handler may also add events to the
// outbox in the same transaction (consume-transform-produce).
//
// Batches: Inbox and PgxInbox implement inbox.Batcher, used by the
// consumer's batch mode (consumer.Batched). ProcessBatch runs
// several events in one transaction with one COMMIT. On PostgreSQL it sets
// no savepoint: one INSERT ... ON CONFLICT DO NOTHING RETURNING claims the
// batch's keys (the ones not returned are duplicates), the handlers run
// one after the other, and a failed handler rolls the transaction back:
// the events before it run again in a new transaction, which commits, and
// the events after it are reported inbox.ErrNotRun for the caller to run
// again. On MySQL and SQLite each event gets a SAVEPOINT, released after
// its handler (the release is the check that the database did not roll
// the whole transaction back, a deadlock say); a failed handler is rolled
// back to its savepoint and the others commit. The guarantee per event is
// the one above: an event's writes and its key commit together or not at
// all, and a duplicate (earlier, concurrent, or repeated in the same
// batch) never runs twice. If the COMMIT (or a statement of the inbox's
// own) fails, ProcessBatch returns an error and nothing of the batch is
// recorded. The fsync of one commit is shared by the batch.
//
// Strict order: Inbox and PgxInbox implement inbox.Sequencer, used by the
// consumer's strict order mode (consumer.Strict). A position
// table (Options.PositionTable, default <table>_positions) holds per
// (consumer, topic, subject) the last applied subject sequence number, the
// failed attempts of the next one and the number the subject is parked at.
// ProcessInOrder locks the row in the handler's transaction (INSERT ... ON
// CONFLICT DO UPDATE ... RETURNING on PostgreSQL and SQLite; SELECT ...
// FOR UPDATE on MySQL, whose row is created once in a statement of its own
// to avoid InnoDB's gap-lock deadlocks), runs the handler only for the next
// number, and advances the position in the same commit as the handler's
// writes: each number is applied once and in order, across processes,
// crashes and redeliveries. On MySQL the row is keyed by a SHA-256 of
// (consumer, topic, subject).
// They also implement inbox.SequenceBatcher (consumer.StrictBatched):
// ProcessInOrderBatch locks the rows of every subject of a batch in one
// order (one statement on PostgreSQL), applies each subject's events in
// sequence within the batch and advances the rows in one commit.
//
// Databases: PostgreSQL (database/sql with Postgres, or pgx with NewPgx),
// MySQL/MariaDB (event ids up to 255 characters, consumer names up to 200),
// SQLite (writers are serialized; see New). The tables are created by
// Migrate from embedded SQL (migrations/*.sql), versioned in
// eventkit_migrations (1: keys, 2: positions; tables of earlier, unversioned
// releases are adopted as they are); the name is configurable. A handler
// outside an inbox gets an error wrapping ErrNoTx from Tx and PgxTx.
package sqlinbox
