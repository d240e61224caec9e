package sqlinbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventkit/eventkit/inbox"
)

// savepoint prefixes the per-event savepoints of ProcessBatch (suffix: the
// event's index in the batch).
const savepoint = "eventkit_inbox_item"

var (
	_ inbox.Batcher = (*Inbox)(nil)
	_ inbox.Batcher = (*PgxInbox)(nil)
)

// ProcessBatch implements inbox.Batcher: one transaction for all keys, a
// SAVEPOINT per event around its handler, one COMMIT. A failed fn (or a
// failed insert of its key) is rolled back to its savepoint, key included,
// and reported in its result; the others commit. If a savepoint statement,
// the batch's key insert or the commit fails, the whole transaction is
// rolled back and the error returned.
//
// On PostgreSQL the keys are inserted with one statement before the first
// handler (in the batch's order, so concurrent batches sorted the same way
// lock them in one order), duplicates get no savepoint, and savepoints are
// not released (an aborted transaction fails the next statement anyway); a
// failed event's key is deleted after the rollback to its savepoint. Each
// handler that writes uses a subtransaction id: keep batches at 64 or
// fewer on PostgreSQL, beyond that the backend's subtransaction cache
// overflows and snapshots get slower for every session. On MySQL and SQLite
// each event's savepoint is set before its key insert and released after
// its handler, a release that fails (the database rolled the whole
// transaction back: a MySQL deadlock) failing the batch.
func (in *Inbox) ProcessBatch(ctx context.Context, keys []inbox.Key, fn func(ctx context.Context, i int) error) ([]error, error) {
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
	exec := func(q string) error {
		_, err := tx.ExecContext(ctx, q)
		return err
	}
	ops := batchOps{
		exec:    exec,
		claim:   func(key inbox.Key) (bool, error) { return in.ClaimTx(ctx, tx, key) },
		release: in.dialect != Postgres,
	}
	if in.dialect == Postgres {
		ops.claimAll = func(keys []inbox.Key) (map[keyID]bool, error) {
			args, err := claimAllArgs(keys)
			if err != nil {
				return nil, err
			}
			rows, err := tx.QueryContext(ctx, claimAllSQL(in.table), args...)
			if err != nil {
				return nil, fmt.Errorf("sqlinbox: record batch: %w", err)
			}
			defer rows.Close()
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
		ops.unclaim = func(key inbox.Key) error {
			_, err := tx.ExecContext(ctx, "DELETE FROM "+in.table+" WHERE consumer = $1 AND event_id = $2", key.Consumer, key.EventID)
			return err
		}
	}
	results, err := processBatch(keys, ops, func(i int) error { return fn(context.WithValue(ctx, sqlTxKey{}, tx), i) })
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return results, nil
}

// ProcessBatch implements inbox.Batcher (see Inbox.ProcessBatch).
func (in *PgxInbox) ProcessBatch(ctx context.Context, keys []inbox.Key, fn func(ctx context.Context, i int) error) ([]error, error) {
	tx, err := in.db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlinbox: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = tx.Rollback(rctx)
			cancel()
		}
	}()
	exec := func(q string) error {
		_, err := tx.Exec(ctx, q)
		return err
	}
	ops := batchOps{
		exec:  exec,
		claim: func(key inbox.Key) (bool, error) { return in.ClaimTx(ctx, tx, key) },
		claimAll: func(keys []inbox.Key) (map[keyID]bool, error) {
			args, err := claimAllArgs(keys)
			if err != nil {
				return nil, err
			}
			rows, err := tx.Query(ctx, claimAllSQL(in.table), args...)
			if err != nil {
				return nil, fmt.Errorf("sqlinbox: record batch: %w", err)
			}
			defer rows.Close()
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
		},
		unclaim: func(key inbox.Key) error {
			_, err := tx.Exec(ctx, "DELETE FROM "+in.table+" WHERE consumer = $1 AND event_id = $2", key.Consumer, key.EventID)
			return err
		},
	}
	results, err := processBatch(keys, ops, func(i int) error { return fn(context.WithValue(ctx, pgxTxKey{}, pgx.Tx(tx)), i) })
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return results, nil
}

// batchOps are the statements processBatch needs from a driver.
type batchOps struct {
	exec  func(q string) error
	claim func(inbox.Key) (bool, error)
	// claimAll, if not nil, inserts every key in one statement and returns
	// those it inserted (PostgreSQL). Then a fresh event needs no claim of
	// its own, a duplicate no savepoint, and a failed one unclaim.
	claimAll func([]inbox.Key) (map[keyID]bool, error)
	unclaim  func(inbox.Key) error
	// release: RELEASE each savepoint after its event succeeded. MySQL and
	// SQLite need it as a check: after a deadlock (MySQL) or some errors
	// (SQLite) they roll the whole transaction back and go on in autocommit
	// mode, and only a failing RELEASE tells. PostgreSQL refuses every
	// statement of an aborted transaction, so the next SAVEPOINT (or the
	// COMMIT) fails anyway and the release round trip is saved.
	release bool
}

type keyID struct{ consumer, id string }

// processBatch is the driver-independent loop of ProcessBatch.
func processBatch(keys []inbox.Key, ops batchOps, fn func(i int) error) ([]error, error) {
	results := make([]error, len(keys))
	var preclaimed map[keyID]bool
	if ops.claimAll != nil {
		var err error
		if preclaimed, err = ops.claimAll(keys); err != nil {
			return nil, err
		}
	}
	done := map[keyID]bool{}   // recorded by this batch
	failed := map[keyID]bool{} // an earlier copy failed: claim again
	for i, key := range keys {
		k := keyID{key.Consumer, key.EventID}
		if done[k] || (ops.claimAll != nil && !preclaimed[k] && !failed[k]) {
			results[i] = inbox.ErrDuplicate
			continue
		}
		sp := savepoint + "_" + strconv.Itoa(i)
		if err := ops.exec("SAVEPOINT " + sp); err != nil {
			return nil, fmt.Errorf("sqlinbox: savepoint for %s: %w", key, err)
		}
		pre := preclaimed[k]
		delete(preclaimed, k)
		var err error
		if !pre {
			var fresh bool
			fresh, err = ops.claim(key)
			if err == nil && !fresh {
				results[i] = inbox.ErrDuplicate
				done[k] = true
				continue
			}
		}
		if err == nil {
			if err = fn(i); err == nil && ops.release {
				if rerr := ops.exec("RELEASE SAVEPOINT " + sp); rerr != nil {
					err = fmt.Errorf("sqlinbox: release savepoint for %s: %w", key, rerr)
				}
			}
			if err == nil {
				done[k] = true
				continue
			}
		}
		results[i] = err
		failed[k] = true
		if rerr := ops.exec("ROLLBACK TO SAVEPOINT " + sp); rerr != nil {
			return nil, fmt.Errorf("sqlinbox: rollback to savepoint for %s (after %v): %w", key, err, rerr)
		}
		if pre {
			if uerr := ops.unclaim(key); uerr != nil {
				return nil, fmt.Errorf("sqlinbox: unclaim %s (after %v): %w", key, err, uerr)
			}
		}
	}
	return results, nil
}

// claimAllSQL inserts a batch's keys in one statement of one shape
// (PostgreSQL): $1 is the time, $2 a JSON array of {c, id, t}. One text for
// every batch size keeps each connection's prepared statements few.
func claimAllSQL(table string) string {
	return "INSERT INTO " + table + " (consumer, event_id, event_type, processed_at)" +
		" SELECT x.c, x.id, x.t, $1 FROM ROWS FROM (json_to_recordset($2::json) AS (c text, id text, t text)) WITH ORDINALITY AS x(c, id, t, n)" +
		" ORDER BY x.n ON CONFLICT DO NOTHING RETURNING consumer, event_id"
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
