package sqldialect

import (
	"context"
	"database/sql"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Conn is what the shared SQL code needs of a pool, connection or
// transaction, so that pgx and database/sql share one implementation.
type Conn interface {
	Exec(ctx context.Context, q string, args ...any) (int64, error)
	// Query runs q and calls row for each result row with its Scan.
	Query(ctx context.Context, q string, args []any, row func(scan func(dest ...any) error) error) error
}

// InTx runs fn in a transaction (committed when fn returns nil).
type InTx func(ctx context.Context, fn func(Conn) error) error

// SQLConn adapts a *sql.DB, *sql.Conn or *sql.Tx to Conn.
type SQLConn struct {
	Q interface {
		ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	}
}

// Exec implements Conn.
func (c SQLConn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := c.Q.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Query implements Conn.
func (c SQLConn) Query(ctx context.Context, q string, args []any, row func(scan func(dest ...any) error) error) error {
	rows, err := c.Q.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return scanEach(rows, row)
}

// scanEach calls row with the Scan of each of rows, then reports rows'
// error; the caller closes rows.
func scanEach(rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}, row func(scan func(dest ...any) error) error) error {
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// SQLInTx runs fn in a transaction of db.
func SQLInTx(db *sql.DB) InTx {
	return func(ctx context.Context, fn func(Conn) error) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(SQLConn{tx}); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}
}

// PgxConn adapts a pgx pool, connection or transaction to Conn.
type PgxConn struct {
	Q interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	}
}

// Exec implements Conn.
func (c PgxConn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := c.Q.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}

// Query implements Conn.
func (c PgxConn) Query(ctx context.Context, q string, args []any, row func(scan func(dest ...any) error) error) error {
	rows, err := c.Q.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return scanEach(rows, row)
}

// PgxInTx runs fn in a transaction of db.
func PgxInTx(db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}) InTx {
	return func(ctx context.Context, fn func(Conn) error) error {
		return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return fn(PgxConn{tx}) })
	}
}

// TableExists reports whether table (which passed Check) exists.
func (d Dialect) TableExists(ctx context.Context, c Conn, table string) (bool, error) {
	s, ok := d.spec()
	if !ok {
		return false, d.Check("sqldialect")
	}
	q, args := s.tableExists(table)
	var n int64
	err := c.Query(ctx, d.Rebind(q), args, func(scan func(...any) error) error { return scan(&n) })
	return n > 0, err
}

// DropPrefixed drops every table, and on PostgreSQL every function without
// arguments, of the current schema whose name starts with prefix (with
// CASCADE on PostgreSQL, so triggers and dependent objects go too). For
// names unique to one run, such as a benchmark's tables: it drops whatever
// matches.
func (d Dialect) DropPrefixed(ctx context.Context, c Conn, prefix string) error {
	s, ok := d.spec()
	if !ok {
		return d.Check("sqldialect")
	}
	like := strings.NewReplacer(`\`, `\\`, "_", `\_`, "%", `\%`).Replace(prefix) + "%"
	args := []any{like}
	if strings.Count(s.prefixed, "?") == 2 {
		args = append(args, like)
	}
	var drops []string
	err := c.Query(ctx, d.Rebind(s.prefixed), args, func(scan func(...any) error) error {
		var kind, name string
		if err := scan(&kind, &name); err != nil {
			return err
		}
		drops = append(drops, "DROP "+kind+" IF EXISTS "+name)
		return nil
	})
	if err != nil {
		return err
	}
	for _, st := range drops {
		if s.cascade {
			st += " CASCADE"
		}
		if _, err := c.Exec(ctx, st); err != nil {
			return err
		}
	}
	return nil
}
