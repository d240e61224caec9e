package pgcdc_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// harness is a Postgres outbox table for the shared suites.
func harness(t *testing.T) outboxtest.Harness {
	pool := newPool(t)
	table := tableName()
	s, err := pgoutbox.New(pool, pgoutbox.Config{Table: table, LockCheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table+`; DROP TABLE IF EXISTS `+table+`_migrations; DROP FUNCTION IF EXISTS `+table+`_notify()`)
	})
	return outboxtest.Harness{
		Store:             s,
		ConcurrentWriters: true,
		Begin: func(ctx context.Context) (outboxtest.Tx, error) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				return nil, err
			}
			// The stream carries a commit only once its WAL is flushed: the
			// private test server (scripts/pgtemp.sh) runs with
			// synchronous_commit = off, where that waits for the WAL writer
			// (up to 3 x wal_writer_delay), and the suite's timing cases
			// (a retried head parked after 0.9 s) assume the default (on).
			if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
				_ = tx.Rollback(ctx)
				return nil, err
			}
			return outboxtest.NewTx[pgx.Tx](s, tx, tx.Commit, tx.Rollback), nil
		},
		NewStore: func(t *testing.T) outbox.Store {
			s2, err := pgoutbox.New(newPool(t), pgoutbox.Config{Table: table, LockCheckInterval: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	}
}

// cdcRelay builds the CDC relay on the harness's table: the same engine
// (outbox.Relay) over the stream source, with the slot and publication set
// up first and dropped with t.
var cdcRelay = outboxtest.RelayFactory{Streams: true,
	New: func(t testing.TB, h outboxtest.Harness, pub broker.Publisher, cfg outbox.RelayConfig) *outbox.Relay {
		st := h.Store.(*pgoutbox.Store)
		r, err := pgcdc.New(st.Pool(), pub, pgcdc.Config{Table: st.Table(), FeedbackInterval: 100 * time.Millisecond, RelayConfig: cfg})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := r.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = r.Teardown(cctx)
		})
		return outbox.NewRelay(r.Source(), pub, cfg)
	}}

// TestRelay runs the relay suite on the CDC source.
func TestRelay(t *testing.T) { outboxtest.RunRelay(t, harness, cdcRelay) }

// TestCrash runs the shared kill test on the CDC source. Its writer starts
// before the first relay creates the slot, so the rows committed before
// that are delivered only by the backfill (without it, the run stalls with
// those rows left in the table, about every other run).
func TestCrash(t *testing.T) {
	outboxtest.Crash(t, harness(t), outboxtest.CrashConfig{Relay: cdcRelay})
}
