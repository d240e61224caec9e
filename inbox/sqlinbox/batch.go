package sqlinbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/eventkit/eventkit/inbox"
)

// savepoint prefixes the per-event savepoints of ProcessBatch on MySQL and
// SQLite (suffix: the event's index in the batch).
const savepoint = "eventkit_inbox_item"

var (
	_ inbox.Batcher = (*Inbox)(nil)
	_ inbox.Batcher = (*PgxInbox)(nil)
)

// ProcessBatch implements inbox.Batcher: one transaction for all keys and
// one COMMIT.
//
// On PostgreSQL it sets no savepoint: BEGIN, one INSERT ... ON CONFLICT DO
// NOTHING RETURNING for every key of the batch (the keys not returned are
// duplicates and their handlers are not called), the handlers one after
// the other in the transaction, COMMIT. When a handler fails (or a
// statement of it: PostgreSQL then refuses every later statement of the
// transaction), the transaction is rolled back, the events before the
// failed one run again in a new transaction, which commits, and the ones
// after it get inbox.ErrNotRun, for the caller to process again. So a
// failure costs a rollback and a second run of the handlers before it,
// and nothing is ever recorded twice: the only commit is that of the last
// run. If that commit fails (a deferred constraint, a handler that
// swallowed a failed statement's error) the error is returned and nothing
// of the batch was recorded.
//
// On MySQL and SQLite each event gets a savepoint, set before its key
// insert and released after its handler: a failed handler (or key
// insert) is rolled back to its savepoint and reported in its result while
// the others commit. The release is a check: after a deadlock (MySQL) or
// some errors (SQLite) the database rolls the whole transaction back and
// goes on in autocommit mode, and only a failing RELEASE tells, so it
// fails the batch. (Without savepoints a handler that swallowed such an
// error would let the next events' writes autocommit one statement at a
// time; PostgreSQL has no such mode.)
//
// If BEGIN, the key insert or the commit fails, the whole transaction is
// rolled back and the error returned. The keys of a batch are inserted in
// the order of (consumer, event id), so that concurrent batches lock them
// in one order.
func (in *Inbox) ProcessBatch(ctx context.Context, keys []inbox.Key, fn func(ctx context.Context, i int) error) ([]error, error) {
	if in.dialect == Postgres {
		return untilFailure(ctx, keys, fn, func() (*batchTx, error) {
			tx, err := in.db.BeginTx(ctx, in.txOpts)
			if err != nil {
				return nil, fmt.Errorf("sqlinbox: begin: %w", err)
			}
			return &batchTx{
				ctx: context.WithValue(ctx, sqlTxKey{}, tx),
				claim: func(keys []inbox.Key) (map[keyID]bool, error) {
					args, err := claimAllArgs(keys)
					if err != nil {
						return nil, err
					}
					rows, err := tx.QueryContext(ctx, claimAllSQL(in.table), args...)
					if err != nil {
						return nil, fmt.Errorf("sqlinbox: record batch: %w", err)
					}
					defer func() { _ = rows.Close() }()
					return scanClaimed(rows)
				},
				commit:   tx.Commit,
				rollback: func() { _ = tx.Rollback() },
			}, nil
		})
	}
	tx, err := in.db.BeginTx(ctx, in.txOpts)
	if err != nil {
		return nil, fmt.Errorf("sqlinbox: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	results, err := withSavepoints(keys, func(q string) error {
		_, err := tx.ExecContext(ctx, q)
		return err
	}, func(key inbox.Key) (bool, error) { return in.ClaimTx(ctx, tx, key) },
		func(i int) error { return fn(context.WithValue(ctx, sqlTxKey{}, tx), i) })
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return results, nil
}

// ProcessBatch implements inbox.Batcher (see Inbox.ProcessBatch: the
// PostgreSQL way, no savepoints).
func (in *PgxInbox) ProcessBatch(ctx context.Context, keys []inbox.Key, fn func(ctx context.Context, i int) error) ([]error, error) {
	return untilFailure(ctx, keys, fn, func() (*batchTx, error) {
		tx, err := in.db.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("sqlinbox: begin: %w", err)
		}
		return &batchTx{
			ctx: context.WithValue(ctx, pgxTxKey{}, tx),
			claim: func(keys []inbox.Key) (map[keyID]bool, error) {
				args, err := claimAllArgs(keys)
				if err != nil {
					return nil, err
				}
				rows, err := tx.Query(ctx, claimAllSQL(in.table), args...)
				if err != nil {
					return nil, fmt.Errorf("sqlinbox: record batch: %w", err)
				}
				defer rows.Close()
				return scanClaimed(rows)
			},
			commit: func() error { return tx.Commit(ctx) },
			rollback: func() {
				// On a context that still works when ctx has ended.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				_ = tx.Rollback(rctx)
				cancel()
			},
		}, nil
	})
}

// batchTx is one transaction of untilFailure, whichever the driver.
type batchTx struct {
	ctx context.Context // the caller's, with the transaction for Tx/PgxTx
	// claim inserts keys in one statement and returns those it inserted.
	claim    func(keys []inbox.Key) (map[keyID]bool, error)
	commit   func() error
	rollback func()
}

type keyID struct{ consumer, id string }

// untilFailure is ProcessBatch without savepoints (PostgreSQL): run the
// batch in one transaction; when fn(i) fails, roll back, give every later
// key ErrNotRun and run keys[:i] again in a new transaction, until a run
// has no failure and commits (or has nothing fresh left to commit). Only
// the last run commits, so err != nil means nothing was recorded.
func untilFailure(ctx context.Context, keys []inbox.Key, fn func(ctx context.Context, i int) error, begin func() (*batchTx, error)) ([]error, error) {
	results := make([]error, len(keys))
	for n := len(keys); ; {
		failed, ferr, err := runOnce(ctx, begin, keys[:n], results, fn)
		if err != nil {
			return nil, err
		}
		if failed < 0 {
			return results, nil
		}
		results[failed] = ferr
		for j := failed + 1; j < n; j++ {
			results[j] = inbox.ErrNotRun
		}
		n = failed
		if !anyFresh(results[:n]) { // only duplicates before it: nothing to commit
			return results, nil
		}
	}
}

// runOnce is one run of untilFailure in a new transaction: it claims keys,
// sets results[i] to nil or ErrDuplicate for each key it gets through, and
// commits if no fn failed (failed -1), or rolls back and returns the index
// of the failed fn and its error; err is a failure of the transaction
// itself (nothing committed). A panic in fn rolls back and propagates.
func runOnce(ctx context.Context, begin func() (*batchTx, error), keys []inbox.Key, results []error, fn func(ctx context.Context, i int) error) (failed int, ferr, err error) {
	if err := ctx.Err(); err != nil {
		return -1, nil, err
	}
	tx, err := begin()
	if err != nil {
		return -1, nil, err
	}
	committed := false
	defer func() {
		if !committed {
			tx.rollback()
		}
	}()
	fresh, err := tx.claim(keys)
	if err != nil {
		return -1, nil, err
	}
	for i, key := range keys {
		k := keyID{key.Consumer, key.EventID}
		if !fresh[k] {
			results[i] = inbox.ErrDuplicate
			continue
		}
		delete(fresh, k) // a later copy in the batch is a duplicate of this one
		if err := tx.ctx.Err(); err != nil {
			return -1, nil, err
		}
		if ferr := fn(tx.ctx, i); ferr != nil {
			return i, ferr, nil
		}
		results[i] = nil
	}
	if err := tx.commit(); err != nil {
		return -1, nil, fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return -1, nil, nil
}

func anyFresh(results []error) bool {
	for _, r := range results {
		if r == nil {
			return true
		}
	}
	return false
}

// scanClaimed reads the keys a claim returned (*sql.Rows or pgx.Rows).
func scanClaimed(rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}) (map[keyID]bool, error) {
	got := map[keyID]bool{}
	for rows.Next() {
		var k keyID
		if err := rows.Scan(&k.consumer, &k.id); err != nil {
			return nil, fmt.Errorf("sqlinbox: record batch: %w", err)
		}
		got[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlinbox: record batch: %w", err)
	}
	return got, nil
}

// withSavepoints is ProcessBatch with a savepoint per event (MySQL,
// SQLite): exec runs a statement, claim records a key.
func withSavepoints(keys []inbox.Key, exec func(q string) error, claim func(inbox.Key) (bool, error), fn func(i int) error) ([]error, error) {
	results := make([]error, len(keys))
	done := map[keyID]bool{} // recorded by this batch
	for i, key := range keys {
		k := keyID{key.Consumer, key.EventID}
		if done[k] {
			results[i] = inbox.ErrDuplicate
			continue
		}
		sp := savepoint + "_" + strconv.Itoa(i)
		if err := exec("SAVEPOINT " + sp); err != nil {
			return nil, fmt.Errorf("sqlinbox: savepoint for %s: %w", key, err)
		}
		fresh, err := claim(key)
		if err == nil && !fresh {
			results[i] = inbox.ErrDuplicate
			done[k] = true
			continue
		}
		if err == nil {
			if err = fn(i); err == nil {
				if rerr := exec("RELEASE SAVEPOINT " + sp); rerr != nil {
					err = fmt.Errorf("sqlinbox: release savepoint for %s: %w", key, rerr)
				}
			}
			if err == nil {
				done[k] = true
				continue
			}
		}
		results[i] = err
		if rerr := exec("ROLLBACK TO SAVEPOINT " + sp); rerr != nil {
			return nil, fmt.Errorf("sqlinbox: rollback to savepoint for %s (after %v): %w", key, err, rerr)
		}
	}
	return results, nil
}

// claimAllSQL inserts a batch's keys in one statement of one shape
// (PostgreSQL): $1 is the time, $2 a JSON array of {c, id, t}. One text for
// every batch size keeps each connection's prepared statements few. The
// rows go in in (consumer, event id) order, so that two batches sharing
// keys lock them in the same order.
func claimAllSQL(table string) string {
	return "INSERT INTO " + table + " (consumer, event_id, event_type, processed_at)" +
		" SELECT x.c, x.id, x.t, $1 FROM json_to_recordset($2::json) AS x(c text, id text, t text)" +
		" ORDER BY x.c, x.id ON CONFLICT DO NOTHING RETURNING consumer, event_id"
}

func claimAllArgs(keys []inbox.Key) ([]any, error) {
	type row struct {
		C  string `json:"c"`
		ID string `json:"id"`
		T  string `json:"t"`
	}
	rows := make([]row, len(keys))
	for i, k := range keys {
		rows[i] = row{k.Consumer, k.EventID, k.EventType}
	}
	b, err := json.Marshal(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlinbox: record batch: %w", err)
	}
	return []any{time.Now().UTC(), string(b)}, nil
}
