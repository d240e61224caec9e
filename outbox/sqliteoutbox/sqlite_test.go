package sqliteoutbox_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/sqliteoutbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", sqliteoutbox.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func harness(t *testing.T) outboxtest.Harness {
	path := filepath.Join(t.TempDir(), "outbox.db")
	db := openDB(t, path)
	s, err := sqliteoutbox.New(db, sqliteoutbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return outboxtest.Harness{
		Store: s,
		Begin: func(ctx context.Context) (outboxtest.Tx, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			return outboxtest.NewTx[*sql.Tx](s, tx,
				func(context.Context) error { return tx.Commit() },
				func(context.Context) error { return tx.Rollback() }), nil
		},
		Corrupt: func(ctx context.Context, seq int64) error {
			_, err := db.ExecContext(ctx, `UPDATE `+s.Table()+` SET event_time = 'yesterday' WHERE seq = ?`, seq)
			return err
		},
		NewStore: func(t *testing.T) outbox.Store {
			s2, err := sqliteoutbox.New(openDB(t, path), sqliteoutbox.Config{})
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
	db := openDB(t, filepath.Join(t.TempDir(), "m.db"))
	ctx := context.Background()
	cfg := sqliteoutbox.Config{Table: "my_outbox"}
	st, err := sqliteoutbox.MigrationStatus(ctx, db, cfg)
	if err != nil || len(st) == 0 || st[0].Applied {
		t.Fatalf("before: %+v %v", st, err)
	}
	for range 2 {
		if err := sqliteoutbox.Migrate(ctx, db, cfg); err != nil {
			t.Fatal(err)
		}
	}
	st, err = sqliteoutbox.MigrationStatus(ctx, db, cfg)
	if err != nil || !st[0].Applied || st[0].AppliedAt.IsZero() {
		t.Fatalf("after: %+v %v", st, err)
	}
}
