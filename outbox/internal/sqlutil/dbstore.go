package sqlutil

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
)

// Dialect is what differs between the database/sql stores.
type Dialect struct {
	// Name prefixes errors: "outbox/mysqloutbox".
	Name string
	// SQL is the database's dialect ('?' placeholders: MySQL or SQLite).
	SQL sqldialect.Dialect
	// ReserveSeq, if set, reserves n numbers of the subject sequence of
	// (topic, subject) in tx and returns the last one (see
	// StampSubjectSeq). nil: Add stamps no sequence.
	ReserveSeq func(ctx context.Context, tx *sql.Tx, topic, subject string, n int64) (int64, error)
	// Migrations holds the store's migrations/NNN_name.sql (see Load).
	Migrations fs.FS
}

// DB implements the common part of outbox.Store over database/sql, for
// tables with the shared column layout (times as BIGINT microseconds since
// the Unix epoch) and '?' placeholders.
type DB struct {
	db      *sql.DB
	table   string
	d       Dialect
	maxSize int

	mu        sync.Mutex
	listeners map[int]func()
	nextID    int

	insertHead, insertRow, claimHead string
}

const selCols = `seq, topic, id, type, source, subject, event_time, data_version, data_content_type, data_schema, extensions, data, created_at, attempts, coalesce(last_error, '')`

// NewDB returns the shared store over db for table.
func NewDB(db *sql.DB, table string, d Dialect, maxEventSize int) *DB {
	return &DB{
		db: db, table: table, d: d, maxSize: maxEventSize, listeners: map[int]func(){},
		insertHead: `INSERT INTO ` + table + ` (topic, id, type, source, subject, event_time, data_version, data_content_type, data_schema, extensions, data, created_at) VALUES `,
		insertRow:  `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ` + d.SQL.NowMicros() + `)`,
		claimHead:  `SELECT ` + selCols + ` FROM ` + table + ` WHERE delivered_at IS NULL AND parked_at IS NULL`,
	}
}

// SQL returns the *sql.DB.
func (s *DB) SQL() *sql.DB { return s.db }

// Table returns the table name.
func (s *DB) Table() string { return s.table }

func (s *DB) errf(op string, err error) error { return fmt.Errorf("%s: %s: %w", s.d.Name, op, err) }

const (
	rowsPerInsert  = 500
	bytesPerInsert = 4 << 20
)

// Add inserts events for topic inside tx (multi-row INSERTs of up to 500
// rows or about 4 MB), then wakes the relays of this process that listen on
// the store (they poll until the transaction's commit makes the events
// visible). Events are validated first (see outbox.Prepare), the span
// context of ctx, if any, is stored as traceparent, and each event with a
// subject is stamped with its subject sequence number (StampSubjectSeq).
func (s *DB) Add(ctx context.Context, tx *sql.Tx, topic string, events ...eventkit.Event) error {
	if len(events) == 0 {
		return nil
	}
	evs, err := outbox.Prepare(ctx, topic, s.maxSize, events)
	if err != nil {
		return err
	}
	if s.d.ReserveSeq != nil {
		evs, err = StampSubjectSeq(evs, func(subject string, n int64) (int64, error) {
			last, err := s.d.ReserveSeq(ctx, tx, topic, subject, n)
			if err != nil {
				return 0, s.errf("subject sequence", err)
			}
			return last, nil
		})
		if err != nil {
			return err
		}
	}
	for len(evs) > 0 {
		// Up to 500 rows or about 4 MB per statement (max_allowed_packet).
		n, size := 0, 0
		for n < len(evs) && n < rowsPerInsert && (n == 0 || size+evs[n].Size() <= bytesPerInsert) {
			size += evs[n].Size()
			n++
		}
		var b strings.Builder
		b.WriteString(s.insertHead)
		args := make([]any, 0, n*11)
		for i, e := range evs[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(s.insertRow)
			var ext any
			if p := ExtText(e.Extensions); p != nil {
				ext = *p
			}
			var data any
			if e.Data != nil {
				data = e.Data
			}
			args = append(args, topic, e.ID, e.Type, e.Source, e.Subject, TimeText(e.Time), e.DataVersion,
				e.DataContentType, e.DataSchema, ext, data)
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return s.errf("insert into "+s.table, err)
		}
		evs = evs[n:]
	}
	s.Notify()
	return nil
}

// Notify wakes the relays of this process that listen on the store. Add
// calls it; call it after committing for the lowest latency.
func (s *DB) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.listeners {
		f()
	}
}

// Listen implements outbox.Store with an in-process notifier: wake is called
// by Add and Notify in this process (writes from other processes are found
// by polling).
func (s *DB) Listen(ctx context.Context, wake func()) error {
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	s.listeners[id] = wake
	s.mu.Unlock()
	wake()
	<-ctx.Done()
	s.mu.Lock()
	delete(s.listeners, id)
	s.mu.Unlock()
	return ctx.Err()
}

// Claim implements outbox.Store.
func (s *DB) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Record, error) {
	return s.ClaimWhere(ctx, "", p)
}

// ClaimWhere is Claim of the records that also meet the SQL condition cond
// ("" for none): a partition's records.
func (s *DB) ClaimWhere(ctx context.Context, cond string, p outbox.ClaimParams) ([]outbox.Record, error) {
	q := s.claimHead
	if cond != "" {
		q += ` AND ` + cond
	}
	args := make([]any, 0, len(p.ExcludeSubjects)+len(p.ExcludeSeqs)+1)
	if p.AfterSeq > 0 {
		q += ` AND seq > ?`
		args = append(args, p.AfterSeq)
	}
	if len(p.ExcludeSubjects) > 0 {
		q += ` AND subject NOT IN (` + s.d.SQL.Placeholders(len(p.ExcludeSubjects)) + `)`
		for _, x := range p.ExcludeSubjects {
			args = append(args, x)
		}
	}
	if len(p.ExcludeSeqs) > 0 {
		q += ` AND seq NOT IN (` + s.d.SQL.Placeholders(len(p.ExcludeSeqs)) + `)`
		for _, x := range p.ExcludeSeqs {
			args = append(args, x)
		}
	}
	q += ` ORDER BY seq LIMIT ?`
	args = append(args, p.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.errf("claim", err)
	}
	defer rows.Close()
	recs := make([]outbox.Record, 0, min(p.Limit, 1024))
	for rows.Next() {
		var r outbox.Record
		var tm string
		var ext sql.NullString
		var created int64
		e := &r.Event
		if err := rows.Scan(&r.Seq, &r.Topic, &e.ID, &e.Type, &e.Source, &e.Subject, &tm, &e.DataVersion,
			&e.DataContentType, &e.DataSchema, &ext, &e.Data, &created, &r.Attempts, &r.LastError); err != nil {
			return nil, s.errf("claim", err)
		}
		var extp *string
		if ext.Valid {
			extp = &ext.String
		}
		r.DecodeErr = DecodeRow(&r, tm, extp)
		r.CreatedAt = time.UnixMicro(created).UTC()
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errf("claim", err)
	}
	return recs, nil
}

// Check implements outbox.Checker: the table must exist with the columns
// the relay reads.
func (s *DB) Check(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, s.claimHead+` AND 1 = 0`)
	if err != nil {
		return s.errf("check "+s.table, ClassifyTableError(err))
	}
	return rows.Close()
}

// ClassifyTableError wraps outbox.ErrNoTable or outbox.ErrTableShape around
// err when the database says the table or one of its columns does not exist
// (MySQL/MariaDB, SQLite, Postgres wordings), and returns err otherwise.
func ClassifyTableError(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no such table"), strings.Contains(msg, "doesn't exist"),
		strings.Contains(msg, "SQLSTATE 42P01"):
		return fmt.Errorf("%w: %w", outbox.ErrNoTable, err)
	case strings.Contains(msg, "no such column"), strings.Contains(msg, "Unknown column"),
		strings.Contains(msg, "SQLSTATE 42703"):
		return fmt.Errorf("%w: %w", outbox.ErrTableShape, err)
	}
	return err
}

// Complete implements outbox.Store.
func (s *DB) Complete(ctx context.Context, seqs []int64, keep bool) (int64, error) {
	var total int64
	for len(seqs) > 0 {
		n := min(len(seqs), 1000)
		args := make([]any, n)
		for i, x := range seqs[:n] {
			args[i] = x
		}
		q := `DELETE FROM ` + s.table + ` WHERE seq IN (` + s.d.SQL.Placeholders(n) + `)`
		if keep {
			q = `UPDATE ` + s.table + ` SET delivered_at = ` + s.d.SQL.NowMicros() + ` WHERE delivered_at IS NULL AND seq IN (` + s.d.SQL.Placeholders(n) + `)`
		}
		res, err := s.db.ExecContext(ctx, q, args...)
		if err != nil {
			return total, s.errf("complete", err)
		}
		if k, err := res.RowsAffected(); err == nil {
			total += k
		}
		seqs = seqs[n:]
	}
	return total, nil
}

// Fail implements outbox.Store.
func (s *DB) Fail(ctx context.Context, p outbox.FailParams) error {
	q := `UPDATE ` + s.table + ` SET attempts = attempts + 1, last_error = ?, parked_at = NULL WHERE seq = ?`
	if p.Park {
		q = `UPDATE ` + s.table + ` SET attempts = attempts + 1, last_error = ?, parked_at = ` + s.d.SQL.NowMicros() + ` WHERE seq = ?`
	}
	if _, err := s.db.ExecContext(ctx, q, p.Reason, p.Seq); err != nil {
		return s.errf("fail", err)
	}
	return nil
}

// Requeue implements outbox.Store.
func (s *DB) Requeue(ctx context.Context, seqs []int64) (int64, error) {
	if len(seqs) == 0 {
		return 0, nil
	}
	args := make([]any, len(seqs))
	for i, x := range seqs {
		args[i] = x
	}
	res, err := s.db.ExecContext(ctx, `UPDATE `+s.table+` SET parked_at = NULL, attempts = 0 WHERE parked_at IS NOT NULL AND seq IN (`+s.d.SQL.Placeholders(len(seqs))+`)`, args...)
	if err != nil {
		return 0, s.errf("requeue", err)
	}
	return res.RowsAffected()
}

// Cleanup implements outbox.Store.
func (s *DB) Cleanup(ctx context.Context, deliveredBefore, parkedBefore time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM `+s.table+` WHERE delivered_at < ?`, deliveredBefore.UnixMicro())
	if err != nil {
		return 0, s.errf("cleanup", err)
	}
	n, _ := res.RowsAffected()
	if !parkedBefore.IsZero() {
		res, err = s.db.ExecContext(ctx, `DELETE FROM `+s.table+` WHERE parked_at < ?`, parkedBefore.UnixMicro())
		if err != nil {
			return n, s.errf("cleanup", err)
		}
		m, _ := res.RowsAffected()
		n += m
	}
	return n, nil
}

// Status implements outbox.Store.
func (s *DB) Status(ctx context.Context) (outbox.Status, error) {
	st := outbox.Status{ByType: map[string]int64{}}
	var oldest sql.NullInt64
	var now int64
	var delivered, parked sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT
  coalesce(sum(CASE WHEN delivered_at IS NULL AND parked_at IS NULL THEN 1 ELSE 0 END), 0),
  min(CASE WHEN delivered_at IS NULL AND parked_at IS NULL THEN created_at END),
  `+s.d.SQL.NowMicros()+`,
  sum(CASE WHEN delivered_at IS NOT NULL THEN 1 ELSE 0 END),
  sum(CASE WHEN parked_at IS NOT NULL THEN 1 ELSE 0 END)
FROM `+s.table).Scan(&st.Backlog, &oldest, &now, &delivered, &parked)
	if err != nil {
		return st, s.errf("status", err)
	}
	st.Delivered, st.ParkedCount = delivered.Int64, parked.Int64
	if oldest.Valid {
		st.Oldest = time.UnixMicro(oldest.Int64).UTC()
		st.OldestAge = max(time.Duration(now-oldest.Int64)*time.Microsecond, 0)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT type, count(*) FROM `+s.table+` WHERE delivered_at IS NULL AND parked_at IS NULL GROUP BY type`)
	if err != nil {
		return st, s.errf("status", err)
	}
	for rows.Next() {
		var t string
		var n int64
		if err := rows.Scan(&t, &n); err != nil {
			rows.Close()
			return st, s.errf("status", err)
		}
		st.ByType[t] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, s.errf("status", err)
	}
	if st.ParkedCount == 0 {
		return st, nil
	}
	rows, err = s.db.QueryContext(ctx, `SELECT seq, topic, id, type, subject, attempts, coalesce(last_error, ''), parked_at FROM `+s.table+
		` WHERE parked_at IS NOT NULL ORDER BY seq LIMIT ?`, outbox.MaxParkedListed)
	if err != nil {
		return st, s.errf("status", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p outbox.ParkedEvent
		var at int64
		if err := rows.Scan(&p.Seq, &p.Topic, &p.ID, &p.Type, &p.Subject, &p.Attempts, &p.Reason, &at); err != nil {
			return st, s.errf("status", err)
		}
		p.ParkedAt = time.UnixMicro(at).UTC()
		st.Parked = append(st.Parked, p)
	}
	return st, rows.Err()
}

// Migrations returns the embedded migrations for the store's table.
func (s *DB) Migrations() ([]outbox.Migration, error) {
	return Load(s.d.Migrations, "migrations", s.table)
}

// versionsDDL is the DDL of the <table>_migrations table.
func (s *DB) versionsDDL() string {
	if s.d.SQL == sqldialect.MySQL {
		return `CREATE TABLE IF NOT EXISTS ` + s.table + `_migrations (
  version INT NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL, applied_at BIGINT NOT NULL) ENGINE=InnoDB`
	}
	return `CREATE TABLE IF NOT EXISTS ` + s.table + `_migrations (
  version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`
}

// MigrationSQL returns the SQL text that Migrate runs on a database where
// no migration is applied, for review (eventkit migrate sql): run by hand,
// it leaves the tables Migrate creates, with their versions recorded. On
// SQLite it is one IMMEDIATE transaction; on MySQL it has none, as MySQL
// commits DDL implicitly.
func (s *DB) MigrationSQL() (string, error) {
	ms, err := s.Migrations()
	if err != nil {
		return "", err
	}
	script := Script(s.versionsDDL(), ms,
		`INSERT INTO `+s.table+`_migrations (version, name, applied_at) VALUES (%d, %s, `+s.d.SQL.NowMicros()+`)`)
	if s.d.SQL == sqldialect.SQLite {
		return "BEGIN IMMEDIATE;\n" + script + "COMMIT;\n", nil
	}
	return script, nil
}

// applied returns the applied versions.
func (s *DB) applied(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) (map[int]time.Time, error) {
	rows, err := q.QueryContext(ctx, `SELECT version, applied_at FROM `+s.table+`_migrations`)
	if err != nil {
		return nil, s.errf("migrations", err)
	}
	defer rows.Close()
	out := map[int]time.Time{}
	for rows.Next() {
		var v int
		var at int64
		if err := rows.Scan(&v, &at); err != nil {
			return nil, s.errf("migrations", err)
		}
		out[v] = time.UnixMicro(at).UTC()
	}
	return out, rows.Err()
}

// MigrateOn applies the store's missing migrations on conn, which holds the
// store's migration lock (or transaction): each migration's statements run
// one by one, then its version is recorded in <table>_migrations.
func MigrateOn(ctx context.Context, s *DB, conn *sql.Conn) error {
	ms, err := s.Migrations()
	if err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, s.versionsDDL()); err != nil {
		return s.errf("migrate", err)
	}
	applied, err := s.applied(ctx, conn)
	if err != nil {
		return err
	}
	for _, mig := range ms {
		if _, ok := applied[mig.Version]; ok {
			continue
		}
		for _, stmt := range Statements(mig.SQL) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%s: migration %d (%s): %w", s.d.Name, mig.Version, mig.Name, err)
			}
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO `+s.table+`_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			mig.Version, mig.Name, time.Now().UnixMicro()); err != nil {
			return s.errf("migrate", err)
		}
	}
	return nil
}

// MigrationStatus lists the embedded migrations and whether each is
// applied; a missing version table means none is.
func (s *DB) MigrationStatus(ctx context.Context) ([]outbox.MigrationState, error) {
	ms, err := s.Migrations()
	if err != nil {
		return nil, err
	}
	ok, err := s.d.SQL.TableExists(ctx, sqldialect.SQLConn{Q: s.db}, s.table+"_migrations")
	if err != nil {
		return nil, s.errf("migrations", err)
	}
	applied := map[int]time.Time{}
	if ok {
		if applied, err = s.applied(ctx, s.db); err != nil {
			return nil, err
		}
	}
	return States(ms, applied), nil
}
