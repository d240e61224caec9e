package sqlinbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventkit/eventkit/inbox"
)

// savepoint is the name of the per-event savepoint of ProcessBatch. Each
// one is released (after success, or after a rollback to it) before the
// next is set, so they never nest.
const savepoint = "eventkit_inbox_item"

var (
	_ inbox.Batcher = (*Inbox)(nil)
	_ inbox.Batcher = (*PgxInbox)(nil)
)

// ProcessBatch implements inbox.Batcher: one transaction for all keys, a
// SAVEPOINT per key around its insert and fn, one COMMIT. A failed fn (or a
// failed insert of its key) is rolled back to its savepoint and reported in
// its result; the others commit. If a savepoint statement or the commit
// fails, the whole transaction is rolled back and the error returned.
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
	results, err := processBatch(keys, exec,
		func(key inbox.Key) (bool, error) { return in.ClaimTx(ctx, tx, key) },
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
	results, err := processBatch(keys, exec,
		func(key inbox.Key) (bool, error) { return in.ClaimTx(ctx, tx, key) },
		func(i int) error { return fn(context.WithValue(ctx, pgxTxKey{}, pgx.Tx(tx)), i) })
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return results, nil
}

// processBatch is the driver-independent loop of ProcessBatch.
func processBatch(keys []inbox.Key, exec func(q string) error, claim func(inbox.Key) (bool, error), fn func(i int) error) ([]error, error) {
	results := make([]error, len(keys))
	for i, key := range keys {
		if err := exec("SAVEPOINT " + savepoint); err != nil {
			return nil, fmt.Errorf("sqlinbox: savepoint for %s: %w", key, err)
		}
		fresh, err := claim(key)
		switch {
		case err != nil:
		case !fresh:
			results[i] = inbox.ErrDuplicate
		default:
			err = fn(i)
			if err == nil {
				// With the handler's work done, its savepoint goes; a
				// release that fails (a statement failed in the handler
				// and left the transaction aborted) fails the event.
				if rerr := exec("RELEASE SAVEPOINT " + savepoint); rerr == nil {
					continue
				} else {
					err = fmt.Errorf("sqlinbox: release savepoint for %s: %w", key, rerr)
				}
			}
		}
		if err != nil {
			results[i] = err
			if rerr := exec("ROLLBACK TO SAVEPOINT " + savepoint); rerr != nil {
				return nil, fmt.Errorf("sqlinbox: rollback to savepoint for %s (after %v): %w", key, err, rerr)
			}
		}
		if err := exec("RELEASE SAVEPOINT " + savepoint); err != nil {
			return nil, fmt.Errorf("sqlinbox: release savepoint for %s: %w", key, err)
		}
	}
	return results, nil
}
