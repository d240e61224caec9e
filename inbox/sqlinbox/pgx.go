package sqlinbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
)

// PgxDB is what the pgx inbox needs: *pgxpool.Pool and *pgx.Conn have it.
type PgxDB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// PgxInbox is the PostgreSQL inbox over pgx (a *pgxpool.Pool, usually). It
// has the same semantics as Inbox; the handler finds its transaction with
// PgxTx.
type PgxInbox struct {
	db        PgxDB
	table     string
	insertSQL string
	pruneSQL  string

	sequencer
}

var _ inbox.Inbox = (*PgxInbox)(nil)
var _ inbox.Pruner = (*PgxInbox)(nil)

// NewPgx returns a PostgreSQL inbox on db. opts.TxOptions is ignored.
func NewPgx(db PgxDB, opts Options) (*PgxInbox, error) {
	table, err := tableName(opts)
	if err != nil {
		return nil, err
	}
	ptable, err := positionTable(opts, table)
	if err != nil {
		return nil, err
	}
	return &PgxInbox{
		db:        db,
		table:     table,
		insertSQL: insertSQL(Postgres, table),
		pruneSQL:  Postgres.Rebind("DELETE FROM " + table + " WHERE processed_at < ?"),
		sequencer: sequencer{q: newSeqQueries(Postgres, ptable), begin: func(ctx context.Context) (seqTx, error) {
			tx, err := db.Begin(ctx)
			return pgxSeqTx{tx}, err
		}},
	}, nil
}

// Table returns the table name in use.
func (in *PgxInbox) Table() string { return in.table }

func (in *PgxInbox) migrator() sqldialect.Migrator {
	return sqldialect.Migrator{D: Postgres, InTx: sqldialect.PgxInTx(in.db)}
}

// Migrate applies the versions of the inbox's tables that are not applied
// yet (see Inbox.Migrate).
func (in *PgxInbox) Migrate(ctx context.Context) error {
	l, err := migrations(Postgres, in.table, in.sequencer.q.table)
	if err != nil {
		return err
	}
	return in.migrator().Up(ctx, l)
}

// MigrationStatus lists the inbox's versions and whether each is applied.
func (in *PgxInbox) MigrationStatus(ctx context.Context) ([]outbox.MigrationState, error) {
	l, err := migrations(Postgres, in.table, in.sequencer.q.table)
	if err != nil {
		return nil, err
	}
	return in.migrator().Status(ctx, l)
}

// Process implements inbox.Inbox (see Inbox.Process).
func (in *PgxInbox) Process(ctx context.Context, key inbox.Key, fn func(ctx context.Context) error) error {
	tx, err := in.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("sqlinbox: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			// Rollback on a context that still works when ctx has ended.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = tx.Rollback(rctx)
			cancel()
		}
	}()
	fresh, err := in.ClaimTx(ctx, tx, key)
	if err != nil {
		return err
	}
	if !fresh {
		return inbox.ErrDuplicate
	}
	if err := fn(context.WithValue(ctx, pgxTxKey{}, tx)); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return nil
}

// ClaimTx inserts key in the caller's pgx transaction and reports whether it
// was new (false: already processed).
func (in *PgxInbox) ClaimTx(ctx context.Context, tx pgx.Tx, key inbox.Key) (fresh bool, err error) {
	tag, err := tx.Exec(ctx, in.insertSQL, key.Consumer, key.EventID, key.EventType, time.Now().UTC())
	if err != nil {
		return false, fmt.Errorf("sqlinbox: record %s: %w", key, err)
	}
	return tag.RowsAffected() > 0, nil
}

// Prune implements inbox.Pruner.
func (in *PgxInbox) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	tag, err := in.db.Exec(ctx, in.pruneSQL, cutoff.UTC())
	if err != nil {
		return 0, fmt.Errorf("sqlinbox: prune: %w", err)
	}
	return tag.RowsAffected(), nil
}

type pgxTxKey struct{}

// PgxTx returns the pgx.Tx that PgxInbox.Process runs the handler in, or
// an error wrapping ErrNoTx (see Tx). The handler must not commit or roll
// it back.
func PgxTx(ctx context.Context) (pgx.Tx, error) {
	if tx, ok := ctx.Value(pgxTxKey{}).(pgx.Tx); ok && tx != nil {
		return tx, nil
	}
	return nil, noTx("pgx.Tx", have(ctx))
}
