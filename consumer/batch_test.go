package consumer_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/lruinbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// txLog records which transaction each handler call ran in.
type txLog struct {
	mu    sync.Mutex
	calls map[string][]any // key -> tx of each call
	size  map[any]int      // tx -> handler calls in it
}

func newTxLog() *txLog { return &txLog{calls: map[string][]any{}, size: map[any]int{}} }

func (l *txLog) add(key string, tx any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[key] = append(l.calls[key], tx)
	l.size[tx]++
}

// maxBatch is the most handler calls seen in one transaction.
func (l *txLog) maxBatch() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := 0
	for _, n := range l.size {
		m = max(m, n)
	}
	return m
}

func (l *txLog) callsOf(key string) []any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]any(nil), l.calls[key]...)
}

func (l *txLog) batchOf(tx any) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size[tx]
}

func batchConfig(in inbox.Inbox, concurrency int) consumer.Config {
	return consumer.Config{Concurrency: concurrency, Inbox: in, InboxBatch: 16, InboxBatchWait: 50 * time.Millisecond, Retry: fastRetry(10)}
}

func TestBatchConfig(t *testing.T) {
	b := newBroker(t)
	in := lruinbox.New(lruinbox.Options{})
	if _, err := consumer.New(b, consumer.Config{Inbox: in, InboxBatch: 8}); err == nil {
		t.Fatal("InboxBatch accepted an inbox without ProcessBatch")
	}
	if _, err := consumer.New(b, consumer.Config{InboxBatch: 8}); err == nil {
		t.Fatal("InboxBatch accepted no inbox")
	}
	var sqlIn inbox.Inbox = &sqlinbox.Inbox{}
	if _, err := consumer.New(b, consumer.Config{Inbox: sqlIn, InboxBatch: 8, StrictOrder: true}); err != nil {
		t.Fatalf("InboxBatch with StrictOrder (StrictBatched): %v", err)
	}
	if _, err := consumer.New(b, consumer.Config{Inbox: sqlIn, InboxBatch: 8, OrderedBySubject: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := consumer.New(b, consumer.Config{Inbox: sqlIn, InboxBatch: 8}); err != nil {
		t.Fatal(err)
	}
}

// Batch mode: each event delivered 5 times, concurrently, changes the
// business table once.
func TestBatchConcurrentDuplicatesApplyOnce(t *testing.T) {
	eachTxStore(t, func(t *testing.T, st *store, b *memorybroker.Broker, topic string) {
		log := newTxLog()
		c := newConsumer(t, b, batchConfig(st.in, 8))
		_ = c.Handle(topic, "ledger", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
			log.add(e.ID, st.tx(ctx))
			return st.bump(ctx, e.Subject)
		}))
		start(t, c)
		const events, copies = 20, 5
		publish(t, b, topic, accountCopies(events, copies)...)
		appliedOnce(t, c, st, events, copies, 30*time.Second)
		if m := log.maxBatch(); m < 2 {
			t.Fatalf("no transaction ran more than %d handler(s): not batched", m)
		}
	})
}

// A handler error in a batch rolls back that event only: the others are
// committed (once) with the batch, the failed one is retried and applied
// once.
func TestBatchHandlerFailureIsolated(t *testing.T) {
	eachTxStore(t, func(t *testing.T, st *store, b *memorybroker.Broker, topic string) {
		log := newTxLog()
		var failures atomic.Int32
		c := newConsumer(t, b, batchConfig(st.in, 1))
		_ = c.Handle(topic, "ledger", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
			log.add(e.Subject, st.tx(ctx))
			if err := st.bump(ctx, e.Subject); err != nil {
				return err
			}
			if e.Subject == "acct-3" && failures.Add(1) <= 2 {
				return errors.New("fails after writing")
			}
			return nil
		}))
		start(t, c)
		const events = 8
		var batch []eventkit.Event
		for i := range events {
			batch = append(batch, ev("credit", "acct-"+strconv.Itoa(i), `{}`))
		}
		publish(t, b, topic, batch...)
		eventually(t, 20*time.Second, "all handled", func() bool { return c.Stats().Handled == events })
		for i := range events {
			acct := "acct-" + strconv.Itoa(i)
			if n := st.count(t, acct); n != 1 {
				t.Fatalf("%s changed %d times, want 1", acct, n)
			}
			// On PostgreSQL the events before the failed one in its
			// batch run again (rolled back, then committed): at most
			// once per failure more.
			calls := log.callsOf(acct)
			if i == 3 && len(calls) != 3 || len(calls) < 1 || len(calls) > 3 {
				t.Fatalf("%s handled %d times", acct, len(calls))
			}
		}
		if n := log.batchOf(log.callsOf("acct-3")[0]); n < 2 {
			t.Fatalf("the failing event's first attempt was not in a batch (%d handler calls in its tx)", n)
		}
		if s := c.Stats(); s.Failed != 2 || s.Retried != 2 || s.DeadLettered != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// A crash after a batch commit and before its acks: the redeliveries are
// skipped as duplicates.
func TestBatchCrashBetweenCommitAndAck(t *testing.T) {
	eachTxStore(t, func(t *testing.T, st *store, b *memorybroker.Broker, topic string) {
		log := newTxLog()
		handler := consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
			log.add(e.Subject, st.tx(ctx))
			return st.bump(ctx, e.Subject)
		})
		const events = 6
		var batch []eventkit.Event
		for i := range events {
			batch = append(batch, ev("credit", "acct-"+strconv.Itoa(i), `{}`))
		}

		client1 := memorybroker.Client(b)
		crash := &crashingSub{Subscriber: client1, crashed: make(chan struct{})}
		cfg := batchConfig(st.in, 1)
		cfg.DeadLetterPublisher = b
		c1 := newConsumer(t, crash, cfg)
		_ = c1.Handle(topic, "ledger", handler)
		r1 := start(t, c1)
		publish(t, b, topic, batch...)
		eventually(t, 10*time.Second, "first run committed all", func() bool { return c1.Stats().Handled == events })
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = client1.Close(ctx)
		cancel()
		_ = r1.stop()
		if m := log.maxBatch(); m < 2 {
			t.Fatalf("first run not batched (max %d per tx)", m)
		}

		c2 := newConsumer(t, memorybroker.Client(b), batchConfig(st.in, 1))
		_ = c2.Handle(topic, "ledger", handler)
		start(t, c2)
		eventually(t, 10*time.Second, "redeliveries skipped", func() bool { return c2.Stats().Duplicates == events })
		for i := range events {
			if n := st.count(t, "acct-"+strconv.Itoa(i)); n != 1 {
				t.Fatalf("acct-%d applied %d times, want 1", i, n)
			}
		}
		if s := c2.Stats(); s.Handled != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// pgDeferred is a Postgres inbox plus a child table whose foreign key is
// checked at commit: a child of a missing parent makes COMMIT fail.
type pgDeferred struct {
	in       inbox.Inbox
	tx       func(ctx context.Context) any
	addChild func(ctx context.Context, ev, parent string) error // in the handler's tx
	parent   string                                             // the parent table
	exec     func(q string) error
	children func(t *testing.T, ev string) int
}

func pgDeferredSetup(t *testing.T, usePgx bool) *pgDeferred {
	t.Helper()
	table, parent, child := testenv.Name("inbox"), testenv.Name("parent"), testenv.Name("child")
	ddl := []string{
		"CREATE TABLE " + parent + " (id text PRIMARY KEY)",
		"CREATE TABLE " + child + " (ev text NOT NULL, parent text NOT NULL REFERENCES " + parent + "(id) DEFERRABLE INITIALLY DEFERRED)",
		"INSERT INTO " + parent + " VALUES ('ok')",
	}
	drop := []string{"DROP TABLE " + table, "DROP TABLE " + child, "DROP TABLE " + parent}
	insert := "INSERT INTO " + child + " (ev, parent) VALUES ($1, $2)"
	count := "SELECT COUNT(*) FROM " + child + " WHERE ev = $1"
	p := &pgDeferred{parent: parent}
	if usePgx {
		pool, err := pgxpool.New(context.Background(), testenv.Postgres.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		in, err := sqlinbox.NewPgx(pool, sqlinbox.Options{Table: table})
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		p.in = in
		p.tx = func(ctx context.Context) any { tx, _ := sqlinbox.PgxTx(ctx); return tx }
		p.addChild = func(ctx context.Context, ev, par string) error {
			tx, err := sqlinbox.PgxTx(ctx)
			if err == nil {
				_, err = tx.Exec(ctx, insert, ev, par)
			}
			return err
		}
		p.exec = func(q string) error {
			_, err := pool.Exec(context.Background(), q)
			return err
		}
		p.children = func(t *testing.T, ev string) int {
			var n int
			if err := pool.QueryRow(context.Background(), count, ev).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
	} else {
		db, err := sql.Open("pgx", testenv.Postgres.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		in, err := sqlinbox.New(db, sqlinbox.Postgres, sqlinbox.Options{Table: table})
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		p.in = in
		p.tx = func(ctx context.Context) any { tx, _ := sqlinbox.Tx(ctx); return tx }
		p.addChild = func(ctx context.Context, ev, par string) error {
			tx, err := sqlinbox.Tx(ctx)
			if err == nil {
				_, err = tx.ExecContext(ctx, insert, ev, par)
			}
			return err
		}
		p.exec = func(q string) error {
			_, err := db.Exec(q)
			return err
		}
		p.children = func(t *testing.T, ev string) int {
			var n int
			if err := db.QueryRow(count, ev).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	for _, q := range ddl {
		if err := p.exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		for _, q := range drop {
			_ = p.exec(q)
		}
	})
	return p
}

// A batch whose COMMIT fails (a deferred foreign key, broken by one of its
// events) leaves no effect of any member; every member is processed again
// and applied once, and the breaking event, once its parent exists.
func TestBatchCommitFailure(t *testing.T) {
	t.Parallel()
	for _, usePgx := range []bool{false, true} {
		t.Run(map[bool]string{false: "postgres", true: "pgx"}[usePgx], func(t *testing.T) {
			t.Parallel()
			p := pgDeferredSetup(t, usePgx)
			b := newBroker(t)
			topic := testenv.Name("t")
			log := newTxLog()
			cfg := batchConfig(p.in, 1)
			cfg.Retry = fastRetry(1000)
			c := newConsumer(t, b, cfg)
			_ = c.Handle(topic, "ledger", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
				log.add(e.ID, p.tx(ctx))
				return p.addChild(ctx, e.ID, e.Subject)
			}))
			var evs []eventkit.Event
			for range 5 {
				evs = append(evs, ev("child.added", "ok", `{}`))
			}
			late := ev("child.added", "late", `{}`)
			evs = append(evs, late)
			start(t, c)
			publish(t, b, topic, evs...)
			// The late event fails in the batch and then alone; then its
			// parent appears.
			eventually(t, 10*time.Second, "the late event tried twice", func() bool { return len(log.callsOf(late.ID)) >= 2 })
			if err := p.exec("INSERT INTO " + p.parent + " VALUES ('late')"); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "all handled", func() bool { return c.Stats().Handled == uint64(len(evs)) })
			if n := log.batchOf(log.callsOf(late.ID)[0]); n != len(evs) {
				t.Fatalf("the first transaction ran %d handlers, want all %d", n, len(evs))
			}
			for _, e := range evs {
				if n := p.children(t, e.ID); n != 1 {
					t.Fatalf("%s (%s) applied %d times, want 1", e.ID, e.Subject, n)
				}
				if e.ID != late.ID {
					if calls := log.callsOf(e.ID); len(calls) != 2 {
						t.Fatalf("%s ran %d times, want 2 (the failed batch, then alone)", e.ID, len(calls))
					}
				}
			}
		})
	}
}

// Ordered batch mode: the events of several subjects share a transaction,
// each subject's in order; an event failing in the middle of its subject is
// retried in place and the later events of its subject wait for it; every
// copy after the first is a duplicate. The handler checks the order in its
// transaction: event k of a subject finds its counter at k.
func TestBatchOrderedBySubject(t *testing.T) {
	eachTxStore(t, func(t *testing.T, st *store, b *memorybroker.Broker, topic string) {
		log := newTxLog()
		var mu sync.Mutex
		subjectsOf := map[any]map[string]bool{} // tx -> subjects it ran
		var failures, violations atomic.Int32
		cfg := batchConfig(st.in, 2)
		cfg.OrderedBySubject = true
		c := newConsumer(t, b, cfg)
		_ = c.Handle(topic, "ledger", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
			tx := st.tx(ctx)
			log.add(e.ID, tx)
			mu.Lock()
			if subjectsOf[tx] == nil {
				subjectsOf[tx] = map[string]bool{}
			}
			subjectsOf[tx][e.Subject] = true
			mu.Unlock()
			k, _ := strconv.Atoi(string(e.Data))
			n, err := st.read(ctx, e.Subject)
			if err != nil {
				return err
			}
			if n != k {
				violations.Add(1)
				t.Errorf("%s: event %d found the counter at %d", e.Subject, k, n)
			}
			if err := st.bump(ctx, e.Subject); err != nil {
				return err
			}
			if e.Subject == "s1" && k == 3 && failures.Add(1) <= 2 {
				return errors.New("fails after writing")
			}
			return nil
		}))
		const subjects, perSubject = 6, 10
		var evs []eventkit.Event
		for k := range perSubject {
			for s := range subjects {
				e := ev("credit", "s"+strconv.Itoa(s), strconv.Itoa(k))
				evs = append(evs, e, e) // every event twice
			}
		}
		publish(t, b, topic, evs...)
		start(t, c)
		eventually(t, 30*time.Second, "every copy settled", func() bool {
			s := c.Stats()
			return s.Handled+s.Duplicates == uint64(len(evs))
		})
		for s := range subjects {
			if n := st.count(t, "s"+strconv.Itoa(s)); n != perSubject {
				t.Fatalf("s%d: counter %d, want %d", s, n, perSubject)
			}
		}
		if s := c.Stats(); s.Handled != subjects*perSubject || s.Failed != 2 || s.Retried != 2 || s.DeadLettered != 0 {
			t.Fatalf("stats %+v", s)
		}
		if m := log.maxBatch(); m < 2 {
			t.Fatalf("no transaction ran more than %d handler(s): not batched", m)
		}
		mu.Lock()
		multi := 0
		for _, subs := range subjectsOf {
			multi = max(multi, len(subs))
		}
		mu.Unlock()
		if multi < 2 {
			t.Fatal("no transaction ran the events of more than one subject")
		}
		if violations.Load() != 0 {
			t.Fatalf("%d events out of order", violations.Load())
		}
	})
}

// Ordered batch mode stopped in the middle: what was not committed is
// handed back (ready subjects no worker took, their backlogs, batches not
// started) and a second consumer applies every event once, in order.
func TestBatchOrderedStopHandsBack(t *testing.T) {
	t.Parallel()
	st := stores[0].new(t)
	b := newBroker(t)
	topic := testenv.Name("t")
	var handled atomic.Int32
	handler := consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		k, _ := strconv.Atoi(string(e.Data))
		if n, err := st.read(ctx, e.Subject); err != nil || n != k {
			return eventkit.Permanent(fmt.Errorf("%s: event %d found the counter at %d (%v)", e.Subject, k, n, err))
		}
		time.Sleep(time.Millisecond)
		handled.Add(1)
		return st.bump(ctx, e.Subject)
	})
	const subjects, perSubject = 40, 10
	var evs []eventkit.Event
	for k := range perSubject {
		for s := range subjects {
			evs = append(evs, ev("credit", "s"+strconv.Itoa(s), strconv.Itoa(k)))
		}
	}
	cfg := batchConfig(st.in, 2)
	cfg.OrderedBySubject = true
	cfg.DeadLetterPublisher = b
	c1 := newConsumer(t, memorybroker.Client(b), cfg)
	_ = c1.Handle(topic, "ledger", handler)
	r1 := start(t, c1)
	publish(t, b, topic, evs...)
	eventually(t, 10*time.Second, "some handled", func() bool { return handled.Load() >= 20 })
	if err := r1.stop(); err != nil {
		t.Fatal(err)
	}
	if h := c1.Stats().Handled; h >= uint64(len(evs)) {
		t.Fatalf("the first consumer handled all %d events before it stopped", h)
	}
	c2 := newConsumer(t, memorybroker.Client(b), cfg)
	_ = c2.Handle(topic, "ledger", handler)
	start(t, c2)
	eventually(t, 30*time.Second, "all applied", func() bool {
		for s := range subjects {
			if st.count(t, "s"+strconv.Itoa(s)) != perSubject {
				return false
			}
		}
		return true
	})
	if s1, s2 := c1.Stats(), c2.Stats(); s1.DeadLettered+s2.DeadLettered != 0 || s1.Handled+s2.Handled != uint64(len(evs)) {
		t.Fatalf("stats %+v then %+v", s1, s2)
	}
}
