// Package sqlite is the SQLite outbox store, over database/sql. eventkit
// tests it with modernc.org/sqlite (pure Go, driver name "sqlite"); open the
// database with DSN(path) for WAL mode, a busy timeout and IMMEDIATE
// transactions. Add writes inside the caller's *sql.Tx. Events added in a transaction reach the relay exactly when it commits
// and never after a rollback, and the store passes the
// suites of package outboxtest, so every guarantee of package outbox
// (at least once, per-subject order, parking, leadership) holds on it. The leadership lock is
// inside the process: run the relays of one SQLite outbox in one process.
//
// Table layout (migration 001, table name configurable):
//
//	seq INTEGER PRIMARY KEY AUTOINCREMENT
//	topic, id, type, source, subject, event_time (RFC 3339, ns),
//	data_version, data_content_type, data_schema  TEXT
//	extensions TEXT (JSON object or NULL), data BLOB (NULL for nil)
//	created_at INTEGER       -- microseconds since the Unix epoch
//	attempts INTEGER, last_error TEXT
//	delivered_at INTEGER     -- set in retention mode
//	parked_at INTEGER        -- set when parked
//
// SQLite runs one write transaction at a time, so seq order is commit order
// and there are no out-of-order commits. Leadership is an in-process lock
// per database file and table (two files' outboxes never share it): run
// the relays of one SQLite outbox in one process. Wake-ups are in-process too: Add wakes the relays that run on
// the same Store value (share one Store per process), which poll until the
// commit makes the events visible.
package sqliteoutbox
