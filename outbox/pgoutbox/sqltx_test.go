package pgoutbox_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// TestStoreSQLWriter runs the store suite with events written through
// database/sql transactions (Store.SQL) instead of pgx ones.
func TestStoreSQLWriter(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness { return withSQLWriter(t, harness(t)) })
}

// withSQLWriter makes h's transactions database/sql ones (Store.SQL).
func withSQLWriter(t *testing.T, h outboxtest.Harness) outboxtest.Harness {
	pool := newPool(t)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { db.Close() })
	w := h.Store.(*pgoutbox.Store)
	h.Begin = func(ctx context.Context) (outboxtest.Tx, error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		return outboxtest.NewTx[*sql.Tx](w.SQL(), tx,
			func(context.Context) error { return tx.Commit() },
			func(context.Context) error { return tx.Rollback() }), nil
	}
	return h
}
