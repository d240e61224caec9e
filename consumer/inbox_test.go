package consumer_test

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
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/lruinbox"
	"github.com/eventkit/eventkit/inbox/redisinbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// store is an inbox plus a business table with one counter row per
// account; bump adds 1 to an account in the handler's transaction (or, for
// the non-SQL inboxes, in memory).
type store struct {
	name  string
	in    inbox.Inbox
	bump  func(ctx context.Context, account string) error
	count func(t testing.TB, account string) int
	// tx returns the handler's transaction (SQL stores), to tell batches
	// apart.
	tx func(ctx context.Context) any
	// read returns an account's counter as the handler's transaction sees
	// it (SQL stores).
	read func(ctx context.Context, account string) (int, error)
}

func sqlStore(t testing.TB, name, driver, dsn string, d sqlinbox.Dialect) *store {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	in, biz := inboxAndCounters(t, db, d)
	up, _ := sqlinbox.UpsertSQL(d, biz, []string{"id"}, []string{"id", "n"})
	_ = up
	var insert, update string
	switch d {
	case sqlinbox.Postgres:
		insert = "INSERT INTO " + biz + " (id, n) VALUES ($1, 0) ON CONFLICT DO NOTHING"
		update = "UPDATE " + biz + " SET n = n + 1 WHERE id = $1"
	case sqlinbox.MySQL:
		insert = "INSERT IGNORE INTO " + biz + " (id, n) VALUES (?, 0)"
		update = "UPDATE " + biz + " SET n = n + 1 WHERE id = ?"
	default:
		insert = "INSERT INTO " + biz + " (id, n) VALUES (?, 0) ON CONFLICT DO NOTHING"
		update = "UPDATE " + biz + " SET n = n + 1 WHERE id = ?"
	}
	return &store{
		name: name, in: in,
		tx: func(ctx context.Context) any { tx, _ := sqlinbox.Tx(ctx); return tx },
		bump: func(ctx context.Context, account string) error {
			tx, err := sqlinbox.Tx(ctx)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, insert, account); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, update, account)
			return err
		},
		read: func(ctx context.Context, account string) (int, error) {
			tx, err := sqlinbox.Tx(ctx)
			if err != nil {
				return 0, err
			}
			var n int
			err = tx.QueryRowContext(ctx, "SELECT n FROM "+biz+" WHERE id = "+map[bool]string{true: "$1", false: "?"}[d == sqlinbox.Postgres], account).Scan(&n)
			if errors.Is(err, sql.ErrNoRows) {
				err = nil
			}
			return n, err
		},
		count: func(t testing.TB, account string) int {
			var n int
			err := db.QueryRow("SELECT n FROM "+biz+" WHERE id = "+map[bool]string{true: "$1", false: "?"}[d == sqlinbox.Postgres], account).Scan(&n)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				t.Fatal(err)
			}
			return n
		},
	}
}

func pgxStore(t testing.TB) *store {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testenv.Postgres.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ctx := context.Background()
	table, biz := testenv.Name("inbox"), testenv.Name("acct")
	in, err := sqlinbox.NewPgx(pool, sqlinbox.Options{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+biz+" (id text PRIMARY KEY, n int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE "+table)
		_, _ = pool.Exec(context.Background(), "DROP TABLE "+biz)
	})
	return &store{
		name: "pgx", in: in,
		tx: func(ctx context.Context) any { tx, _ := sqlinbox.PgxTx(ctx); return tx },
		bump: func(ctx context.Context, account string) error {
			tx, err := sqlinbox.PgxTx(ctx)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO "+biz+" (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = "+biz+".n + 1", account)
			return err
		},
		read: func(ctx context.Context, account string) (int, error) {
			tx, err := sqlinbox.PgxTx(ctx)
			if err != nil {
				return 0, err
			}
			var n int
			err = tx.QueryRow(ctx, "SELECT COALESCE((SELECT n FROM "+biz+" WHERE id = $1), 0)", account).Scan(&n)
			return n, err
		},
		count: func(t testing.TB, account string) int {
			var n int
			if err := pool.QueryRow(context.Background(), "SELECT COALESCE((SELECT n FROM "+biz+" WHERE id = $1), 0)", account).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		},
	}
}

// memStore is for the non-transactional inboxes: the effect is a map entry.
func memStore(name string, in inbox.Inbox) *store {
	var mu sync.Mutex
	m := map[string]int{}
	return &store{
		name: name, in: in,
		bump: func(ctx context.Context, account string) error {
			mu.Lock()
			m[account]++
			mu.Unlock()
			return nil
		},
		count: func(t testing.TB, account string) int {
			mu.Lock()
			defer mu.Unlock()
			return m[account]
		},
	}
}

func redisStore(t testing.TB) *store {
	opt, err := redis.ParseURL(testenv.Redis.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	opt.PoolSize = 128
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return memStore("redis", redisinbox.New(rdb, redisinbox.Options{Prefix: testenv.Name("inbox") + ":", Lease: 10 * time.Second}))
}

var stores = []struct {
	name string
	new  func(t testing.TB) *store
}{
	{"postgres", func(t testing.TB) *store {
		return sqlStore(t, "postgres", "pgx", testenv.Postgres.URL(t), sqlinbox.Postgres)
	}},
	{"pgx", pgxStore},
	{"mariadb", func(t testing.TB) *store {
		return sqlStore(t, "mariadb", "mysql", testenv.MySQL.URL(t), sqlinbox.MySQL)
	}},
	{"sqlite", func(t testing.TB) *store {
		dsn := "file:" + filepath.Join(t.TempDir(), "c.db") + "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)"
		return sqlStore(t, "sqlite", "sqlite", dsn, sqlinbox.SQLite)
	}},
	{"redis", redisStore},
	{"lru", func(t testing.TB) *store { return memStore("lru", lruinbox.New(lruinbox.Options{})) }},
}

// Each event delivered 5 times, concurrently, changes the business table
// once; the extra deliveries are counted as duplicates.
func TestInboxConcurrentDuplicatesApplyOnce(t *testing.T) {
	t.Parallel()
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			st := s.new(t)
			b := newBroker(t)
			topic := testenv.Name("t")
			c := newConsumer(t, b, consumer.Config{Concurrency: 8, Inbox: st.in, Retry: fastRetry(10)})
			_ = c.Handle(topic, "ledger", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
				time.Sleep(2 * time.Millisecond)
				return st.bump(ctx, e.Subject)
			}))
			start(t, c)
			const events, copies = 10, 5
			publish(t, b, topic, accountCopies(events, copies)...)
			appliedOnce(t, c, st, events, copies, 20*time.Second)
		})
	}
}

// crashingSub loses the ack of the first delivery, as a process that dies
// right after its commit would.
type crashingSub struct {
	broker.Subscriber
	crashed chan struct{}
	once    sync.Once
}

func (c *crashingSub) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	return c.Subscriber.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		return h(ctx, &lostAck{Delivery: d, c: c})
	}, opts...)
}

type lostAck struct {
	broker.Delivery
	c *crashingSub
}

func (d *lostAck) Ack(context.Context) error {
	d.c.once.Do(func() { close(d.c.crashed) })
	return errors.New("process died before the ack reached the broker")
}

// A crash after the business commit and before the ack: the redelivery (to
// a new process) is skipped as a duplicate and the effect stays once.
func TestCrashBetweenCommitAndAck(t *testing.T) {
	eachTxStore(t, func(t *testing.T, st *store, b *memorybroker.Broker, topic string) {
		handler := consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error { return st.bump(ctx, e.Subject) })

		client1 := memorybroker.Client(b)
		crash := &crashingSub{Subscriber: client1, crashed: make(chan struct{})}
		c1 := newConsumer(t, crash, consumer.Config{Inbox: st.in, DeadLetterPublisher: b})
		_ = c1.Handle(topic, "ledger", handler)
		r1 := start(t, c1)
		publish(t, b, topic, ev("credit", "acct-1", `{}`))
		<-crash.crashed
		// The process dies: its connection goes away with the delivery
		// unacked, and the broker hands it back.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = client1.Close(ctx)
		cancel()
		_ = r1.stop() // Run reports the lost subscription
		if n := st.count(t, "acct-1"); n != 1 {
			t.Fatalf("after first run: %d", n)
		}

		c2 := newConsumer(t, memorybroker.Client(b), consumer.Config{Inbox: st.in})
		_ = c2.Handle(topic, "ledger", handler)
		start(t, c2)
		eventually(t, 10*time.Second, "redelivery skipped", func() bool { return c2.Stats().Duplicates == 1 })
		if n := st.count(t, "acct-1"); n != 1 {
			t.Fatalf("effect applied %d times, want 1", n)
		}
		if s := c2.Stats(); s.Handled != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// A handler error rolls back its writes together with the inbox key, so the
// retry applies them once.
func TestInboxRollbackOnFailureThenRetry(t *testing.T) {
	t.Parallel()
	st := stores[0].new(t)
	b := newBroker(t)
	topic := testenv.Name("t")
	var calls atomic.Int32
	c := newConsumer(t, b, consumer.Config{Inbox: st.in, Retry: fastRetry(5)})
	_ = c.Handle(topic, "ledger", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		if err := st.bump(ctx, e.Subject); err != nil {
			return err
		}
		if calls.Add(1) < 3 {
			return errors.New("fails after writing")
		}
		return nil
	}))
	start(t, c)
	publish(t, b, topic, ev("credit", "acct-x", `{}`))
	eventually(t, 10*time.Second, "handled", func() bool { return c.Stats().Handled == 1 })
	if n := st.count(t, "acct-x"); n != 1 {
		t.Fatalf("effect applied %d times, want 1", n)
	}
}
