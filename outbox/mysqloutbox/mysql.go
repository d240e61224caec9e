package mysqloutbox

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// Config configures a Store. The zero value is usable.
type Config struct {
	// Table is the outbox table in the connection's database. Default
	// outbox.DefaultTable.
	Table string
	// MaxEventSize is the limit Add validates events against
	// (eventkit.DefaultMaxSize if 0). Mind max_allowed_packet.
	MaxEventSize int
	// LockCheckInterval is how often the holder of the leadership lock
	// checks that its connection (and so the lock) is alive. Default 1s. A
	// check that fails, or gets no answer within max(5 x LockCheckInterval,
	// 3s), counts as a lost lock.
	LockCheckInterval time.Duration
}

// Store is the MySQL/MariaDB outbox store (database/sql with
// github.com/go-sql-driver/mysql). It implements outbox.Store and
// outbox.Writer[*sql.Tx]; Add, Claim, Complete, Fail, Requeue, Cleanup,
// Status, Listen and Notify come from the shared database/sql core.
type Store struct {
	*sqlutil.DB
	cfg Config
}

var (
	_ outbox.Store           = (*Store)(nil)
	_ outbox.Writer[*sql.Tx] = (*Store)(nil)
	_ outbox.Migrator        = (*Store)(nil)
)

// New returns a store on db. It does not touch the database; call Migrate
// to create the table.
func New(db *sql.DB, cfg Config) (*Store, error) {
	table, err := sqlutil.CheckTable(cfg.Table, false)
	if err != nil {
		return nil, err
	}
	if cfg.LockCheckInterval <= 0 {
		cfg.LockCheckInterval = time.Second
	}
	return &Store{
		DB:  sqlutil.NewDB(db, table, sqlutil.Dialect{Name: "outbox/mysqloutbox", SQL: sqldialect.MySQL, ReserveSeq: reserveSeq(table), Migrations: migrationsFS}, cfg.MaxEventSize),
		cfg: cfg,
	}, nil
}

// LockName is the GET_LOCK name of the leadership lock of the outbox table
// in database. GET_LOCK names are server-wide, so the name hashes both:
// "eventkit_outbox_" and 32 hex digits of the SHA-256 of the lower-cased
// database and table names (48 characters; GET_LOCK allows 64). Lower-cased
// because names may be case-insensitive (lower_case_table_names): two
// spellings of one table must share the lock, while two tables whose names
// differ only in case, where that makes them distinct, merely share a lock
// (one relay at a time), which is safe.
func LockName(database, table string) string {
	return sqldialect.LockName("eventkit_outbox_", database, table)
}

// legacyLockName is the lock name of earlier versions, which hashed only
// the table name (so two databases' outboxes of one name shared it).
func legacyLockName(table string) string {
	sum := sha256.Sum256([]byte(table))
	return "eventkit_outbox_" + hex.EncodeToString(sum[:16])
}

// lockName returns LockName for conn's current database.
func (s *Store) lockName(ctx context.Context, conn *sql.Conn) (string, error) {
	var db sql.NullString
	if err := conn.QueryRowContext(ctx, `SELECT DATABASE()`).Scan(&db); err != nil {
		return "", err
	}
	if !db.Valid || db.String == "" {
		return "", errors.New("no database selected (name one in the DSN)")
	}
	return LockName(db.String, s.Table()), nil
}

// TryLock implements outbox.Store with GET_LOCK(LockName(DATABASE(),
// table), 0) on a dedicated connection: the lock is per database and
// table, so outboxes of the same table name in different databases of one
// server each have their own leader.
//
// While a relay of an earlier version, which locks the table's old,
// server-wide name, leads this database's outbox, TryLock stands by (it
// finds the holder of the old name in information_schema.PROCESSLIST
// with this database as its current one), so a rolling upgrade never has
// two leaders. Old relays started after a new one leads are not detected:
// stop the old relays before, not after, starting upgraded ones.
func (s *Store) TryLock(ctx context.Context) (outbox.Lock, error) {
	conn, err := s.SQL().Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysqloutbox: lock: %w", err)
	}
	name, err := s.lockName(ctx, conn)
	if err != nil {
		discard(conn)
		return nil, fmt.Errorf("outbox/mysqloutbox: lock: %w", err)
	}
	var got, oldLeader sql.NullInt64
	err = conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, name).Scan(&got)
	if err == nil && got.Int64 == 1 {
		err = conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
WHERE ID = IS_USED_LOCK(?) AND DB = DATABASE()`, legacyLockName(s.Table())).Scan(&oldLeader)
	}
	if err != nil {
		discard(conn) // drops the lock if it was taken
		return nil, fmt.Errorf("outbox/mysqloutbox: lock: %w", err)
	}
	if got.Int64 != 1 {
		_ = conn.Close()
		return nil, nil
	}
	if oldLeader.Int64 > 0 {
		discard(conn) // drops the lock
		return nil, nil
	}
	l := &lock{conn: conn, name: name, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go l.watch(s.cfg.LockCheckInterval)
	return l, nil
}

// discard closes conn for good instead of returning it to the pool (so a
// named lock it may hold dies with it).
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}

type lock struct {
	mu       sync.Mutex
	conn     *sql.Conn
	name     string
	lost     chan struct{}
	lostOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	released bool
}

func (l *lock) Lost() <-chan struct{} { return l.lost }

func (l *lock) watch(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(5*every, 3*time.Second)) // slow is not lost
		var held sql.NullInt64
		err := l.conn.QueryRowContext(ctx, `SELECT IS_USED_LOCK(?) = CONNECTION_ID()`, l.name).Scan(&held)
		cancel()
		if err != nil || held.Int64 != 1 {
			l.lostOnce.Do(func() { close(l.lost) })
			return
		}
	}
}

func (l *lock) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	var err error
	select {
	case <-l.lost:
		discard(l.conn)
	default:
		if _, err = l.conn.ExecContext(ctx, `SELECT RELEASE_LOCK(?)`, l.name); err != nil {
			discard(l.conn)
		} else {
			_ = l.conn.Close()
		}
	}
	l.lostOnce.Do(func() { close(l.lost) })
	if err != nil {
		return fmt.Errorf("outbox/mysqloutbox: unlock: %w", err)
	}
	return nil
}

// Migrate applies the embedded migrations that are not applied yet, under a
// named lock so that concurrent callers are safe. (MySQL commits DDL
// implicitly: a migration that fails halfway is not rolled back; the
// statements are idempotent so it can be re-run.)
func (s *Store) Migrate(ctx context.Context) error {
	conn, err := s.SQL().Conn(ctx)
	if err != nil {
		return fmt.Errorf("outbox/mysqloutbox: migrate: %w", err)
	}
	defer discard(conn) // drops the named lock too
	name, err := s.lockName(ctx, conn)
	if err != nil {
		return fmt.Errorf("outbox/mysqloutbox: migrate: %w", err)
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 60)`, name+"_m").Scan(&got); err != nil || got.Int64 != 1 {
		return fmt.Errorf("outbox/mysqloutbox: migrate: cannot take the migration lock: %v", err)
	}
	return sqlutil.MigrateOn(ctx, s.DB, conn)
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
// The row is keyed by a SHA-256 of (topic, subject), as a primary key on the
// two columns would exceed InnoDB's key length; LAST_INSERT_ID(expr) hands
// the value back without a second statement.
func reserveSeq(table string) func(ctx context.Context, tx *sql.Tx, topic, subject string, n int64) (int64, error) {
	q := `INSERT INTO ` + table + `_subject_seq (k, topic, subject, seq) VALUES (?, ?, ?, LAST_INSERT_ID(?))
ON DUPLICATE KEY UPDATE seq = LAST_INSERT_ID(seq + ?)`
	return func(ctx context.Context, tx *sql.Tx, topic, subject string, n int64) (int64, error) {
		k := sha256.Sum256([]byte(topic + "\x00" + subject))
		res, err := tx.ExecContext(ctx, q, k[:], topic, subject, n, n)
		if err != nil {
			return 0, err
		}
		return res.LastInsertId()
	}
}
