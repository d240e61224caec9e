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
		Begin: outboxtest.BeginSQL(db, s),
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
	cfg := sqliteoutbox.Config{Table: "my_outbox"}
	outboxtest.CheckMigrations(t,
		func(ctx context.Context) error { return sqliteoutbox.Migrate(ctx, db, cfg) },
		func(ctx context.Context) ([]outbox.MigrationState, error) {
			return sqliteoutbox.MigrationStatus(ctx, db, cfg)
		})
}
