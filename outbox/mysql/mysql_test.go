package mysql_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/mysql"
	"github.com/eventkit/eventkit/outbox/outboxtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openDB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", testenv.MySQL.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(20)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newStore(t testing.TB, db *sql.DB) *mysql.Store {
	t.Helper()
	table := testenv.Name("outbox")
	s, err := mysql.New(db, mysql.Config{Table: table, LockCheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = db.Exec(`DROP TABLE IF EXISTS ` + table)
		_, _ = db.Exec(`DROP TABLE IF EXISTS ` + table + `_migrations`)
	})
	return s
}

func harness(t *testing.T) outboxtest.Harness {
	db := openDB(t)
	s := newStore(t, db)
	return outboxtest.Harness{
		Store:             s,
		ConcurrentWriters: true,
		Begin: func(ctx context.Context) (outboxtest.Tx, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			return outboxtest.NewTx[*sql.Tx](s, tx,
				func(context.Context) error { return tx.Commit() },
				func(context.Context) error { return tx.Rollback() }), nil
		},
		LargeTxMB: 18,
		Corrupt: func(ctx context.Context, seq int64) error {
			_, err := db.ExecContext(ctx, `UPDATE `+s.Table()+` SET event_time = 'yesterday' WHERE seq = ?`, seq)
			return err
		},
		NewStore: func(t *testing.T) outbox.Store {
			s2, err := mysql.New(openDB(t), mysql.Config{Table: s.Table(), LockCheckInterval: 100 * time.Millisecond})
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
	ctx := context.Background()
	table := testenv.Name("outbox_mig")
	cfg := mysql.Config{Table: table}
	defer func() {
		_, _ = db.Exec(`DROP TABLE IF EXISTS ` + table)
		_, _ = db.Exec(`DROP TABLE IF EXISTS ` + table + `_migrations`)
	}()
	st, err := mysql.MigrationStatus(ctx, db, cfg)
	if err != nil || len(st) == 0 || st[0].Applied {
		t.Fatalf("before: %+v %v", st, err)
	}
	for range 2 {
		if err := mysql.Migrate(ctx, db, cfg); err != nil {
			t.Fatal(err)
		}
	}
	st, err = mysql.MigrationStatus(ctx, db, cfg)
	if err != nil || !st[0].Applied || st[0].AppliedAt.IsZero() {
		t.Fatalf("after: %+v %v", st, err)
	}
	if _, err := mysql.New(db, mysql.Config{Table: "s.t"}); err == nil {
		t.Fatal("schema-qualified name accepted")
	}
}

func TestCrash(t *testing.T) {
	t.Parallel()
	outboxtest.Crash(t, harness(t), outboxtest.CrashConfig{})
}
