package sqlinbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/eventkit/eventkit/internal/sqldialect"
)

// ErrVersionConflict is returned by CompareAndSwap when no row had the
// expected version: someone else changed the row first (or it is gone).
var ErrVersionConflict = errors.New("sqlinbox: version conflict")

// Execer is what CompareAndSwap needs: *sql.Tx, *sql.DB and *sql.Conn have it.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// CompareAndSwap runs an optimistic-concurrency UPDATE and returns
// ErrVersionConflict when it matched no row. The statement must both check
// and bump the version, for example
//
//	UPDATE accounts SET balance = $1, version = version + 1
//	WHERE id = $2 AND version = $3
//
// Run it in the inbox transaction (Tx(ctx)): a handler that read version v,
// decided, and writes "where version = v" cannot apply a decision made on a
// stale read, whether the other writer was a duplicate delivery or not.
func CompareAndSwap(ctx context.Context, ex Execer, query string, args ...any) error {
	res, err := ex.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("sqlinbox: compare-and-swap: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlinbox: compare-and-swap: %w", err)
	}
	if n == 0 {
		return ErrVersionConflict
	}
	return nil
}

// UpsertSQL returns an INSERT that, when a row with the same keyCols exists,
// overwrites its other columns instead: applying it twice with the same values
// leaves the same state, which makes a handler's write idempotent even
// without an inbox. Parameters are cols in order ($1.. for Postgres, ? else).
//
//	q, _ := UpsertSQL(Postgres, "stock", []string{"sku"}, []string{"sku", "qty"})
//	// INSERT INTO stock (sku, qty) VALUES ($1, $2)
//	//   ON CONFLICT (sku) DO UPDATE SET qty = EXCLUDED.qty
//
// Note that "SET qty = qty + 1" would NOT be idempotent: upserts set values,
// they do not add to them.
func UpsertSQL(d Dialect, table string, keyCols, cols []string) (string, error) {
	if _, err := tableName(Options{Table: table}); err != nil {
		return "", err
	}
	if err := d.Check("sqlinbox"); err != nil {
		return "", err
	}
	if len(keyCols) == 0 {
		return "", fmt.Errorf("sqlinbox: upsert into %s: no key columns", table)
	}
	for _, c := range append(append([]string(nil), cols...), keyCols...) {
		if sqldialect.Column.Check(c) != "" {
			return "", fmt.Errorf("sqlinbox: invalid column name %q", c)
		}
	}
	return d.Upsert(table, keyCols, cols), nil
}
