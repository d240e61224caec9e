package sqlinbox_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/inboxtest"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql keeps one opener goroutine per *sql.DB until Close;
		// modernc and pgx have none left after Close.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// env is one database under test: its inbox on a fresh table, and a way to
// run SQL in the handler's transaction.
type env struct {
	name    string
	dialect sqlinbox.Dialect
	in      inbox.Inbox
	pruner  inbox.Pruner
	// exec runs a statement in the handler's transaction found in ctx.
	exec func(ctx context.Context, q string, args ...any) (int64, error)
	// query reads one int from the database (outside any tx).
	queryInt func(t *testing.T, q string, args ...any) int
	// ph renders placeholder i (1-based).
	ph func(i int) string
}

func sqlDB(t *testing.T, driver, dsn string, d sqlinbox.Dialect) *env {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if d == sqlinbox.SQLite {
		db.SetMaxOpenConns(8)
	}
	table := testenv.Name("inbox")
	in, err := sqlinbox.New(db, d, sqlinbox.Options{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(ctx); err != nil { // idempotent
		t.Fatalf("second Migrate: %v", err)
	}
	t.Cleanup(func() { _, _ = db.Exec("DROP TABLE " + table); _, _ = db.Exec("DROP TABLE " + table + "_positions") })
	ph := func(int) string { return "?" }
	if d == sqlinbox.Postgres {
		ph = func(i int) string { return "$" + string(rune('0'+i)) }
	}
	return &env{
		name: d.String(), dialect: d, in: in, pruner: in, ph: ph,
		exec: func(ctx context.Context, q string, args ...any) (int64, error) {
			tx, err := sqlinbox.Tx(ctx)
			if err != nil {
				return 0, err
			}
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		},
		queryInt: func(t *testing.T, q string, args ...any) int {
			t.Helper()
			var n int
			if err := db.QueryRow(q, args...).Scan(&n); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			return n
		},
	}
}

func mysqlSetup(t *testing.T) *env {
	return sqlDB(t, "mysql", testenv.MySQL.URL(t), sqlinbox.MySQL)
}
func postgresSetup(t *testing.T) *env {
	return sqlDB(t, "pgx", testenv.Postgres.URL(t), sqlinbox.Postgres)
}
func sqliteSetup(t *testing.T) *env {
	dsn := "file:" + filepath.Join(t.TempDir(), "inbox.db") + "?_txlock=immediate&_pragma=busy_timeout(30000)&_pragma=journal_mode(wal)"
	return sqlDB(t, "sqlite", dsn, sqlinbox.SQLite)
}
func pgxSetup(t *testing.T) *env {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testenv.Postgres.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	table := testenv.Name("inbox")
	in, err := sqlinbox.NewPgx(pool, sqlinbox.Options{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE "+table)
		_, _ = pool.Exec(context.Background(), "DROP TABLE "+table+"_positions")
	})
	return &env{
		name: "pgx", dialect: sqlinbox.Postgres, in: in, pruner: in,
		ph: func(i int) string { return "$" + string(rune('0'+i)) },
		exec: func(ctx context.Context, q string, args ...any) (int64, error) {
			tx, err := sqlinbox.PgxTx(ctx)
			if err != nil {
				return 0, err
			}
			tag, err := tx.Exec(ctx, q, args...)
			return tag.RowsAffected(), err
		},
		queryInt: func(t *testing.T, q string, args ...any) int {
			t.Helper()
			var n int
			if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			return n
		},
	}
}

var setups = []struct {
	name  string
	setup func(t *testing.T) *env
}{
	{"postgres", postgresSetup},
	{"pgx", pgxSetup},
	{"mariadb", mysqlSetup},
	{"sqlite", sqliteSetup},
}

func forEachDB(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			fn(t, s.setup(t))
		})
	}
}

// businessTable creates a counter table and returns its name.
func businessTable(t *testing.T, e *env) string {
	t.Helper()
	name := testenv.Name("biz")
	ctx := context.Background()
	err := e.in.Process(ctx, inbox.Key{Consumer: "setup", EventID: name}, func(ctx context.Context) error {
		_, err := e.exec(ctx, "CREATE TABLE "+name+" (id VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL, version INTEGER NOT NULL)")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.in.Process(context.Background(), inbox.Key{Consumer: "teardown", EventID: name}, func(ctx context.Context) error {
			_, err := e.exec(ctx, "DROP TABLE "+name)
			return err
		})
	})
	return name
}

func TestProcessOnceAndDuplicate(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		key := inbox.Key{Consumer: "billing", EventID: "ev-1", EventType: "order.created"}
		calls := 0
		fn := func(ctx context.Context) error { calls++; return nil }
		if err := e.in.Process(ctx, key, fn); err != nil {
			t.Fatal(err)
		}
		if err := e.in.Process(ctx, key, fn); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("second Process: got %v, want ErrDuplicate", err)
		}
		// Another consumer group processes the same event independently.
		if err := e.in.Process(ctx, inbox.Key{Consumer: "shipping", EventID: "ev-1"}, fn); err != nil {
			t.Fatal(err)
		}
		// Ids are case-sensitive.
		if err := e.in.Process(ctx, inbox.Key{Consumer: "billing", EventID: "EV-1"}, fn); err != nil {
			t.Fatalf("EV-1 vs ev-1: %v", err)
		}
		if calls != 3 {
			t.Fatalf("handler ran %d times, want 3", calls)
		}
	})
}

func TestFailedHandlerRecordsNothing(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		biz := businessTable(t, e)
		key := inbox.Key{Consumer: "c", EventID: "ev-fail"}
		boom := errors.New("boom")
		err := e.in.Process(ctx, key, func(ctx context.Context) error {
			if _, err := e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ('a', 1, 1)"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("got %v, want boom", err)
		}
		if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz); n != 0 {
			t.Fatalf("business write survived a failed handler: %d rows", n)
		}
		// A panicking handler rolls back too.
		func() {
			defer func() { _ = recover() }()
			_ = e.in.Process(ctx, key, func(ctx context.Context) error {
				_, _ = e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ('a', 1, 1)")
				panic("handler panic")
			})
		}()
		if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz); n != 0 {
			t.Fatalf("business write survived a panicking handler: %d rows", n)
		}
		// The retry runs and commits.
		if err := e.in.Process(ctx, key, func(ctx context.Context) error {
			_, err := e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ('a', 1, 1)")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz); n != 1 {
			t.Fatalf("got %d rows, want 1", n)
		}
	})
}

// The same event processed 5 times concurrently changes the business table
// once; the other four see ErrDuplicate.
func TestConcurrentDuplicatesApplyOnce(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		biz := businessTable(t, e)
		insert := "INSERT INTO " + biz + " (id, n, version) VALUES ('acc', 0, 0)"
		if err := e.in.Process(ctx, inbox.Key{Consumer: "setup", EventID: "row"}, func(ctx context.Context) error {
			_, err := e.exec(ctx, insert)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for round := range 5 {
			key := inbox.Key{Consumer: "c", EventID: "dup-" + string(rune('a'+round))}
			var ok, dup, other atomic.Int32
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 5 {
				wg.Go(func() {
					<-start
					err := e.in.Process(ctx, key, func(ctx context.Context) error {
						time.Sleep(5 * time.Millisecond) // widen the race window
						_, err := e.exec(ctx, "UPDATE "+biz+" SET n = n + 1 WHERE id = 'acc'")
						return err
					})
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, inbox.ErrDuplicate):
						dup.Add(1)
					default:
						// MariaDB may pick a deadlock victim among waiters
						// when several insert the same key: retryable.
						t.Logf("%s: process: %v", e.name, err)
						other.Add(1)
					}
				})
			}
			close(start)
			wg.Wait()
			if ok.Load() != 1 || dup.Load()+other.Load() != 4 {
				t.Fatalf("round %d: ok=%d dup=%d other=%d", round, ok.Load(), dup.Load(), other.Load())
			}
		}
		if n := e.queryInt(t, "SELECT n FROM "+biz+" WHERE id = 'acc'"); n != 5 {
			t.Fatalf("counter = %d after 5 events delivered 5 times each, want 5", n)
		}
	})
}

func TestPrune(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		noop := func(context.Context) error { return nil }
		for _, id := range []string{"old1", "old2"} {
			if err := e.in.Process(ctx, inbox.Key{Consumer: "c", EventID: id}, noop); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
		cutoff := time.Now()
		time.Sleep(20 * time.Millisecond)
		if err := e.in.Process(ctx, inbox.Key{Consumer: "c", EventID: "new"}, noop); err != nil {
			t.Fatal(err)
		}
		n, err := e.pruner.Prune(ctx, cutoff)
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("pruned %d, want 2", n)
		}
		// Pruned keys are forgotten; the kept one is still a duplicate.
		if err := e.in.Process(ctx, inbox.Key{Consumer: "c", EventID: "old1"}, noop); err != nil {
			t.Fatalf("old1 after prune: %v", err)
		}
		if err := e.in.Process(ctx, inbox.Key{Consumer: "c", EventID: "new"}, noop); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("new after prune: %v", err)
		}
		// RunRetention prunes in the background until its ctx ends.
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- inbox.RunRetention(rctx, e.pruner, -time.Hour, 10*time.Millisecond, nil) }()
		deadline := time.Now().Add(5 * time.Second)
		for e.queryInt(t, "SELECT COUNT(*) FROM "+e.in.(interface{ Table() string }).Table()) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("RunRetention did not prune")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("RunRetention returned %v", err)
		}
	})
}

func TestCompareAndSwapAndUpsert(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		biz := businessTable(t, e)
		up, err := sqlinbox.UpsertSQL(e.dialect, biz, []string{"id"}, []string{"id", "n", "version"})
		if err != nil {
			t.Fatal(err)
		}
		cas := "UPDATE " + biz + " SET n = " + e.ph(1) + ", version = version + 1 WHERE id = " + e.ph(2) + " AND version = " + e.ph(3)
		run := func(id string, fn func(ctx context.Context) error) error {
			return e.in.Process(ctx, inbox.Key{Consumer: "c", EventID: id}, fn)
		}
		// Upsert twice with the same values: same state (idempotent).
		for i := range 2 {
			if err := run("up"+string(rune('0'+i)), func(ctx context.Context) error {
				_, err := e.exec(ctx, up, "x", 7, 1)
				return err
			}); err != nil {
				t.Fatalf("upsert %d: %v", i, err)
			}
		}
		if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz+" WHERE id = 'x' AND n = 7 AND version = 1"); n != 1 {
			t.Fatalf("upsert: %d matching rows", n)
		}
		// CAS from version 1 succeeds once; a second CAS from version 1 conflicts.
		casFn := func(ctx context.Context) error {
			if e.name == "pgx" {
				n, err := e.exec(ctx, cas, 8, "x", 1)
				if err == nil && n == 0 {
					return sqlinbox.ErrVersionConflict
				}
				return err
			}
			tx, err := sqlinbox.Tx(ctx)
			if err != nil {
				return err
			}
			return sqlinbox.CompareAndSwap(ctx, tx, cas, 8, "x", 1)
		}
		if err := run("cas1", casFn); err != nil {
			t.Fatal(err)
		}
		if err := run("cas2", casFn); !errors.Is(err, sqlinbox.ErrVersionConflict) {
			t.Fatalf("stale CAS: got %v, want ErrVersionConflict", err)
		}
		if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz+" WHERE id = 'x' AND n = 8 AND version = 2"); n != 1 {
			t.Fatal("CAS did not apply exactly once")
		}
	})
}

func TestInvalidTable(t *testing.T) {
	if _, err := sqlinbox.New(nil, sqlinbox.Postgres, sqlinbox.Options{Table: "x; DROP TABLE y"}); !errors.Is(err, sqlinbox.ErrInvalidTable) {
		t.Fatalf("got %v", err)
	}
	if _, err := sqlinbox.UpsertSQL(sqlinbox.MySQL, "t", []string{"id"}, []string{"id", "a b"}); err == nil {
		t.Fatal("bad column accepted")
	}
}

func TestSuite(t *testing.T) {
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			inboxtest.Exercise(t, func(t *testing.T) inbox.Inbox { return s.setup(t).in },
				inboxtest.WithTx(func(t *testing.T) (inbox.Inbox, inboxtest.Tx) {
					e := s.setup(t)
					biz := businessTable(t, e)
					return e.in, inboxtest.Tx{
						Write: func(ctx context.Context, id string) error {
							_, err := e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ("+e.ph(1)+", 1, 1)", id)
							return err
						},
						Written: func(t *testing.T, id string) bool {
							return e.queryInt(t, "SELECT COUNT(*) FROM "+biz+" WHERE id = "+e.ph(1), id) == 1
						},
					}
				}))
		})
	}
}
