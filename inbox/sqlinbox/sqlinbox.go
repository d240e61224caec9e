package sqlinbox

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/eventkit/eventkit/inbox"
)

// DefaultTable is the table name used unless Options.Table says otherwise.
const DefaultTable = "processed_events"

// Dialect selects the SQL spoken by a database/sql connection.
type Dialect int

// The supported dialects.
const (
	Postgres Dialect = iota + 1 // PostgreSQL via database/sql (pgx's stdlib driver, lib/pq, ...)
	MySQL                       // MySQL and MariaDB (go-sql-driver/mysql)
	SQLite                      // SQLite (modernc.org/sqlite, mattn/go-sqlite3)
)

func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case MySQL:
		return "mysql"
	case SQLite:
		return "sqlite"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

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

//go:embed migrations/*.sql
var migrations embed.FS

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

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
func CheckTable(name string) error {
	if !identRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want letters, digits and '_', optionally schema.table)", ErrInvalidTable, name)
	}
	return nil
}

// migrationSQL returns the statements creating the table for dialect d.
func migrationSQL(d Dialect, table string) ([]string, error) {
	var file string
	switch d {
	case Postgres:
		file = "postgres.sql"
	case MySQL:
		file = "mysql.sql"
	case SQLite:
		file = "sqlite.sql"
	default:
		return nil, fmt.Errorf("sqlinbox: unknown dialect %v", d)
	}
	b, err := migrations.ReadFile("migrations/" + file)
	if err != nil {
		return nil, err
	}
	index := table[strings.LastIndexByte(table, '.')+1:] + "_processed_at_idx"
	if d == SQLite && strings.Contains(table, ".") { // SQLite: index lives in the table's schema
		index = table[:strings.IndexByte(table, '.')+1] + index
	}
	s := strings.NewReplacer("{{table}}", table, "{{index}}", index).Replace(string(b))
	var stmts []string
	for _, st := range strings.Split(s, ";\n") {
		if st = strings.TrimSpace(st); st != "" {
			stmts = append(stmts, st)
		}
	}
	return stmts, nil
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
	switch d {
	case Postgres:
		in.insertSQL = "INSERT INTO " + table + " (consumer, event_id, event_type, processed_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
		in.pruneSQL = "DELETE FROM " + table + " WHERE processed_at < $1"
	case MySQL:
		// ON DUPLICATE KEY UPDATE with no change reports 0 rows affected
		// (without CLIENT_FOUND_ROWS), and unlike INSERT IGNORE it does not
		// turn other errors (a too-long id) into warnings.
		in.insertSQL = "INSERT INTO " + table + " (consumer, event_id, event_type, processed_at) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE consumer = consumer"
		in.pruneSQL = "DELETE FROM " + table + " WHERE processed_at < ?"
	case SQLite:
		in.insertSQL = "INSERT INTO " + table + " (consumer, event_id, event_type, processed_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
		in.pruneSQL = "DELETE FROM " + table + " WHERE processed_at < ?"
	default:
		return nil, fmt.Errorf("sqlinbox: unknown dialect %v", d)
	}
	return in, nil
}

// Table returns the table name in use.
func (in *Inbox) Table() string { return in.table }

// MigrationSQL returns the statements Migrate runs, for review (eventkit
// migrate sql). They are idempotent.
func (in *Inbox) MigrationSQL() ([]string, error) {
	stmts, err := migrationSQL(in.dialect, in.table)
	if err != nil {
		return nil, err
	}
	pos, err := positionMigrationSQL(in.dialect, in.sequencer.q.table)
	if err != nil {
		return nil, err
	}
	return append(stmts, pos...), nil
}

// Migrate creates the inbox's tables (keys and subject positions) and
// index if they do not exist.
func (in *Inbox) Migrate(ctx context.Context) error {
	stmts, err := in.MigrationSQL()
	if err != nil {
		return err
	}
	for _, st := range stmts {
		if _, err := in.db.ExecContext(ctx, st); err != nil {
			return fmt.Errorf("sqlinbox: migrate %s: %w", in.table, err)
		}
	}
	return nil
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

// Tx returns the *sql.Tx that Inbox.Process runs the handler in, or nil when
// ctx does not come from a database/sql inbox. The handler writes its
// effects (and outbox events) through it; it must not commit or roll back.
func Tx(ctx context.Context) *sql.Tx {
	tx, _ := ctx.Value(sqlTxKey{}).(*sql.Tx)
	return tx
}
