package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox/postgres"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(t testing.TB) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	url := testenv.Postgres.URL(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	table := testenv.Name("outbox")
	s, err := postgres.New(pool, postgres.Config{Table: table, LockCheckInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table+`; DROP TABLE IF EXISTS `+table+`_migrations; DROP FUNCTION IF EXISTS `+table+`_notify()`)
		pool.Close()
	})
	return s, pool
}

func TestSmoke(t *testing.T) {
	s, pool := newStore(t)
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	st, err := s.MigrationStatus(ctx)
	if err != nil || len(st) != 1 || !st[0].Applied {
		t.Fatalf("status %+v %v", st, err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := eventkit.New("a.b", "text/plain", []byte("x"), eventkit.WithSubject("s1"))
	if err := s.Add(ctx, tx, "topic", e); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
