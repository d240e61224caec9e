// Package postgres is the PostgreSQL outbox store, on pgx v5 (pgxpool). Add
// writes inside the caller's pgx.Tx, in one INSERT ... SELECT FROM unnest
// statement whatever the number of events. Events added in a transaction reach the relay exactly when it commits
// and never after a rollback, and the store passes the
// suites of package outboxtest, so every guarantee of package outbox
// (at least once, per-subject order, parking, leadership) holds on it.
//
// # Table layout
//
// Migration 001 creates, for the configured table T (default
// "eventkit_outbox", optionally schema-qualified "schema.name"):
//
//	CREATE TABLE T (
//	    seq               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- taken at insert, not at commit
//	    topic             text NOT NULL,
//	    id                text NOT NULL,                -- eventkit.Event.ID
//	    type              text NOT NULL,
//	    source            text NOT NULL,
//	    subject           text NOT NULL DEFAULT '',     -- ordering / partition key
//	    event_time        text NOT NULL,                -- RFC 3339 with nanoseconds, UTC
//	    data_version      text NOT NULL DEFAULT '',
//	    data_content_type text NOT NULL DEFAULT '',
//	    data_schema       text NOT NULL DEFAULT '',
//	    extensions        jsonb,                        -- {"name": "value"} or NULL
//	    data              bytea,                        -- NULL for nil data
//	    created_at        timestamptz NOT NULL DEFAULT now(),
//	    attempts          integer NOT NULL DEFAULT 0,   -- recorded permanent rejections
//	    last_error        text,
//	    delivered_at      timestamptz,                  -- set instead of DELETE in retention mode
//	    parked_at         timestamptz                   -- set when parked (never claimed again)
//	);
//	CREATE INDEX T_pending   ON T (seq) WHERE delivered_at IS NULL AND parked_at IS NULL;
//	CREATE INDEX T_delivered ON T (delivered_at) WHERE delivered_at IS NOT NULL;
//	CREATE INDEX T_parked    ON T (parked_at) WHERE parked_at IS NOT NULL;
//	-- AFTER INSERT ... FOR EACH STATEMENT: PERFORM pg_notify('T', '')  (function T_notify, trigger T_notify)
//
// Applied migrations are recorded in T_migrations (version, name,
// applied_at). A row is pending while delivered_at and parked_at are both
// NULL; the relay deletes it (or sets delivered_at) once the broker
// confirmed it. Other readers of the table (the CDC relay in outbox/pgcdc)
// can rely on this layout; new columns only ever come with new migrations.
//
// # Locks and notifications
//
// The leadership lock is pg_try_advisory_lock(k) on a dedicated session,
// with k the first 8 bytes of the FNV-1a hash of "eventkit.outbox:"+T; the
// migration lock is pg_advisory_xact_lock(k+1). Advisory locks belong to
// the database they are taken in (pg_locks.database), so outboxes of the
// same table name in different databases of one server each have their own
// leader; within one database, two schemas' tables of one name share the
// lock unless T is schema-qualified. The relay LISTENs on the
// channel named T (Store.Channel) on a dedicated connection.
//
// The relay takes two connections out of the pool for good (the lock and
// LISTEN sessions) and uses one more at a time for its queries: give the
// relay's Store its own pgxpool (writers may use another Store value on the
// application's pool for Add), or the relay queues for a connection behind
// the application and its latency follows.
package pgoutbox
