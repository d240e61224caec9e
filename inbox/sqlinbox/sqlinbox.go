package sqlinbox

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
)

// DefaultTable is the table name used unless Options.Table says otherwise.
const DefaultTable = "processed_events"

// Dialect selects the SQL spoken by a database/sql connection (the
// dialect layer every eventkit SQL table shares).
type Dialect = sqldialect.Dialect

// The supported dialects.
const (
	Postgres = sqldialect.Postgres // PostgreSQL via database/sql (pgx's stdlib driver, lib/pq, ...)
	MySQL    = sqldialect.MySQL    // MySQL and MariaDB (go-sql-driver/mysql)
	SQLite   = sqldialect.SQLite   // SQLite (modernc.org/sqlite, mattn/go-sqlite3)
)

// ErrDataLoss is returned by MigrateDown when undoing the last version
// would drop a table holding rows.
var ErrDataLoss = sqldialect.ErrDataLoss

// ErrInvalidTable is returned for a table name that is not a plain (optionally
// schema-qualified) SQL identifier.
var ErrInvalidTable = errors.New("sqlinbox: invalid table name")

// Options configure an inbox.
type Options struct {
	// Table is the table name, optionally schema-qualified
	// ("inbox.processed_events"). Default DefaultTable.
	Table string
	// TxOptions are used to begin the handler's transaction (nil: the
	// database's default isolation, READ COMMITTED on PostgreSQL, REPEATABLE
	// READ on MySQL). Not used by the pgx inbox.
	TxOptions *sql.TxOptions
	// PositionTable is the table of subject positions for strict order
	// (inbox.Sequencer), optionally schema-qualified. Default Table +
	// "_positions".
	PositionTable string
}

//go:embed migrations/*.sql migrations/positions/*.sql
var migrationFS embed.FS

func tableName(opts Options) (string, error) {
	t := opts.Table
	if t == "" {
		t = DefaultTable
	}
	return t, CheckTable(t)
}

// CheckTable returns an error wrapping ErrInvalidTable unless name is a plain
// SQL identifier, optionally schema-qualified (letters, digits and '_', not
// starting with a digit, at most 63 bytes per part). Names that pass need no
// quoting in any dialect; eventkit's other SQL tables use the same check.
func CheckTable(name string) error { return sqldialect.Table.Err(ErrInvalidTable, name) }

// migrations returns the versions of the inbox's tables: 1 the keys table
// and its index, 2 the subject positions (strict order).
func migrations(d Dialect, table, ptable string) (sqldialect.Line, error) {
	if err := d.Check("sqlinbox"); err != nil {
		return sqldialect.Line{}, err
	}
	keys, err := migrationFS.ReadFile("migrations/" + d.String() + ".sql")
	if err != nil {
		return sqldialect.Line{}, err
	}
	pos, err := migrationFS.ReadFile("migrations/positions/" + d.String() + ".sql")
	if err != nil {
		return sqldialect.Line{}, err
	}
	index := sqldialect.Base(table) + "_processed_at_idx"
	if d == SQLite && strings.Contains(table, ".") { // SQLite: index lives in the table's schema
		index = table[:strings.IndexByte(table, '.')+1] + index
	}
	keySQL := strings.NewReplacer("{{table}}", table, "{{index}}", index).Replace(string(keys))
	return sqldialect.Line{Pkg: "sqlinbox", Table: table, Migrations: []sqldialect.Migration{
		{Version: 1, Name: "create_processed_events", Table: table, Up: sqldialect.Statements(keySQL), Down: []string{"DROP TABLE " + table}},
		{Version: 2, Name: "create_positions", Table: ptable, Up: sqldialect.Statements(strings.ReplaceAll(string(pos), "{{table}}", ptable)),
			Down: []string{"DROP TABLE " + ptable}},
	}}, nil
}

// Migrate creates the default table (processed_events) and its index if they
// do not exist. It is idempotent.
func Migrate(ctx context.Context, db *sql.DB, d Dialect) error {
	in, err := New(db, d, Options{})
	if err != nil {
		return err
	}
	return in.Migrate(ctx)
}

// Inbox is the SQL inbox over database/sql. It is safe for concurrent use.
//
// Process begins a transaction, inserts the key, runs the handler with the
// transaction in its context (see Tx), and commits. A key that is already
// present (committed by an earlier delivery, or by a concurrent one that
// commits while this one waits on the key's lock) makes Process return
// inbox.ErrDuplicate without calling the handler.
type Inbox struct {
	db      *sql.DB
	dialect Dialect
	table   string
	txOpts  *sql.TxOptions

	insertSQL string
	pruneSQL  string

	sequencer
}

var _ inbox.Inbox = (*Inbox)(nil)
var _ inbox.Pruner = (*Inbox)(nil)

// New returns an inbox on db speaking dialect d. Call Migrate (once, at
// deploy or start) to create the table.
//
// SQLite serializes writers: open it with "_txlock=immediate" and a busy
// timeout ("_pragma=busy_timeout(5000)" for modernc.org/sqlite), or with
// db.SetMaxOpenConns(1), so that concurrent handlers wait instead of
// failing with SQLITE_BUSY.
func New(db *sql.DB, d Dialect, opts Options) (*Inbox, error) {
	table, err := tableName(opts)
	if err != nil {
		return nil, err
	}
	ptable, err := positionTable(opts, table)
	if err != nil {
		return nil, err
	}
	in := &Inbox{db: db, dialect: d, table: table, txOpts: opts.TxOptions}
	in.sequencer = sequencer{q: newSeqQueries(d, ptable), begin: func(ctx context.Context) (seqTx, error) {
		tx, err := db.BeginTx(ctx, opts.TxOptions)
		return sqlSeqTx{tx}, err
	}, execDB: func(ctx context.Context, q string, args ...any) (int64, error) {
		res, err := db.ExecContext(ctx, q, args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}}
	if err := d.Check("sqlinbox"); err != nil {
		return nil, err
	}
	in.insertSQL, in.pruneSQL = insertSQL(d, table), d.Rebind("DELETE FROM "+table+" WHERE processed_at < ?")
	return in, nil
}

// insertSQL records a key, doing nothing when it is there. (On MySQL, ON
// DUPLICATE KEY UPDATE with no change reports 0 rows affected without
// CLIENT_FOUND_ROWS, and unlike INSERT IGNORE it does not turn other
// errors, a too-long id say, into warnings.)
func insertSQL(d Dialect, table string) string {
	return d.Rebind("INSERT INTO "+table+" (consumer, event_id, event_type, processed_at) VALUES (?, ?, ?, ?)") +
		d.DoNothing("consumer")
}

// Table returns the table name in use.
func (in *Inbox) Table() string { return in.table }

func (in *Inbox) migrator() sqldialect.Migrator {
	return sqldialect.Migrator{D: in.dialect, InTx: sqldialect.SQLInTx(in.db)}
}

// MigrationSQL returns the SQL text Migrate runs on a database where none
// of the inbox's versions is applied, with the INSERTs recording them in
// eventkit_migrations, for review (eventkit migrate sql).
func (in *Inbox) MigrationSQL() (string, error) {
	l, err := migrations(in.dialect, in.table, in.sequencer.q.table)
	if err != nil {
		return "", err
	}
	return in.dialect.Script(l), nil
}

// Migrate applies the versions of the inbox's tables (1: the keys table and
// its index, 2: the subject positions) that are not applied yet, recording
// them in eventkit_migrations. Tables created by earlier, unversioned
// releases are adopted as they are. It is idempotent and safe to run
// concurrently.
func (in *Inbox) Migrate(ctx context.Context) error {
	l, err := migrations(in.dialect, in.table, in.sequencer.q.table)
	if err != nil {
		return err
	}
	return in.migrator().Up(ctx, l)
}

// MigrationStatus lists the inbox's versions and whether each is applied.
func (in *Inbox) MigrationStatus(ctx context.Context) ([]outbox.MigrationState, error) {
	l, err := migrations(in.dialect, in.table, in.sequencer.q.table)
	if err != nil {
		return nil, err
	}
	return in.migrator().Status(ctx, l)
}

// MigrateDown undoes the last applied version (2 drops the positions
// table, 1 the keys table) and returns it (Version 0: none was applied).
// Unless force, it refuses with an error wrapping ErrDataLoss, changing
// nothing, when that table holds rows.
func (in *Inbox) MigrateDown(ctx context.Context, force bool) (outbox.Migration, error) {
	l, err := migrations(in.dialect, in.table, in.sequencer.q.table)
	if err != nil {
		return outbox.Migration{}, err
	}
	m, err := in.migrator().Down(ctx, l, force)
	return outbox.Migration{Version: m.Version, Name: m.Name}, err
}

// timeArg is how processed_at is written: SQLite gets a fixed-width UTC text
// that sorts like time; the others a time.Time.
func (in *Inbox) timeArg(t time.Time) any {
	t = t.UTC()
	if in.dialect == SQLite {
		return t.Format("2006-01-02T15:04:05.000000Z")
	}
	if in.dialect == MySQL {
		return t.Truncate(time.Microsecond)
	}
	return t
}

// Process implements inbox.Inbox: begin, insert key, fn(ctx with Tx), commit.
// fn's error rolls everything back and is returned as is; a panic in fn
// rolls back and propagates.
func (in *Inbox) Process(ctx context.Context, key inbox.Key, fn func(ctx context.Context) error) error {
	tx, err := in.db.BeginTx(ctx, in.txOpts)
	if err != nil {
		return fmt.Errorf("sqlinbox: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	fresh, err := in.ClaimTx(ctx, tx, key)
	if err != nil {
		return err
	}
	if !fresh {
		return inbox.ErrDuplicate
	}
	if err := fn(context.WithValue(ctx, sqlTxKey{}, tx)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return nil
}

// ClaimTx inserts key in the caller's transaction and reports whether it was
// new (false: already processed). It is the Tx form of Process, for code
// that manages its own transaction: do the work only when fresh is true, in
// the same tx, and commit.
func (in *Inbox) ClaimTx(ctx context.Context, tx *sql.Tx, key inbox.Key) (fresh bool, err error) {
	res, err := tx.ExecContext(ctx, in.insertSQL, key.Consumer, key.EventID, key.EventType, in.timeArg(time.Now()))
	if err != nil {
		return false, fmt.Errorf("sqlinbox: record %s: %w", key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlinbox: record %s: %w", key, err)
	}
	return n > 0, nil
}

// Prune implements inbox.Pruner: it deletes keys processed before cutoff.
func (in *Inbox) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := in.db.ExecContext(ctx, in.pruneSQL, in.timeArg(cutoff))
	if err != nil {
		return 0, fmt.Errorf("sqlinbox: prune: %w", err)
	}
	return res.RowsAffected()
}

type sqlTxKey struct{}

// ErrNoTx is returned by Tx and PgxTx when ctx holds no inbox transaction
// of that kind: the handler does not run under an inbox (Config.Inbox
// unset), or under the other kind (a pgx inbox and Tx, a database/sql inbox
// and PgxTx). The error they return wraps it and is permanent
// (eventkit.IsPermanent): retrying cannot fix it, so a handler that returns
// it dead-letters the event at once.
var ErrNoTx = errors.New("sqlinbox: no inbox transaction in the context")

func noTx(want, have string) error {
	return eventkit.Permanent(fmt.Errorf("%w: want a %s, the handler's inbox gives %s", ErrNoTx, want, have))
}

// have names what ctx holds, for ErrNoTx.
func have(ctx context.Context) string {
	switch {
	case ctx.Value(sqlTxKey{}) != nil:
		return "a *sql.Tx (database/sql inbox: use Tx)"
	case ctx.Value(pgxTxKey{}) != nil:
		return "a pgx.Tx (pgx inbox: use PgxTx)"
	}
	return "none (is Config.Inbox set?)"
}

// Tx returns the *sql.Tx that Inbox.Process runs the handler in, or an
// error wrapping ErrNoTx when ctx does not come from a database/sql inbox.
// The handler writes its effects (and outbox events) through it; it must
// not commit or roll back.
func Tx(ctx context.Context) (*sql.Tx, error) {
	if tx, ok := ctx.Value(sqlTxKey{}).(*sql.Tx); ok && tx != nil {
		return tx, nil
	}
	return nil, noTx("*sql.Tx", have(ctx))
}
