package consumer_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// strictBroker makes clients of one broker for a strict-order test: conn
// returns a new client (its own connection), closed when the test ends.
type strictBroker struct {
	name  string
	setup func(t testing.TB, group string) (conn func() broker.Broker, topic string)
}

func closeLater(t testing.TB, b broker.Broker) broker.Broker {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

func dialCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

var strictBrokers = []strictBroker{
	{"memory", func(t testing.TB, _ string) (func() broker.Broker, string) {
		shared := newBroker(t)
		return func() broker.Broker { return memorybroker.Client(shared) }, testenv.Name("ckt")
	}},
	{"nats", func(t testing.TB, _ string) (func() broker.Broker, string) {
		admin, newTopic := natsBroker(t)
		_ = admin
		url := testenv.NATS.URL(t)
		return func() broker.Broker {
			ctx, cancel := dialCtx()
			defer cancel()
			b, err := natsbroker.Connect(ctx, url, natsbroker.Options{Name: "eventkit-strict-test",
				Stream: natsbroker.StreamOptions{Storage: jetstream.MemoryStorage}})
			if err != nil {
				t.Fatal(err)
			}
			return closeLater(t, b)
		}, newTopic()
	}},
	{"rabbitmq", func(t testing.TB, group string) (func() broker.Broker, string) {
		url := testenv.RabbitMQ.URL(t)
		conn := func() broker.Broker {
			ctx, cancel := dialCtx()
			defer cancel()
			b, err := rabbitmqbroker.New(ctx, rabbitmqbroker.Options{URL: url, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			return closeLater(t, b)
		}
		admin := conn().(*rabbitmqbroker.Broker)
		topic := testenv.Name("ckt")
		ctx, cancel := dialCtx()
		defer cancel()
		if err := admin.Provision(ctx, topic, group); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := dialCtx()
			defer cancel()
			_ = admin.DeleteTopology(ctx, topic, group)
		})
		return conn, topic
	}},
	{"redis", func(t testing.TB, _ string) (func() broker.Broker, string) {
		url := testenv.Redis.URL(t)
		prefix := testenv.Name("ekt-strict") + ":"
		o, err := goredis.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		raw := goredis.NewClient(o)
		t.Cleanup(func() {
			ctx, cancel := dialCtx()
			defer cancel()
			var keys []string
			iter := raw.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			if len(keys) > 0 {
				_ = raw.Del(ctx, keys...).Err()
			}
			_ = raw.Close()
		})
		return func() broker.Broker {
			ctx, cancel := dialCtx()
			defer cancel()
			b, err := redisbroker.New(ctx, redisbroker.Options{URL: url, Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			return closeLater(t, b)
		}, testenv.Name("ckt")
	}},
	{"kafka", func(t testing.TB, _ string) (func() broker.Broker, string) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return func() broker.Broker {
			ctx, cancel := dialCtx()
			defer cancel()
			b, err := kafkabroker.New(ctx, kafkabroker.Options{
				Brokers: c.ListenAddrs(), Partitions: 6, Logger: quietLogger(),
				SessionTimeout: 10 * time.Second, HeartbeatInterval: 100 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
				CommitInterval: 100 * time.Millisecond, FetchMaxWait: 200 * time.Millisecond, RevokeWait: 2 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			return closeLater(t, b)
		}, testenv.Name("ckt")
	}},
}

// strictDB is a database for a strict-order test: the inbox, and a
// business table with one counter per subject.
type strictDB struct {
	name string
	open func(t *testing.T) (*sql.DB, string, sqlinbox.Dialect)
}

var strictDBs = []strictDB{
	{"postgres", func(t *testing.T) (*sql.DB, string, sqlinbox.Dialect) {
		return openDB(t, "pgx", testenv.Postgres.URL(t)), "$", sqlinbox.Postgres
	}},
	{"mariadb", func(t *testing.T) (*sql.DB, string, sqlinbox.Dialect) {
		return openDB(t, "mysql", testenv.MySQL.URL(t)), "?", sqlinbox.MySQL
	}},
	{"sqlite", func(t *testing.T) (*sql.DB, string, sqlinbox.Dialect) {
		dsn := "file:" + filepath.Join(t.TempDir(), "strict.db") + "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)"
		return openDB(t, "sqlite", dsn), "?", sqlinbox.SQLite
	}},
}

func openDB(t *testing.T, driver, dsn string) *sql.DB {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// crashing wraps a client so that the subscription it makes swallows its
// first `after` deliveries (never settling them) and then drops the client
// as a crashed process would: Close with a context that is already
// cancelled, so nothing is settled, and the broker redelivers them later,
// after events of their subjects that were published after them.
type crashing struct {
	broker.Broker
	after   int64
	n       atomic.Int64
	crashed chan struct{}
}

func (c *crashing) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	return c.Broker.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		if n := c.n.Add(1); n <= c.after {
			if n == c.after {
				go func() {
					dead, cancel := context.WithCancel(context.Background())
					cancel()
					_ = c.Broker.Close(dead)
					close(c.crashed)
				}()
			}
			return nil // held, unsettled
		}
		return h(ctx, d)
	}, opts...)
}

// strictScenario publishes subjects*per events (each subject's 1st and
// 2nd, 4th and 5th, ... events swapped, as redeliveries reorder them) and
// then a copy of every third event again, to three competing consumers of
// one group on separate connections, the first of which crashes with
// events in hand. The handler checks each subject's order with a
// compare-and-swap on its counter row. It returns the order violations
// seen, after checking that every event was applied exactly once.
func strictScenario(t *testing.T, sb strictBroker, sdb strictDB, mode consumer.Mode) int64 {
	const subjects, per, group = 12, 12, "g"
	conn, topic := sb.setup(t, group)
	sink := newOrderSink(t, sdb, subjects)
	in, handler := sink.in, sink.handler

	var consumers []*running
	crash := &crashing{Broker: conn(), after: 4, crashed: make(chan struct{})}
	for i := range 3 {
		var sub broker.Broker = crash
		if i > 0 {
			sub = conn()
		}
		cfg := consumer.Config{Concurrency: 4, Inbox: in, Retry: fastRetry(5), AckWait: 2 * time.Second, Mode: mode}
		c := newConsumer(t, sub, cfg)
		if err := c.Handle(topic, group, handler); err != nil {
			t.Fatal(err)
		}
		r := start(t, c)
		if i == 0 { // it crashes: Run ends with "subscription stopped"
			t.Cleanup(func() { _ = r.stop() })
		}
		consumers = append(consumers, r)
	}

	var evs []eventkit.Event
	for i := 1; i <= per; i++ {
		for s := range subjects {
			evs = append(evs, seqEvent(s, i))
		}
	}
	for i := 0; i+1 < per; i += 3 { // swap the 1st and 2nd, 4th and 5th, ... of every subject
		for s := range subjects {
			a, b := i*subjects+s, (i+1)*subjects+s
			evs[a], evs[b] = evs[b], evs[a]
		}
	}
	pub := conn()
	for i := 0; i < len(evs); i += 24 {
		publish(t, pub, topic, evs[i:min(i+24, len(evs))]...)
	}
	var again []eventkit.Event
	for i := 0; i < len(evs); i += 3 {
		again = append(again, evs[i])
	}
	publish(t, pub, topic, again...)

	eventually(t, 120*time.Second, "every event applied", func() bool { return sink.total() >= subjects*per })
	select {
	case <-crash.crashed:
	default:
		t.Logf("%s: the first consumer got fewer than %d deliveries and did not crash", sb.name, crash.after)
	}
	// Let copies still in flight settle, then check nothing was applied twice.
	eventually(t, 60*time.Second, "deliveries settled", func() bool {
		var inflight int
		for _, r := range consumers[1:] {
			inflight += r.c.Stats().InFlight
		}
		return inflight == 0
	})
	sink.check(per)
	var st consumer.Stats
	for _, r := range consumers {
		s := r.c.Stats()
		st.Handled += s.Handled
		st.Duplicates += s.Duplicates
		st.Early += s.Early
	}
	t.Logf("%s/%s %s: violations %d, handled %d, duplicates %d, early %d", sb.name, sdb.name, mode,
		sink.violations.Load(), st.Handled, st.Duplicates, st.Early)
	return sink.violations.Load()
}

// orderSink is a strict-order test's database: the inbox, and a business
// table with one counter per subject ("s0", "s1", ...) that the handler
// moves on with a compare-and-swap, counting an event that is not its
// subject's next (its data is its number, quoted) as a violation.
type orderSink struct {
	t          *testing.T
	db         *sql.DB
	in         *sqlinbox.Inbox
	handler    consumer.Handler
	biz        string
	p          func(int) string
	subjects   int
	violations atomic.Int64
}

func newOrderSink(t *testing.T, sdb strictDB, subjects int) *orderSink {
	db, ph, dialect := sdb.open(t)
	in, biz := inboxAndCounters(t, db, dialect)
	p := func(i int) string {
		if ph == "$" {
			return "$" + strconv.Itoa(i)
		}
		return "?"
	}
	for s := range subjects {
		if _, err := db.Exec("INSERT INTO "+biz+" (id, n) VALUES ("+p(1)+", 0)", fmt.Sprint("s", s)); err != nil {
			t.Fatal(err)
		}
	}
	k := &orderSink{t: t, db: db, in: in, biz: biz, p: p, subjects: subjects}
	cas := "UPDATE " + biz + " SET n = n + 1 WHERE id = " + p(1) + " AND n = " + p(2)
	bump := "UPDATE " + biz + " SET n = n + 1 WHERE id = " + p(1)
	k.handler = consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
		str, err := strconv.Unquote(string(ev.Data))
		if err != nil {
			return eventkit.Permanent(err)
		}
		seq, err := strconv.Atoi(str)
		if err != nil {
			return eventkit.Permanent(err)
		}
		tx, err := sqlinbox.Tx(ctx)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, cas, ev.Subject, seq-1)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		k.violations.Add(1)
		_, err = tx.ExecContext(ctx, bump, ev.Subject)
		return err
	})
	return k
}

// total is the number of events applied.
func (k *orderSink) total() int {
	var n int
	if err := k.db.QueryRow("SELECT coalesce(sum(n), 0) FROM " + k.biz).Scan(&n); err != nil {
		k.t.Fatal(err)
	}
	return n
}

// check fails the test unless every subject was applied per times.
func (k *orderSink) check(per int) {
	for s := range k.subjects {
		var n int
		if err := k.db.QueryRow("SELECT n FROM "+k.biz+" WHERE id = "+k.p(1), fmt.Sprint("s", s)).Scan(&n); err != nil {
			k.t.Fatal(err)
		}
		if n != per {
			k.t.Errorf("subject s%d: applied %d times, want %d", s, n, per)
		}
	}
}

// seqEvent is event number seq of subject s<subject>, its data the number.
func seqEvent(subject, seq int) eventkit.Event {
	return ev("acct.bumped", fmt.Sprint("s", subject), strconv.Quote(strconv.Itoa(seq)),
		eventkit.WithExtension(eventkit.SubjectSeqExtension, strconv.Itoa(seq)))
}

// StrictOrder: three competing consumers, redeliveries out of order and a
// consumer that crashes with events in hand: every subject's events are
// applied once each, in sequence order, on every broker and database.
func TestStrictOrderCompetingConsumersCrash(t *testing.T) {
	t.Parallel()
	type combo struct {
		b strictBroker
		d strictDB
	}
	var combos []combo
	for _, b := range strictBrokers {
		combos = append(combos, combo{b, strictDBs[0]}) // every broker on Postgres
	}
	for _, b := range strictBrokers[:2] { // memory and NATS on the other databases
		for _, d := range strictDBs[1:] {
			combos = append(combos, combo{b, d})
		}
	}
	for _, c := range combos {
		t.Run(c.b.name+"/"+c.d.name, func(t *testing.T) {
			t.Parallel()
			if v := strictScenario(t, c.b, c.d, consumer.Strict()); v != 0 {
				t.Fatalf("%d order violations in strict mode", v)
			}
		})
	}
}

// StrictBatched: the same run with strict order in batches of up to 8
// (several subjects per transaction, out-of-order runs sorted, early
// events held, a consumer crashing with a batch in hand): every subject's
// events are applied once each, in sequence order.
func TestStrictBatchedCompetingConsumersCrash(t *testing.T) {
	t.Parallel()
	for _, b := range strictBrokers[:2] { // memory and NATS
		for _, d := range strictDBs {
			t.Run(b.name+"/"+d.name, func(t *testing.T) {
				t.Parallel()
				if v := strictScenario(t, b, d, consumer.StrictBatched(8, 5*time.Millisecond)); v != 0 {
					t.Fatalf("%d order violations in strict batched mode", v)
				}
			})
		}
	}
}

// The same run in best-effort order (OrderedBySubject) applies events out
// of their subject's order: the scenario can catch what StrictOrder fixes.
func TestBestEffortOrderViolatesUnderReordering(t *testing.T) {
	t.Parallel()
	if v := strictScenario(t, strictBrokers[0], strictDBs[2], consumer.PerSubject()); v == 0 {
		t.Fatal("no order violation in best-effort mode: the scenario does not reorder")
	}
}
