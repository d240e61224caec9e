package pgoutbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPool(t testing.TB) *pgxpool.Pool { return newPoolOn(t, testenv.Postgres.URL(t)) }

func newPoolOn(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore creates a migrated outbox on a new table, dropped with t.
func newStore(t testing.TB, pool *pgxpool.Pool) *pgoutbox.Store {
	t.Helper()
	return newStoreOn(t, pool, testenv.Name("outbox"))
}

func newStoreOn(t testing.TB, pool *pgxpool.Pool, table string) *pgoutbox.Store {
	t.Helper()
	s, err := pgoutbox.New(pool, pgoutbox.Config{Table: table, LockCheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropTables(pool, table) })
	return s
}

// dropTables drops the outbox table, its notify function and the tables
// its migrations create.
func dropTables(pool *pgxpool.Pool, table string) {
	_, _ = pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table+`; DROP TABLE IF EXISTS `+table+`_migrations; DROP FUNCTION IF EXISTS `+table+`_notify(); `+
		`DROP TABLE IF EXISTS `+table+`_subject_seq; DROP TABLE IF EXISTS `+table+`_leases; DROP TABLE IF EXISTS `+table+`_relays`)
}

func harness(t *testing.T) outboxtest.Harness {
	return harnessOn(t, testenv.Postgres.URL(t), testenv.Name("outbox"))
}

// harnessOn is a harness on a new outbox table of the database of url.
func harnessOn(t *testing.T, url, table string) outboxtest.Harness {
	pool := newPoolOn(t, url)
	s := newStoreOn(t, pool, table)
	return outboxtest.Harness{
		Store:             s,
		ConcurrentWriters: true,
		Begin: func(ctx context.Context) (outboxtest.Tx, error) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				return nil, err
			}
			return outboxtest.NewTx[pgx.Tx](s, tx, tx.Commit, tx.Rollback), nil
		},
		Corrupt: func(ctx context.Context, seq int64) error {
			_, err := pool.Exec(ctx, `UPDATE `+s.Table()+` SET event_time = 'yesterday' WHERE seq = $1`, seq)
			return err
		},
		NewStore: func(t *testing.T) outbox.Store {
			s2, err := pgoutbox.New(newPoolOn(t, url), pgoutbox.Config{Table: s.Table(), LockCheckInterval: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	}
}

func TestStore(t *testing.T) { outboxtest.Run(t, harness) }

func TestMigrate(t *testing.T) {
	pool := newPool(t)
	table := testenv.Name("outbox_mig")
	cfg := pgoutbox.Config{Table: table}
	defer dropTables(pool, table)
	outboxtest.CheckMigrations(t,
		func(ctx context.Context) error { return pgoutbox.Migrate(ctx, pool, cfg) },
		func(ctx context.Context) ([]outbox.MigrationState, error) {
			return pgoutbox.MigrationStatus(ctx, pool, cfg)
		})
	if _, err := pgoutbox.New(pool, pgoutbox.Config{Table: "bad;name"}); err == nil {
		t.Fatal("bad table name accepted")
	}
}

func TestRelay(t *testing.T) { outboxtest.RunRelay(t, harness, outboxtest.Polling) }

func TestCrash(t *testing.T) {
	t.Parallel()
	outboxtest.Crash(t, harness(t), outboxtest.CrashConfig{})
}
