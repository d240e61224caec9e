// Package outbox is the transactional outbox: a service writes its events
// into an outbox table in the same database transaction as its business
// change, and a Relay publishes the committed events to a broker at least
// once, in order per subject, and deletes (or marks) a row only after the
// broker confirmed its event and the database reported the row completed.
// No later event of a subject is ever at the broker before an earlier one
// was confirmed; a crash duplicates at most the batch in flight (on an
// outbox split into partitions: the batch in flight of each partition the
// crashed relay led). One engine serves both sources of events: a Store
// (polling) and outbox/pgcdc's replication stream (CDC).
//
//	tx, _ := pool.Begin(ctx)                              // the caller's transaction
//	// ... business writes ...
//	err := store.Add(ctx, tx, "orders", orderCreated)     // outbox/postgres: tx is a pgx.Tx
//	err = tx.Commit(ctx)                                  // now, and only now, the relay sees it
//
//	relay := outbox.NewRelay(store, publisher, outbox.RelayConfig{})
//	err = relay.Run(ctx)                                  // in every instance of the service
//
// The stores are outbox/postgres (pgx v5, Add takes a pgx.Tx; its
// Store.SQL() writer takes a *sql.Tx on the same database), outbox/mysql and
// outbox/sqlite (database/sql, Add takes a *sql.Tx). Each embeds its
// migrations: store.Migrate(ctx) creates the table (default name
// "eventkit_outbox", configurable) and store.MigrationStatus(ctx) lists
// them. All three pass the same conformance suites (package outboxtest).
// A store also implements Writer[TTx] for code that is generic over the
// transaction type. Add validates every event (eventkit.Event.Validate, the
// topic with broker.ValidateName) before inserting anything, stores every
// envelope field (id, type, source, subject, time with nanoseconds, data
// version, content type, schema, extensions, data) and the topic, so the
// relay republishes the exact event, and, when ctx carries an OpenTelemetry
// span, adds its W3C traceparent (and tracestate) extensions unless the
// event has a traceparent already.
//
// # Guarantees
//
//   - At least once. An event whose transaction commits is published until
//     the broker confirms it (Publish returns nil for it), and only then
//     deleted or marked delivered; Source.Complete reports the rows the
//     database completed, Stats.Delivered counts them, and a stream source
//     (CDC) lets its position move past a row only once it is completed. Nothing is lost when the relay, the
//     database connection or the broker fails; the relay retries with
//     exponential backoff (RelayConfig.MinBackoff..MaxBackoff) for as long
//     as it takes, logs each failure (log/slog) and counts it (Stats,
//     Metrics). A rolled-back transaction leaves nothing.
//   - What can be duplicated: after a crash (or a lost leadership), the
//     batch that was in flight, i.e. published but whose completion was not
//     recorded yet, is published again by the next leader: at most
//     RelayConfig.BatchSize events per crash. A partial failure inside one
//     Publish call republishes only the failed events (the others were
//     confirmed and are completed). Consumers dedupe by event id (package
//     inbox).
//   - Order. Events are published in outbox order (Seq, taken at insert;
//     commit order for the CDC source) among the committed events the relay
//     sees. A run of consecutive events with the same topic is sent in as
//     few Publish calls as possible such that no call carries two events of
//     one subject (adapters pipeline a call's events with asynchronous
//     confirms), and a subject whose event failed sends nothing more in
//     that batch. So a subject's next event is sent only after the broker
//     confirmed the one before it: even a broker that rejects e1 and stores
//     the e2 after it never holds e2 before e1, and a single active relay
//     (below) publishes one batch at a time. RelayConfig.PipelineSubjects
//     trades this for fewer calls (see there). Two transactions that write
//     the same subject are ordered by the subject sequence (below): the
//     second waits in Add for the first to commit or roll back.
//   - Subject sequence. Add stamps every event that has a subject with the
//     next number of its (topic, subject) sequence, in the
//     eventkit.SubjectSeqExtension extension ("subjectseq", overwriting a
//     value the caller set), from a counter row in <table>_subject_seq
//     updated in the caller's transaction. The row lock serialises the
//     writers of one subject until they commit and a rollback returns its
//     numbers, so each subject's numbers are 1, 2, 3, ... with no gap and
//     no repeat, in commit order. The consumer's strict order mode
//     (consumer.Config.StrictOrder) applies events by these numbers,
//     whatever order the broker delivers them in. A parked event (below)
//     is a gap for those consumers: its subject waits there until the
//     event is requeued.
//   - Poison events. An event the broker rejects permanently
//     (eventkit.IsPermanent, or over a size limit: eventkit.ErrTooLarge),
//     as named by a *broker.PublishError, is retried RelayConfig.MaxAttempts
//     times with a growing delay and then parked with the reason; Status
//     lists it and Store.Requeue puts it back. While it waits, only the
//     events of its own subject wait behind it; once it is parked they go
//     on. Transient failures are never counted as attempts.
//   - Bad input. Relay.Run checks the source first (Checker): a missing
//     table (ErrNoTable), a table of another shape (ErrTableShape) or, for
//     CDC, a missing slot or a publication without the table is returned at
//     once, not retried. A row whose columns do not form a valid event
//     (CheckRecord: undecodable time or extensions, invalid topic, empty
//     id, type or source) is parked at once with the reason.
//
// # Gap safety: transactions that commit out of Seq order
//
// Seq values (Postgres identity, MySQL AUTO_INCREMENT) are taken when a row
// is inserted, not when its transaction commits, so a transaction holding a
// lower Seq can commit after a higher one was already published. A relay
// that kept a cursor ("everything up to Seq N is done") would skip it for
// good (Watermill issue #311). This relay keeps no cursor: every row stays
// in the table, and claimable, until the relay completes it (delete, or
// mark delivered) or parks it, and every Claim reads the undelivered rows
// from the lowest Seq. A row from a late commit is simply found by the next
// Claim and published then, after the higher Seq that committed first:
// the published order is the order in which rows became visible, which is
// commit order for rows that an application orders (by locking the
// aggregate) anyway. The tests commit a lower Seq after a higher one while
// the relay runs, and check both arrive.
//
// Trade-off: completion is a write per row (a DELETE, or an UPDATE in
// retention mode), where a cursor relay writes one row per batch, and the
// table churns (dead tuples: autovacuum, or MySQL purge, must keep up; a
// partial index on the undelivered rows keeps Claim cheap). The other sound
// method on Postgres, reading only below the pg_snapshot_xmin horizon
// (xid8), keeps a cursor but delays every event by the longest-running
// transaction in the database and ties the outbox to Postgres; the
// row-state method works the same on all three stores and adds no latency.
//
// # High availability
//
// Run a relay in every instance. Only the holder of the store's leadership
// lock publishes: a Postgres session advisory lock
// (pg_try_advisory_lock), a MySQL named lock (GET_LOCK), or, for SQLite, a
// lock inside the process (run the relays of one SQLite outbox in one
// process). The lock lives on a dedicated connection: if the leader dies,
// its session ends and the lock with it; a standby tries every
// RelayConfig.LockRetryInterval and takes over, resuming from the
// undelivered rows (so only the dead leader's batch in flight can be
// duplicated). The holder checks its lock connection every
// LockCheckInterval (store config) and stops publishing when it is lost.
// Because one relay publishes at a time, per-subject order holds across
// relay instances, with one window: a leader whose lock session is cut off
// (network partition, terminated backend) keeps publishing until it notices,
// after at most LockCheckInterval plus the Publish call in progress, while
// a standby may already have taken over. That batch can then be duplicated
// and interleaved with the new leader's first batch. The tests run two relays on one outbox, stop the leader
// mid-stream, and check every subject's order and that nothing is missing.
//
// # Scaling out: partitions
//
// One active relay is the ceiling of the above. A Postgres or MySQL/MariaDB
// outbox can instead be split into P partitions by a hash of the event
// subject (the first 28 bits of MD5(subject) modulo P, computed by the
// database, so a subject always maps to one partition): SetPartitions on
// the store, or `eventkit migrate up --partitions P`. Each partition then
// has its own lease, a row of <table>_leases (owner, expiry on the
// database's clock), and every relay on the outbox (Partitioned) takes
// partitions instead of the whole outbox: it records itself alive in
// <table>_relays, renews its leases every RelayConfig.LeaseTTL/4, and
// aims for ceil(P/alive) partitions, so a relay that joins gets work
// (the others give up their extras), one that stops releases its leases
// for the others to take at once, and the partitions of one that dies
// are taken when its leases expire (after LeaseTTL). A relay with no
// partition is a standby. Each partition is relayed by its own publish
// loop with everything above (order, retries, parking, read-ahead).
//
// Per-subject order holds through every handover: a relay gives a
// partition up only after that partition's loop has returned (no publish
// of it in flight), and a partition whose lease it could not renew it
// stops by itself 3/4 LeaseTTL after the last successful renewal was
// sent, before the lease can expire in the database; a new leader can
// take a lease only once it is released or expired. What can be
// duplicated is the batch in flight of each partition of a relay that
// crashed or was cut off: at most RelayConfig.BatchSize x the partitions it
// led, per crash. The count can change only while no relay runs
// (SetPartitions fails with ErrRelaysRunning while a lease is held or a
// relay leads the unsplit outbox): stop the relays, change it, start them.
// Relays need distinct RelayConfig.Instance names (default hostname-pid).
// SQLite outboxes and the CDC source (outbox/pgcdc, one slot) have one
// partition. See docs/design.md.
//
// # Latency
//
// The relay sleeps until woken: on Postgres, an AFTER INSERT statement
// trigger sends NOTIFY on the table's channel, which Postgres delivers on
// commit (and folds per transaction); the relay LISTENs on a dedicated
// connection and coalesces wake-ups. The MySQL and SQLite stores wake the
// relays that run on the same Store value from Add (before the commit), and the relay
// then polls at 1, 2, 4, ... ms for RelayConfig.WakeLinger. Writes from
// other processes, and lost notifications, are found by polling every
// RelayConfig.PollInterval. Under a backlog, the relay claims the next batch
// while the current one is being published.
//
// # Retention, status and metrics
//
// With RelayConfig.Retention 0 delivered rows are deleted at once;
// otherwise they are marked delivered and the leader deletes them after the
// retention period (and parked rows after ParkedRetention, if set).
// Store.Status reports the backlog, the oldest undelivered event's age,
// counts per type and the parked events with their reasons (what
// `eventkit outbox status` prints). The relay reports completed rows,
// Publish latency, errors by kind, parked events, backlog, oldest age and
// whether it leads (LeaderMetrics) to a Metrics (NewOTelMetrics for
// OpenTelemetry), and keeps Stats. Relay.Health says whether it leads or
// stands by and whether its last store call or Publish failed (what
// `eventkit relay` answers on /readyz, as a status word).
package outbox
