package sqliteoutbox

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"sync"

	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// Config configures a Store. The zero value is usable.
type Config struct {
	// Table is the outbox table. Default outbox.DefaultTable.
	Table string
	// MaxEventSize is the limit Add validates events against
	// (eventkit.DefaultMaxSize if 0).
	MaxEventSize int
}

// Store is the SQLite outbox store (database/sql; modernc.org/sqlite, pure
// Go, is what eventkit tests with). It implements outbox.Store and
// outbox.Writer[*sql.Tx]; Add, Claim, Complete, Fail, Requeue, Cleanup,
// Status, Listen and Notify come from the shared database/sql core.
type Store struct {
	*sqlutil.DB
	cfg Config

	keyOnce sync.Once
	key     string
	keyErr  error
}

var (
	_ outbox.Store           = (*Store)(nil)
	_ outbox.Writer[*sql.Tx] = (*Store)(nil)
	_ outbox.Migrator        = (*Store)(nil)
)

// DSN returns the recommended data source name for modernc.org/sqlite
// (driver "sqlite") for a database file: WAL journal (readers do not block
// the writer), a 10 s busy timeout, and IMMEDIATE transactions (a write
// transaction takes the write lock at BEGIN, so it never fails to upgrade).
func DSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

// New returns a store on db. It does not touch the database; call Migrate
// to create the table.
func New(db *sql.DB, cfg Config) (*Store, error) {
	table, err := sqlutil.CheckTable(cfg.Table, false)
	if err != nil {
		return nil, err
	}
	return &Store{
		DB: sqlutil.NewDB(db, table, sqlutil.Dialect{Name: "outbox/sqliteoutbox", SQL: sqldialect.SQLite,
			ReserveSeq: reserveSeq(table), Migrations: migrationsFS}, cfg.MaxEventSize),
		cfg: cfg,
	}, nil
}

// locks are the leadership locks of this process, by database file and table.
var locks sync.Map // string -> *sync.Mutex

// lockKey names the outbox: the main database file and the table (or the
// *sql.DB itself for an in-memory database).
func (s *Store) lockKey(ctx context.Context) (string, error) {
	s.keyOnce.Do(func() {
		rows, err := s.SQL().QueryContext(ctx, `PRAGMA database_list`)
		if err != nil {
			s.keyErr = err
			return
		}
		defer rows.Close()
		file := ""
		for rows.Next() {
			var seq int
			var name, f string
			if err := rows.Scan(&seq, &name, &f); err != nil {
				s.keyErr = err
				return
			}
			if name == "main" {
				file = f
			}
		}
		if file == "" {
			file = fmt.Sprintf("mem:%p", s.SQL())
		}
		s.key = file + "|" + s.Table()
	})
	return s.key, s.keyErr
}

// TryLock implements outbox.Store with an in-process lock per database file
// and table: relays in one process elect one leader. SQLite has no
// session-scoped locks, so relays in different processes on the same file
// are not coordinated: run one relay process per SQLite outbox.
func (s *Store) TryLock(ctx context.Context) (outbox.Lock, error) {
	key, err := s.lockKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqliteoutbox: lock: %w", err)
	}
	v, _ := locks.LoadOrStore(key, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	if !mu.TryLock() {
		return nil, nil
	}
	return &lock{mu: mu, lost: make(chan struct{})}, nil
}

type lock struct {
	once sync.Once
	mu   *sync.Mutex
	lost chan struct{}
}

func (l *lock) Lost() <-chan struct{} { return l.lost }

func (l *lock) Release(context.Context) error {
	l.once.Do(func() {
		close(l.lost)
		l.mu.Unlock()
	})
	return nil
}

// Migrate applies the embedded migrations that are not applied yet, in one
// IMMEDIATE transaction (so concurrent callers are safe).
func (s *Store) Migrate(ctx context.Context) error {
	conn, err := s.SQL().Conn(ctx)
	if err != nil {
		return fmt.Errorf("outbox/sqliteoutbox: migrate: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("outbox/sqliteoutbox: migrate: %w", err)
	}
	if err := sqlutil.MigrateOn(ctx, s.DB, conn); err != nil {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
		return err
	}
	if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
		return fmt.Errorf("outbox/sqliteoutbox: migrate: %w", err)
	}
	return nil
}

// Migrate is a shortcut for New(db, cfg) and Store.Migrate.
func Migrate(ctx context.Context, db *sql.DB, cfg Config) error {
	s, err := New(db, cfg)
	if err != nil {
		return err
	}
	return s.Migrate(ctx)
}

// MigrationStatus is a shortcut for New(db, cfg) and Store.MigrationStatus.
func MigrationStatus(ctx context.Context, db *sql.DB, cfg Config) ([]outbox.MigrationState, error) {
	s, err := New(db, cfg)
	if err != nil {
		return nil, err
	}
	return s.MigrationStatus(ctx)
}

// reserveSeq adds n to the subject counter in tx and returns the new value.
func reserveSeq(table string) func(ctx context.Context, tx *sql.Tx, topic, subject string, n int64) (int64, error) {
	q := `INSERT INTO ` + table + `_subject_seq (topic, subject, seq) VALUES (?, ?, ?)
ON CONFLICT (topic, subject) DO UPDATE SET seq = seq + excluded.seq RETURNING seq`
	return func(ctx context.Context, tx *sql.Tx, topic, subject string, n int64) (int64, error) {
		var last int64
		err := tx.QueryRowContext(ctx, q, topic, subject, n).Scan(&last)
		return last, err
	}
}
