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
//	err := store.Add(ctx, tx, "orders", orderCreated)     // outbox/pgoutbox: tx is a pgx.Tx
//	err = tx.Commit(ctx)                                  // now, and only now, the relay sees it
//
//	relay := outbox.NewRelay(store, publisher, outbox.RelayConfig{})
//	err = relay.Run(ctx)                                  // in every instance of the service
//
// The stores are outbox/pgoutbox (pgx v5, Add takes a pgx.Tx; its
// Store.SQL() writer takes a *sql.Tx on the same database), outbox/mysqloutbox and
// outbox/sqliteoutbox (database/sql, Add takes a *sql.Tx); all pass the suites of
// package outboxtest, and each embeds its migrations (store.Migrate). Add
// validates every event before inserting anything, stores every envelope
// field and the topic, stamps each subject's events with a gap-free sequence
// number (eventkit.SubjectSeqExtension) and adds the W3C traceparent of the
// span in ctx. Run a relay in every instance of the service: one leads (the
// store's leadership lock), the others stand by; a partitioned outbox
// (SetPartitions, `eventkit migrate up --partitions P`) shares its
// partitions among the relays instead. Store.Status and Relay.Health,
// Metrics and Stats report backlog, parked events and leadership.
//
// Limits: consumers must dedupe by event id (package inbox); an event the
// broker rejects permanently is parked after RelayConfig.MaxAttempts, and
// its subject's consumers in strict order wait until it is requeued; a
// leader cut off from its lock session may publish one more batch while a
// standby takes over (duplicated and interleaved, within LockCheckInterval);
// SQLite's lock is inside the process, so run the relays of one SQLite outbox
// in one process; completion costs a write per row.
//
// Why and how, in detail (the guarantees one by one, gap safety for
// transactions that commit out of Seq order, high availability, partitions,
// latency, retention and metrics): docs/design.md, section "Package outbox".
package outbox
