package mysqloutbox_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/mysqloutbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openDB(t testing.TB) *sql.DB { return openDSN(t, testenv.MySQL.URL(t)) }

func openDSN(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(20)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newStore(t testing.TB, db *sql.DB, table string) *mysqloutbox.Store {
	t.Helper()
	s, err := mysqloutbox.New(db, mysqloutbox.Config{Table: table, LockCheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropTables(db, table) })
	return s
}

// dropTables drops the outbox table and the tables its migrations create.
func dropTables(db *sql.DB, table string) {
	for _, x := range []string{"", "_migrations", "_subject_seq", "_leases", "_relays"} {
		_, _ = db.Exec(`DROP TABLE IF EXISTS ` + table + x)
	}
}

func harness(t *testing.T) outboxtest.Harness {
	return harnessOn(t, testenv.MySQL.URL(t), testenv.Name("outbox"))
}

// harnessOn is a harness on a new outbox table of the database of dsn.
func harnessOn(t *testing.T, dsn, table string) outboxtest.Harness {
	db := openDSN(t, dsn)
	s := newStore(t, db, table)
	return outboxtest.Harness{
		Store:             s,
		ConcurrentWriters: true,
		RolledBack: func(err error) bool {
			var me *mysql.MySQLError
			return errors.As(err, &me) && me.Number == 1213
		},
		Begin:     outboxtest.BeginSQL(db, s),
		LargeTxMB: 18,
		Corrupt: func(ctx context.Context, seq int64) error {
			_, err := db.ExecContext(ctx, `UPDATE `+s.Table()+` SET event_time = 'yesterday' WHERE seq = ?`, seq)
			return err
		},
		NewStore: func(t *testing.T) outbox.Store {
			s2, err := mysqloutbox.New(openDSN(t, dsn), mysqloutbox.Config{Table: s.Table(), LockCheckInterval: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	}
}

func TestStore(t *testing.T) { outboxtest.Run(t, harness) }

func TestRelay(t *testing.T) { outboxtest.RunRelay(t, harness, outboxtest.Polling) }

func TestMigrate(t *testing.T) {
	db := openDB(t)
	table := testenv.Name("outbox_mig")
	cfg := mysqloutbox.Config{Table: table}
	defer dropTables(db, table)
	outboxtest.CheckMigrations(t,
		func(ctx context.Context) error { return mysqloutbox.Migrate(ctx, db, cfg) },
		func(ctx context.Context) ([]outbox.MigrationState, error) {
			return mysqloutbox.MigrationStatus(ctx, db, cfg)
		})
	if _, err := mysqloutbox.New(db, mysqloutbox.Config{Table: "s.t"}); err == nil {
		t.Fatal("schema-qualified name accepted")
	}
}

func TestCrash(t *testing.T) {
	t.Parallel()
	outboxtest.Crash(t, harness(t), outboxtest.CrashConfig{})
}

// TestTwoDatabases runs an outbox of the default table name in each of two
// databases of one server: both relays lead and drain at once (GET_LOCK
// names are server-wide, so the lock name must include the database).
func TestTwoDatabases(t *testing.T) {
	t.Parallel()
	a := harnessOn(t, testdb.MySQL(t), outbox.DefaultTable)
	b := harnessOn(t, testdb.MySQL(t), outbox.DefaultTable)
	outboxtest.TwoDatabases(t, a, b)
}

// TestLockNames: the lock name is per database and table, a valid GET_LOCK
// name for hostile and long names, and the same for two spellings of one
// name.
func TestLockNames(t *testing.T) {
	long := strings.Repeat("x", 64)
	names := map[string]string{}
	for _, c := range [][2]string{
		{"shop", "outbox"}, {"billing", "outbox"}, {"shop", "outbox2"},
		{"shop_", "outbox"}, {"shop", "_outbox"}, // no ambiguity where the two meet
		{"we`ird db;--", "outbox"}, {"d\x00b", "x"}, {"", "outbox"},
		{long + "a", "outbox"}, {long + "b", "outbox"}, {"shop", long + "a"}, {"shop", long + "b"},
	} {
		n := mysqloutbox.LockName(c[0], c[1])
		if len(n) > 64 || !regexp.MustCompile(`^eventkit_outbox_[0-9a-f]{32}$`).MatchString(n) {
			t.Fatalf("LockName(%q, %q) = %q", c[0], c[1], n)
		}
		if prev, dup := names[n]; dup {
			t.Fatalf("LockName(%q, %q) = LockName of %s", c[0], c[1], prev)
		}
		names[n] = fmt.Sprintf("%q", c)
	}
	if mysqloutbox.LockName("Shop", "Outbox") != mysqloutbox.LockName("shop", "outbox") {
		t.Fatal("two spellings of one name have different locks")
	}
}

// TestOldVersionLeader: while a relay of an earlier version (which locked
// the table's old, server-wide name) leads this database's outbox, TryLock
// stands by; an old-name holder in another database does not block it.
func TestOldVersionLeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsnA, dsnB := testdb.MySQL(t), testdb.MySQL(t)
	a := harnessOn(t, dsnA, outbox.DefaultTable)
	b := harnessOn(t, dsnB, outbox.DefaultTable)
	sum := sha256.Sum256([]byte(outbox.DefaultTable))
	legacy := "eventkit_outbox_" + hex.EncodeToString(sum[:16])
	old, err := openDSN(t, dsnA).Conn(ctx) // an old relay of database A
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	var got int
	if err := old.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, legacy).Scan(&got); err != nil || got != 1 {
		t.Fatalf("GET_LOCK(legacy) = %d, %v", got, err)
	}
	if l, err := a.Store.TryLock(ctx); err != nil || l != nil {
		t.Fatalf("TryLock on A while an old relay of A leads: %v, %v (want no lock)", l, err)
	}
	lb, err := b.Store.TryLock(ctx)
	if err != nil || lb == nil {
		t.Fatalf("TryLock on B while an old relay of A leads: %v, %v (want the lock)", lb, err)
	}
	_ = lb.Release(ctx)
	if _, err := old.ExecContext(ctx, `SELECT RELEASE_LOCK(?)`, legacy); err != nil {
		t.Fatal(err)
	}
	la, err := a.Store.TryLock(ctx)
	if err != nil || la == nil {
		t.Fatalf("TryLock on A once the old relay stopped: %v, %v", la, err)
	}
	_ = la.Release(ctx)
}
