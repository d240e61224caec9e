package consumer_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		// go-redis pools keep a reaper until Close; tests close them.
	)
}

// quietLogger discards logs unless EVENTKIT_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("EVENTKIT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fastRetry is a retry policy for tests.
func fastRetry(attempts int) consumer.RetryPolicy {
	return consumer.RetryPolicy{MaxAttempts: attempts, Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond}
}

// running is a consumer started by start.
type running struct {
	c    *consumer.Consumer
	stop func() error // cancels Run and waits for it
	done chan error
}

// start runs c until the test ends (or stop is called).
func start(t *testing.T, c *consumer.Consumer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	var checked atomic.Bool
	stopOnly := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = fmt.Errorf("Run did not return 30s after cancel")
			}
		})
		return err
	}
	stop := func() error { checked.Store(true); return stopOnly() }
	t.Cleanup(func() {
		if err := stopOnly(); err != nil && !checked.Load() {
			t.Errorf("Run: %v", err)
		}
	})
	return &running{c: c, stop: stop, done: done}
}

func newConsumer(t testing.TB, sub broker.Subscriber, cfg consumer.Config) *consumer.Consumer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	c, err := consumer.New(sub, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newBroker(t testing.TB) *memorybroker.Broker {
	t.Helper()
	b := memorybroker.New(memorybroker.Options{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

func publish(t testing.TB, p broker.Publisher, topic string, evs ...eventkit.Event) {
	t.Helper()
	if err := p.Publish(context.Background(), topic, evs...); err != nil {
		t.Fatal(err)
	}
}

func ev(typ, subject string, data string, opts ...eventkit.Option) eventkit.Event {
	return eventkit.New(typ, "application/json", []byte(data), append([]eventkit.Option{eventkit.WithSubject(subject)}, opts...)...)
}

// collect subscribes to topic with a plain auto-acking subscription and
// returns a channel of what arrives.
func collect(t *testing.T, b broker.Subscriber, topic string) <-chan eventkit.Event {
	t.Helper()
	return lateSubscriber(t, b, topic, testenv.Name("collect"))
}

// lateSubscriber subscribes to topic as group (after the fact, for a
// dead-letter topic) with a plain auto-acking subscription and returns a
// channel of what arrives.
func lateSubscriber(t *testing.T, b broker.Subscriber, topic, group string) <-chan eventkit.Event {
	t.Helper()
	ch := make(chan eventkit.Event, 1000)
	sub, err := b.Subscribe(context.Background(), topic, group, broker.AutoAck(
		func(ctx context.Context, e eventkit.Event, attempt int) error {
			ch <- e.Clone()
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sub.Close(ctx)
	})
	return ch
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func receive(t *testing.T, ch <-chan eventkit.Event, timeout time.Duration) eventkit.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(timeout):
		t.Fatalf("nothing received within %s", timeout)
		return eventkit.Event{}
	}
}

// eachTxStore runs test, in parallel, on each of the transactional (SQL)
// inboxes, with a fresh store, broker and topic.
func eachTxStore(t *testing.T, test func(t *testing.T, st *store, b *memorybroker.Broker, topic string)) {
	t.Helper()
	t.Parallel()
	for _, s := range stores[:4] {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			test(t, s.new(t), newBroker(t), testenv.Name("t"))
		})
	}
}

// accountCopies is one credit event for each of acct-0 to acct-(events-1),
// each copies times back to back (the same id).
func accountCopies(events, copies int) []eventkit.Event {
	var batch []eventkit.Event
	for i := range events {
		e := ev("credit", "acct-"+strconv.Itoa(i), `{}`)
		for range copies {
			batch = append(batch, e)
		}
	}
	return batch
}

// appliedOnce waits until every copy of accountCopies(events, copies) is
// handled or skipped as a duplicate, then checks that each account changed
// once and that c handled each event once.
func appliedOnce(t *testing.T, c *consumer.Consumer, st *store, events, copies int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "every copy settled", func() bool {
		s := c.Stats()
		return s.Handled+s.Duplicates == uint64(events*copies)
	})
	for i := range events {
		if n := st.count(t, "acct-"+strconv.Itoa(i)); n != 1 {
			t.Fatalf("acct-%d changed %d times, want 1", i, n)
		}
	}
	if s := c.Stats(); s.Handled != uint64(events) || s.Duplicates != uint64(events*(copies-1)) || s.DeadLettered != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// subjectRounds is perSubject rounds of one event for each of subj-0 to
// subj-(subjects-1), with the round's number as data.
func subjectRounds(subjects, perSubject int) []eventkit.Event {
	var batch []eventkit.Event
	for i := range perSubject {
		for s := range subjects {
			batch = append(batch, ev("x", "subj-"+strconv.Itoa(s), strconv.Itoa(i)))
		}
	}
	return batch
}

// handledInOrder waits until c has handled every event of
// subjectRounds(subjects, perSubject), then checks that got (guarded by mu:
// subject -> the rounds its handler saw succeed) holds each subject's rounds
// once and in order.
func handledInOrder(t *testing.T, c *consumer.Consumer, mu *sync.Mutex, got map[string][]int, subjects, perSubject int) {
	t.Helper()
	eventually(t, 30*time.Second, "all handled", func() bool { return c.Stats().Handled == uint64(subjects*perSubject) })
	mu.Lock()
	defer mu.Unlock()
	for s := range subjects {
		seqs := got["subj-"+strconv.Itoa(s)]
		if len(seqs) != perSubject {
			t.Fatalf("subject %d: %d events", s, len(seqs))
		}
		for i, v := range seqs {
			if v != i {
				t.Fatalf("subject %d out of order: %v", s, seqs)
			}
		}
	}
}

// trackedTopics is a source of fresh topic names on b; when the test ends
// it drops each name it gave and its ".dlq", then closes b.
func trackedTopics(t testing.TB, b interface{ Close(context.Context) error }, drop func(ctx context.Context, topic string)) func() string {
	var mu sync.Mutex
	var topics []string
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mu.Lock()
		for _, tp := range topics {
			drop(ctx, tp)
		}
		mu.Unlock()
		_ = b.Close(ctx)
	})
	return func() string {
		tp := testenv.Name("ckt")
		mu.Lock()
		topics = append(topics, tp, tp+".dlq")
		mu.Unlock()
		return tp
	}
}

// inboxAndCounters creates, on db, a migrated SQL inbox and a business
// table biz of counters (id, n), both dropped when the test ends.
func inboxAndCounters(t testing.TB, db *sql.DB, d sqlinbox.Dialect) (*sqlinbox.Inbox, string) {
	t.Helper()
	table, biz := testenv.Name("inbox"), testenv.Name("acct")
	in, err := sqlinbox.New(db, d, sqlinbox.Options{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE " + biz + " (id VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, tb := range []string{table, table + "_positions", biz} {
			_, _ = db.Exec("DROP TABLE " + tb)
		}
	})
	return in, biz
}

// bothOrderings runs test, in parallel, unordered and ordered by subject,
// with a fresh broker and topic.
func bothOrderings(t *testing.T, test func(t *testing.T, ordered bool, b *memorybroker.Broker, topic string)) {
	t.Helper()
	t.Parallel()
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprint("ordered=", ordered), func(t *testing.T) {
			t.Parallel()
			test(t, ordered, newBroker(t), testenv.Name("t"))
		})
	}
}
