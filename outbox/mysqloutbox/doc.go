// Package mysql is the MySQL/MariaDB outbox store, over database/sql with
// github.com/go-sql-driver/mysql. Add writes inside the caller's *sql.Tx. Events added in a transaction reach the relay exactly when it commits
// and never after a rollback, and the store passes the
// suites of package outboxtest, so every guarantee of package outbox
// (at least once, per-subject order, parking, leadership) holds on it.
//
// Table layout (migration 001, table name configurable, utf8mb4_bin):
//
//	seq BIGINT AUTO_INCREMENT PRIMARY KEY   -- taken at insert, not at commit
//	topic, id, type, source, subject, event_time (RFC 3339, ns),
//	data_version, data_content_type, data_schema  VARCHAR
//	extensions MEDIUMTEXT (JSON object or NULL), data LONGBLOB (NULL for nil)
//	created_at BIGINT        -- microseconds since the Unix epoch
//	attempts INT, last_error TEXT
//	delivered_at BIGINT NULL -- set in retention mode
//	parked_at BIGINT NULL    -- set when parked
//	KEY (delivered_at, parked_at, seq)  -- the claim query
//
// Leadership uses GET_LOCK on a dedicated connection. GET_LOCK names are
// server-wide, so the name (LockName) hashes the connection's database and
// the table: outboxes of the same table name in different databases of one
// server each have their own leader. (Versions before this one hashed the
// table only; an upgraded relay stands by while an old one leads this
// database's outbox, see Store.TryLock.) Wake-ups are in-process: Add
// wakes the relays that run on the same Store value (share one Store per
// process), which poll until the commit makes the events visible
// (RelayConfig.WakeLinger); writes from other processes are found by
// polling (RelayConfig.PollInterval).
//
// Add numbers each subject's events from a counter row in
// <table>_subject_seq, locked in the caller's transaction until it ends,
// so writers of one subject queue behind each other. The first write of a
// new subject inserts that row: when it rolls back while other
// transactions wait to write the same subject, InnoDB can end one of those
// with Error 1213 (deadlock, "try restarting transaction"), as with any
// insert of a contested new key. Retry such a transaction, as any InnoDB
// application retries 1213; nothing of it was written.
package mysqloutbox
