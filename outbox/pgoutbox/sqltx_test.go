package pgoutbox_test

import (
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
	h.Begin = outboxtest.BeginSQL(db, w.SQL())
	return h
}
