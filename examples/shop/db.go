package shop

import (
	"context"
	"database/sql"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// DB is a service's database with its SQL dialect.
type DB struct {
	*sql.DB
	Dialect sqlinbox.Dialect
}

// Q rewrites '?' placeholders for the dialect ($1, $2, ... on Postgres).
func (d DB) Q(q string) string { return d.Dialect.Rebind(q) }

// upsert returns the dialect's "insert or update" suffix for a conflict on key.
func (d DB) upsert(key, set string) string { return d.Dialect.OnConflict([]string{key}, set) }

func (d DB) execAll(ctx context.Context, stmts ...string) error {
	for _, s := range stmts {
		if _, err := d.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// Outbox adds events to a service's outbox inside tx (the outbox store's Add).
type Outbox func(ctx context.Context, tx *sql.Tx, topic string, events ...eventkit.Event) error

// TxFunc is a handler that runs inside the consumer's inbox transaction.
type TxFunc func(ctx context.Context, tx *sql.Tx, ev eventkit.Event) error

// forUpdate is the locking-read suffix of the dialect (SQLite has none: its
// write transactions are serialized anyway).
func (d DB) forUpdate() string {
	if d.Dialect == sqlinbox.SQLite {
		return ""
	}
	return " FOR UPDATE"
}
