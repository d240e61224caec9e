package sqlinbox

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventkit/eventkit/inbox"
)

// Strict per-subject order (inbox.Sequencer): a position row per
// (consumer, topic, subject) with the last applied sequence number, the
// failed attempts of the head (the next number) and the number the subject
// is parked at. The row is locked (INSERT ... ON CONFLICT DO UPDATE on
// PostgreSQL and SQLite, INSERT ... ON DUPLICATE KEY UPDATE then SELECT
// ... FOR UPDATE on MySQL) in the handler's transaction, so that events of
// one subject, and copies of one event, run one at a time across every
// process of the group, and the advance commits with the handler's writes.

var (
	_ inbox.Sequencer = (*Inbox)(nil)
	_ inbox.Sequencer = (*PgxInbox)(nil)
)

// positionTable is the position table of an inbox table.
func positionTable(opts Options, table string) (string, error) {
	t := opts.PositionTable
	if t == "" {
		t = table + "_positions"
	}
	return t, CheckTable(t)
}

// seqQueries are the position statements of one dialect and table.
type seqQueries struct {
	table                                       string
	keyed                                       bool   // MySQL: rows are identified by a SHA-256 of (consumer, topic, subject)
	lock                                        string // creates the row if needed, locks it; returns last, failures, parked (PG, SQLite)
	create                                      string // MySQL: creates the row, outside the handler's transaction
	read                                        string // MySQL: reads the locked row
	advance, fail, failures, park, skip, unpark string
	// PostgreSQL: lock (and create) every position row of a batch in one
	// statement, and advance them in one (seqbatch.go).
	lockAll, advanceAll string
}

func newSeqQueries(d Dialect, table string) seqQueries {
	id := "consumer = ? AND topic = ? AND subject = ?"
	q := seqQueries{table: table}
	switch d {
	case MySQL:
		id = "k = ?"
		q.keyed = true
		q.create = "INSERT INTO " + table + " (k, consumer, topic, subject) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE k = k"
		q.read = "SELECT last_seq, failures, coalesce(parked_seq, 0) FROM " + table + " WHERE k = ? FOR UPDATE"
	default:
		q.lock = "INSERT INTO " + table + " AS p (consumer, topic, subject) VALUES (?, ?, ?) ON CONFLICT (consumer, topic, subject) DO UPDATE SET last_seq = p.last_seq RETURNING last_seq, failures, coalesce(parked_seq, 0)"
	}
	q.advance = "UPDATE " + table + " SET last_seq = ?, failures = 0, last_error = NULL WHERE " + id
	q.fail = "UPDATE " + table + " SET failures = failures + 1, last_error = ? WHERE " + id + " AND last_seq = ? AND parked_seq IS NULL"
	q.failures = "SELECT failures FROM " + table + " WHERE " + id
	q.park = "UPDATE " + table + " SET parked_seq = ?, last_error = ? WHERE " + id + " AND last_seq = ? AND parked_seq IS NULL"
	q.skip = "UPDATE " + table + " SET last_seq = parked_seq, parked_seq = NULL, failures = 0 WHERE " + id + " AND parked_seq = ?"
	q.unpark = "UPDATE " + table + " SET parked_seq = NULL, failures = 0 WHERE " + id + " AND parked_seq = ?"
	if d == Postgres {
		q.lockAll = "INSERT INTO " + table + " AS p (consumer, topic, subject)" +
			" SELECT x.c, x.t, x.s FROM json_to_recordset(?::json) AS x(c text, t text, s text) ORDER BY x.c, x.t, x.s" +
			" ON CONFLICT (consumer, topic, subject) DO UPDATE SET last_seq = p.last_seq" +
			" RETURNING consumer, topic, subject, last_seq, failures, coalesce(parked_seq, 0)"
		q.advanceAll = "UPDATE " + table + " AS p SET last_seq = x.q, failures = 0, last_error = NULL" +
			" FROM json_to_recordset(?::json) AS x(c text, t text, s text, q bigint)" +
			" WHERE p.consumer = x.c AND p.topic = x.t AND p.subject = x.s"
	}
	for _, s := range []*string{&q.lockAll, &q.advanceAll, &q.lock, &q.advance, &q.fail, &q.failures, &q.park, &q.skip, &q.unpark} {
		*s = d.Rebind(*s)
	}
	return q
}

// id returns the arguments that identify p's row.
func (q *seqQueries) id(p inbox.Position) []any {
	if q.keyed {
		k := sha256.Sum256([]byte(p.Consumer + "\x00" + p.Topic + "\x00" + p.Subject))
		return []any{k[:]}
	}
	return []any{p.Consumer, p.Topic, p.Subject}
}

// seqTx is a transaction of either driver.
type seqTx interface {
	queryRow(ctx context.Context, q string, args ...any) interface{ Scan(...any) error }
	exec(ctx context.Context, q string, args ...any) (int64, error)
	// query runs q and calls row for each row it returns.
	query(ctx context.Context, q string, args []any, row func(scan func(...any) error) error) error
	commit(ctx context.Context) error
	rollback(ctx context.Context)
	// handlerCtx puts the transaction where the handler finds it (Tx, PgxTx).
	handlerCtx(ctx context.Context) context.Context
}

type sqlSeqTx struct{ tx *sql.Tx }

func (t sqlSeqTx) queryRow(ctx context.Context, q string, args ...any) interface{ Scan(...any) error } {
	return t.tx.QueryRowContext(ctx, q, args...)
}
func (t sqlSeqTx) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
func (t sqlSeqTx) query(ctx context.Context, q string, args []any, row func(scan func(...any) error) error) error {
	rows, err := t.tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}
func (t sqlSeqTx) commit(context.Context) error { return t.tx.Commit() }
func (t sqlSeqTx) rollback(context.Context)     { _ = t.tx.Rollback() }
func (t sqlSeqTx) handlerCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, sqlTxKey{}, t.tx)
}

type pgxSeqTx struct{ tx pgx.Tx }

func (t pgxSeqTx) queryRow(ctx context.Context, q string, args ...any) interface{ Scan(...any) error } {
	return t.tx.QueryRow(ctx, q, args...)
}
func (t pgxSeqTx) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}
func (t pgxSeqTx) query(ctx context.Context, q string, args []any, row func(scan func(...any) error) error) error {
	rows, err := t.tx.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}
func (t pgxSeqTx) commit(ctx context.Context) error { return t.tx.Commit(ctx) }
func (t pgxSeqTx) rollback(ctx context.Context) {
	// On a context that still works when ctx has ended.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_ = t.tx.Rollback(rctx)
	cancel()
}
func (t pgxSeqTx) handlerCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, pgxTxKey{}, t.tx)
}

// sequencer implements inbox.Sequencer over begin and q.
type sequencer struct {
	q     seqQueries
	begin func(ctx context.Context) (seqTx, error)
	// execDB runs a statement outside any transaction (MySQL only).
	execDB func(ctx context.Context, q string, args ...any) (int64, error)
}

func checkPosition(p inbox.Position) error {
	if p.Seq <= 0 || p.Subject == "" {
		return fmt.Errorf("sqlinbox: invalid position %s: want a subject and a sequence number >= 1", p)
	}
	return nil
}

// inTx runs fn in a transaction and commits if fn returns nil.
func (s *sequencer) inTx(ctx context.Context, fn func(tx seqTx) error) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("sqlinbox: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tx.rollback(ctx)
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.commit(ctx); err != nil {
		return fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return nil
}

// errSkip rolls back inTx and is turned into the wrapped result.
type errSkip struct{ err error }

func (e errSkip) Error() string { return e.err.Error() }

var errNoRow = errors.New("sqlinbox: no position row")

func (s *sequencer) ProcessInOrder(ctx context.Context, p inbox.Position, fn func(ctx context.Context, failures int) error) error {
	if err := checkPosition(p); err != nil {
		return err
	}
	err := s.processInOrder(ctx, p, fn)
	if errors.Is(err, errNoRow) {
		// MySQL: the subject's first event creates its row (at 0) in a
		// statement of its own, then runs.
		if _, err := s.execDB(ctx, s.q.create, append(s.q.id(p), p.Consumer, p.Topic, p.Subject)...); err != nil {
			return fmt.Errorf("sqlinbox: create position %s: %w", p, err)
		}
		err = s.processInOrder(ctx, p, fn)
	}
	return err
}

func (s *sequencer) processInOrder(ctx context.Context, p inbox.Position, fn func(ctx context.Context, failures int) error) error {
	err := s.inTx(ctx, func(tx seqTx) error {
		var last, parked int64
		var failures int
		var err error
		if s.q.keyed {
			// SELECT ... FOR UPDATE locks an existing row and nothing
			// else. A missing row is created outside this transaction
			// (below): creating it here would take gap locks, and
			// concurrent INSERT ... ON DUPLICATE KEY UPDATEs of one key
			// deadlock on InnoDB.
			err = tx.queryRow(ctx, s.q.read, s.q.id(p)...).Scan(&last, &failures, &parked)
			if errors.Is(err, sql.ErrNoRows) {
				return errNoRow
			}
		} else {
			err = tx.queryRow(ctx, s.q.lock, s.q.id(p)...).Scan(&last, &failures, &parked)
		}
		if err != nil {
			return fmt.Errorf("sqlinbox: lock position %s: %w", p, err)
		}
		switch {
		case p.Seq <= last:
			return errSkip{inbox.ErrDuplicate}
		case parked != 0 && p.Seq == parked:
			return errSkip{inbox.ErrParked}
		case p.Seq > last+1 || parked != 0:
			return errSkip{&inbox.EarlyError{Position: p, Last: last, Parked: parked}}
		}
		if err := fn(tx.handlerCtx(ctx), failures); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, s.q.advance, append([]any{p.Seq}, s.q.id(p)...)...); err != nil {
			return fmt.Errorf("sqlinbox: advance position %s: %w", p, err)
		}
		return nil
	})
	var skip errSkip
	if errors.As(err, &skip) {
		return skip.err
	}
	return err
}

// ensureRow creates p's position row if it is missing. On PostgreSQL and
// SQLite the row is created by the lock in the handler's transaction, so a
// subject whose first event fails has none after the rollback; on MySQL it
// was created in a statement of its own before the handler ran.
func (s *sequencer) ensureRow(ctx context.Context, tx seqTx, p inbox.Position) error {
	if s.q.keyed {
		return nil
	}
	var last, parked int64
	var failures int
	if err := tx.queryRow(ctx, s.q.lock, s.q.id(p)...).Scan(&last, &failures, &parked); err != nil {
		return fmt.Errorf("lock position: %w", err)
	}
	return nil
}

func (s *sequencer) RecordFailure(ctx context.Context, p inbox.Position, reason string) (int, error) {
	if err := checkPosition(p); err != nil {
		return 0, err
	}
	var failures int
	err := s.inTx(ctx, func(tx seqTx) error {
		if err := s.ensureRow(ctx, tx, p); err != nil {
			return err
		}
		n, err := tx.exec(ctx, s.q.fail, append(append([]any{truncate(reason)}, s.q.id(p)...), p.Seq-1)...)
		if err != nil || n == 0 {
			return err
		}
		return tx.queryRow(ctx, s.q.failures, s.q.id(p)...).Scan(&failures)
	})
	if err != nil {
		return 0, fmt.Errorf("sqlinbox: record failure of %s: %w", p, err)
	}
	return failures, nil
}

func (s *sequencer) Park(ctx context.Context, p inbox.Position, reason string) error {
	if err := checkPosition(p); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx seqTx) error {
		if err := s.ensureRow(ctx, tx, p); err != nil {
			return err
		}
		_, err := tx.exec(ctx, s.q.park, append(append([]any{p.Seq, truncate(reason)}, s.q.id(p)...), p.Seq-1)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlinbox: park %s: %w", p, err)
	}
	return nil
}

func (s *sequencer) Skip(ctx context.Context, p inbox.Position) error {
	return s.resume(ctx, "skip", s.q.skip, p)
}

func (s *sequencer) Unpark(ctx context.Context, p inbox.Position) error {
	return s.resume(ctx, "unpark", s.q.unpark, p)
}

func (s *sequencer) resume(ctx context.Context, op, q string, p inbox.Position) error {
	if err := checkPosition(p); err != nil {
		return err
	}
	var n int64
	err := s.inTx(ctx, func(tx seqTx) (err error) {
		n, err = tx.exec(ctx, q, append(s.q.id(p), p.Seq)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlinbox: %s %s: %w", op, p, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", inbox.ErrNotParked, p)
	}
	return nil
}

// truncate keeps an error text within what every dialect's TEXT takes.
func truncate(s string) string {
	if len(s) > 4000 {
		s = s[:4000]
	}
	return strings.ToValidUTF8(s, "?")
}
