package sqldeadletter_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, name string) (*sql.DB, sqlinbox.Dialect) {
	t.Helper()
	var db *sql.DB
	var err error
	var d sqlinbox.Dialect
	switch name {
	case "sqlite":
		db, err = sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "dl.db")+"?_pragma=busy_timeout(5000)")
		d = sqlinbox.SQLite
	case "postgres":
		db, err = sql.Open("pgx", testenv.Postgres.URL(t))
		d = sqlinbox.Postgres
	case "mysql":
		db, err = sql.Open("mysql", testenv.MySQL.URL(t))
		d = sqlinbox.MySQL
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, d
}

// TestDeadLetterLifecycle runs a poison event through the consumer runtime
// into the dead-letter topic, collects it into the table, lists, shows and
// replays it (the original topic receives the original event again, without
// the dlq attributes) and purges it — on each database.
func TestDeadLetterLifecycle(t *testing.T) {
	for _, dbname := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(dbname, func(t *testing.T) {
			db, dialect := open(t, dbname)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			table := testenv.Name("dl")
			st, err := sqldeadletter.New(db, dialect, table)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := st.Migrate(ctx); err != nil { // idempotent
				t.Fatalf("second Migrate: %v", err)
			}
			t.Cleanup(func() { _, _ = db.Exec("DROP TABLE " + table) })

			b := memorybroker.New(memorybroker.Options{})
			defer b.Close(context.Background())
			topic := testenv.Name("orders")
			var poisonSeen, goodSeen atomic.Int32
			var replayOK atomic.Bool
			c, err := consumer.New(b, consumer.Config{Retry: consumer.RetryPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			poison := eventkit.New("order.created", "application/json", []byte(`{"qty":-1}`), eventkit.WithSubject("o-1"),
				eventkit.WithExtension("correlationid", "corr-1"))
			good := eventkit.New("order.created", "application/json", []byte(`{"qty":1}`), eventkit.WithSubject("o-2"))
			fixed := make(chan struct{})
			if err := c.HandleFunc(topic, "inventory", func(ctx context.Context, ev eventkit.Event) error {
				if ev.ID == poison.ID {
					select {
					case <-fixed: // after the "bug fix", the replayed event succeeds
						if ev.Extension("dlqtopic") == "" && ev.Extension("correlationid") == "corr-1" {
							replayOK.Store(true)
						}
						return nil
					default:
					}
					poisonSeen.Add(1)
					return errors.New("quantity must be positive")
				}
				goodSeen.Add(1)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			runCtx, stopRun := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- c.Run(runCtx) }()
			defer func() { stopRun(); <-done }()

			subs, err := deadletter.Collect(ctx, b, st, "", topic+".dlq")
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				for _, s := range subs {
					_ = s.Close(context.Background())
				}
			}()
			if err := b.Publish(ctx, topic, poison, good); err != nil {
				t.Fatal(err)
			}
			if err := b.PublishRaw(ctx, topic+".dlq", nil, []byte("garbage on the dlq")); err != nil {
				t.Fatal(err)
			}
			var entries []sqldeadletter.Entry
			testenv.WaitFor(t, 20*time.Second, "the collector to store the dead letters", func() bool {
				entries, err = st.List(ctx, sqldeadletter.Filter{Topic: topic})
				return err == nil && len(entries) == 1
			})
			e := entries[0]
			if e.EventID != poison.ID || e.Group != "inventory" || e.Reason != deadletter.ReasonMaxAttempts || e.Attempts != 2 ||
				e.Error != "quantity must be positive" || e.EventType != "order.created" {
				t.Fatalf("stored dead letter = %+v", e)
			}
			if goodSeen.Load() != 1 || poisonSeen.Load() != 2 {
				t.Fatalf("good handled %d times, poison %d times; want 1 and 2", goodSeen.Load(), poisonSeen.Load())
			}
			// The garbage message on the dead-letter topic was kept, not dropped.
			testenv.WaitFor(t, 20*time.Second, "the collector to store the dead letters", func() bool {
				n, err := st.Count(ctx, sqldeadletter.Filter{Type: deadletter.UndecodableType})
				return err == nil && n == 1
			})
			// Filters.
			if n, _ := st.Count(ctx, sqldeadletter.Filter{Type: "nope"}); n != 0 {
				t.Fatalf("type filter matched %d", n)
			}
			if n, _ := st.Count(ctx, sqldeadletter.Filter{Since: time.Now().Add(time.Hour)}); n != 0 {
				t.Fatalf("since filter matched %d", n)
			}
			// Replay after the fix: the original event reaches the handler again.
			close(fixed)
			res, err := st.Replay(ctx, b, sqldeadletter.Filter{Topic: topic})
			if err != nil || res.Replayed != 1 {
				t.Fatalf("Replay = %+v, %v", res, err)
			}
			testenv.WaitFor(t, 20*time.Second, "the collector to store the dead letters", replayOK.Load)
			no := false
			if n, _ := st.Count(ctx, sqldeadletter.Filter{Topic: topic, Replayed: &no}); n != 0 {
				t.Fatalf("%d dead letters still unreplayed", n)
			}
			// Undecodable ones are skipped by replay.
			res, err = st.Replay(ctx, b, sqldeadletter.Filter{Type: deadletter.UndecodableType})
			if err != nil || res.Skipped != 1 || res.Replayed != 0 {
				t.Fatalf("Replay(undecodable) = %+v, %v", res, err)
			}
			n, err := st.Purge(ctx, sqldeadletter.Filter{})
			if err != nil || n != 2 {
				t.Fatalf("Purge = %d, %v", n, err)
			}
		})
	}
}
