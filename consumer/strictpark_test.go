package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// StrictOrder parks a subject behind its dead-lettered head: the subject's
// later events wait while other subjects flow; skipping the dead letter
// resumes the subject after it, replaying it resumes the subject with it,
// in order both times.
func TestStrictOrderParksAndResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	db := openDB(t, "sqlite", "file:"+filepath.Join(t.TempDir(), "park.db")+"?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)")
	in, err := sqlinbox.New(db, sqlinbox.SQLite, sqlinbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dls, err := sqldeadletter.New(db, sqlinbox.SQLite, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dls.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE biz (id TEXT PRIMARY KEY, n INTEGER NOT NULL, last INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"p", "q", "r"} {
		if _, err := db.Exec("INSERT INTO biz VALUES (?, 0, 0)", s); err != nil {
			t.Fatal(err)
		}
	}
	topic := "orders"
	subs, err := deadletter.Collect(ctx, b, dls, "", topic+".dlq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range subs {
			_ = s.Close(context.Background())
		}
	})

	var mu sync.Mutex
	poison := map[string]bool{"p2": true, "r2": true}
	var violations atomic.Int64
	c := newConsumer(t, b, consumer.Config{Concurrency: 4, Inbox: in, StrictOrder: true, AckWait: 2 * time.Second,
		Retry: consumer.RetryPolicy{MaxAttempts: 3, Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond}})
	_ = c.HandleFunc(topic, "g", func(ctx context.Context, ev eventkit.Event) error {
		seq, _, _ := eventkit.SubjectSeq(ev)
		mu.Lock()
		bad := poison[fmt.Sprint(ev.Subject, seq)]
		mu.Unlock()
		if bad {
			return fmt.Errorf("poison %s#%d", ev.Subject, seq)
		}
		tx, err := sqlinbox.Tx(ctx)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, "UPDATE biz SET n = n + 1, last = ? WHERE id = ? AND last < ?", seq, ev.Subject, seq)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			violations.Add(1)
		}
		return nil
	})
	r := start(t, c)
	evs := map[string]eventkit.Event{}
	var all []eventkit.Event
	for i := 1; i <= 4; i++ {
		for _, s := range []string{"p", "q", "r"} {
			e := ev("x", s, "{}", eventkit.WithExtension(eventkit.SubjectSeqExtension, strconv.Itoa(i)))
			evs[fmt.Sprint(s, i)] = e
			all = append(all, e)
		}
	}
	publish(t, b, topic, all...)

	state := func(s string) (n, last int) {
		if err := db.QueryRow("SELECT n, last FROM biz WHERE id = ?", s).Scan(&n, &last); err != nil {
			t.Fatal(err)
		}
		return n, last
	}
	eventually(t, 20*time.Second, "q applied, p and r parked with their dead letters stored", func() bool {
		n, _ := state("q")
		k, _ := dls.Count(ctx, sqldeadletter.Filter{})
		return n == 4 && k == 2 && r.c.Stats().Parked == 2
	})
	// The followers of the parked heads come back and wait.
	eventually(t, 20*time.Second, "followers of parked subjects delivered early", func() bool { return r.c.Stats().Early >= 4 })
	for _, s := range []string{"p", "r"} {
		if n, last := state(s); n != 1 || last != 1 {
			t.Fatalf("parked subject %s: n %d, last %d; want 1, 1 (held behind its dead letter)", s, n, last)
		}
	}
	list, err := dls.List(ctx, sqldeadletter.Filter{EventID: evs["p2"].ID})
	if err != nil || len(list) != 1 {
		t.Fatalf("dead letter of p2: %v %v", list, err)
	}
	if pos, ok := list[0].Parked(); !ok || pos.Seq != 2 || pos.Subject != "p" || pos.Consumer != "g" || pos.Topic != topic {
		t.Fatalf("Parked() = %v, %v", pos, ok)
	}

	// Skip p2: p3 and p4 run.
	if n, err := dls.Skip(ctx, in, sqldeadletter.Filter{EventID: evs["p2"].ID}); err != nil || n != 1 {
		t.Fatalf("Skip: %d %v", n, err)
	}
	eventually(t, 20*time.Second, "p resumed after the skipped event", func() bool { n, last := state("p"); return n == 3 && last == 4 })

	// Fix r2's handler, unpark and replay it: r2, r3, r4 run in order.
	mu.Lock()
	delete(poison, "r2")
	mu.Unlock()
	f := sqldeadletter.Filter{EventID: evs["r2"].ID}
	if n, err := dls.Unpark(ctx, in, f); err != nil || n != 1 {
		t.Fatalf("Unpark: %d %v", n, err)
	}
	if res, err := dls.Replay(ctx, b, f); err != nil || res.Replayed != 1 {
		t.Fatalf("Replay: %+v %v", res, err)
	}
	eventually(t, 20*time.Second, "r resumed with the replayed event", func() bool { n, last := state("r"); return n == 4 && last == 4 })
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d order violations", v)
	}
	// Skipping again is a no-op.
	if n, err := dls.Skip(ctx, in, sqldeadletter.Filter{}); err != nil || n != 0 {
		t.Fatalf("second Skip: %d %v", n, err)
	}
}

// In strict mode an event type without a route, the first event of its
// subject, parks the subject with one dead letter of reason no-route. (The
// failure of a subject's first event was not recorded on PostgreSQL and
// SQLite, so the event was retried in a hot loop and never dead-lettered;
// the strict path also reported no-route as permanent.)
func TestStrictOrderUnroutedTypeReason(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	in := sqliteInbox(t)
	topic := "orders"
	dlq := collect(t, b, topic+".dlq")
	r := consumer.NewRouter(nil)
	r.Route("known", consumer.HandlerFunc(func(context.Context, eventkit.Event) error { return nil }))
	c := newConsumer(t, b, consumer.Config{Concurrency: 4, Inbox: in, StrictOrder: true, Retry: fastRetry(3)})
	_ = c.Handle(topic, "g", r)
	waitReady(t, start(t, c))
	unknown := ev("brand.new", "s", "{}", eventkit.WithExtension(eventkit.SubjectSeqExtension, "1"))
	publish(t, b, topic, unknown)
	info, ok := deadletter.InfoOf(receive(t, dlq, 10*time.Second))
	if !ok || info.EventID != unknown.ID || info.Reason != deadletter.ReasonNoRoute || info.Attempts != 1 {
		t.Fatalf("dead letter %+v, want reason %q after 1 attempt", info, deadletter.ReasonNoRoute)
	}
	eventually(t, 10*time.Second, "subject parked", func() bool { return c.Stats().Parked == 1 })
	if st := c.Stats(); st.Failed != 1 {
		t.Fatalf("stats %+v: want 1 failed attempt", st)
	}
}

// notHeadSeq is a Sequencer whose RecordFailure always answers "no longer
// the head", as a broken store might.
type notHeadSeq struct{ *sqlinbox.Inbox }

func (notHeadSeq) RecordFailure(context.Context, inbox.Position, string) (int, error) { return 0, nil }

// A failing event whose failure the inbox never records (RecordFailure
// keeps answering "not the head") goes back to the broker after 3 tries
// instead of being retried in place for ever.
func TestStrictOrderNotHeadBounded(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	in := sqliteInbox(t)
	var deliveries atomic.Int64
	c := newConsumer(t, counting{b, &deliveries}, consumer.Config{Mode: consumer.Strict(), Inbox: notHeadSeq{in}, Retry: fastRetry(5)})
	_ = c.HandleFunc("orders", "g", func(context.Context, eventkit.Event) error { return errors.New("boom") })
	waitReady(t, start(t, c))
	publish(t, b, "orders", ev("x", "s", "{}", eventkit.WithExtension(eventkit.SubjectSeqExtension, "1")))
	eventually(t, 10*time.Second, "the event redelivered", func() bool { return deliveries.Load() >= 3 })
	if f, d := c.Stats().Failed, uint64(deliveries.Load()); f > 3*d+3 {
		t.Fatalf("%d failed attempts over %d deliveries: retried in place without bound", f, d)
	}
}

// sqliteInbox is a migrated SQL inbox on a SQLite file of the test's own.
func sqliteInbox(t *testing.T) *sqlinbox.Inbox {
	t.Helper()
	db := openDB(t, "sqlite", "file:"+filepath.Join(t.TempDir(), "inbox.db")+"?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)")
	in, err := sqlinbox.New(db, sqlinbox.SQLite, sqlinbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return in
}
