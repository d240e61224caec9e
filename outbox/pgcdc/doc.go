// Package pgcdc relays a Postgres outbox table by change data capture, with
// the guarantees of the polling relay: at least once, per-subject order (no
// later event of a subject at the broker before an earlier one was
// confirmed), transactions in commit order, and the slot moves past a row
// only after the broker confirmed its event and the row was deleted (or
// marked or parked) as the database reported. A crash duplicates the events
// published but not yet confirmed in the slot; nothing is lost. It is a
// stream Source under the one relay engine (outbox.Relay): publishing,
// retries, parking, metrics, health and leadership are the engine's,
// configured by the same outbox.RelayConfig (Config.RelayConfig).
//
//	relay, _ := pgcdc.New(pool, publisher, pgcdc.Config{Table: "eventkit_outbox"})
//	_ = relay.Setup(ctx)      // publication (inserts only) + durable slot; idempotent
//	_ = relay.Run(ctx)        // until ctx ends
//	st, _ := relay.Status(ctx) // slot lag, WAL retained, rows left
//	_ = relay.Teardown(ctx)   // drop slot and publication
//
// The table is the one outbox/pgoutbox creates and writes (Store.Add inside
// the caller's transaction); nothing changes for the writer. The CLI's
// `eventkit relay --mode cdc` calls Setup and then Run. It reads the
// table's inserts from a logical replication slot (pgoutput, through
// github.com/jackc/pglogrepl); rows the stream does not carry (committed
// before the slot existed, left by an earlier leader, requeued) are read
// from the table first (backfill). The default slot name is scoped to the
// database and the table (DefaultSlotName); the relay acts only on its own
// database's slot and stops with ErrMismatch, ErrSlotNotFound,
// outbox.ErrNoTable or outbox.ErrTableShape instead of retrying.
//
// Limits: it needs wal_level = logical, a role with REPLICATION that owns
// the table, and one replication slot; run one relay mode per table (the
// polling and CDC relays share the leadership lock, and switching modes
// duplicates, never loses); the slot keeps WAL while no relay confirms it
// (watch Status and the lag metrics, or set max_slot_wal_keep_size, after
// which the slot is lost and must be recreated).
//
// The details (names, upgrade of the old slot name, each guarantee and how
// it is kept, backfill, WAL retention): docs/design.md, section
// "Package outbox/pgcdc".
package pgcdc
