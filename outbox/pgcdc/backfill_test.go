package pgcdc_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// TestBackfillRowsBeforeSlot: rows committed before the slot exists are not
// in its stream; the relay reads them from the table, before the streamed
// rows, so every subject's events arrive once each and in commit order.
func TestBackfillRowsBeforeSlot(t *testing.T) {
	table := tableName()
	sent := map[string][]string{}
	add := func(ctx context.Context, pool *pgxpool.Pool, from, to int) {
		st, err := pgoutbox.New(pool, pgoutbox.Config{Table: table})
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i < to; i += 5 {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var evs []eventkit.Event
			for j := i; j < i+5; j++ {
				e := ev(fmt.Sprint("s", j%3), j)
				evs = append(evs, e)
				sent[e.Subject] = append(sent[e.Subject], e.ID)
			}
			if err := st.Add(ctx, tx, "bf", evs...); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	e := newEnvOn(t, testenv.Postgres.URL(t), table, func(pool *pgxpool.Pool) { add(ctx, pool, 0, 60) })
	rec := &outboxtest.Recorder{}
	r := e.relay(rec, func(c *pgcdc.Config) { c.BatchSize = 7 })
	start(t, r)
	testenv.WaitFor(t, 10*time.Second, "streaming", func() bool { return r.Stats().Streaming })
	add(ctx, e.pool, 60, 120)
	testenv.WaitFor(t, 20*time.Second, "120 events", func() bool { return distinct(rec.Events()) == 120 })
	testenv.WaitFor(t, 10*time.Second, "empty outbox", func() bool { return e.rows() == 0 })
	_, dups := checkStream(t, rec, sent)
	if dups != 0 {
		t.Fatalf("%d duplicates without a fault", dups)
	}
	if b := r.Stats().Backfilled; b != 60 {
		t.Fatalf("Backfilled %d, want the 60 rows committed before the slot", b)
	}
}

// TestBackfillRequeued: a row parked under CDC and requeued (Store.Requeue,
// as `eventkit outbox requeue` does) is published by the running relay.
func TestBackfillRequeued(t *testing.T) {
	e := newEnv(t)
	bad := ev("s", 1)
	var reject atomic.Bool
	reject.Store(true)
	rec := &outboxtest.Recorder{}
	rec.SetFail(func(topic string, events []eventkit.Event) error {
		for i, x := range events {
			if x.ID == bad.ID && reject.Load() {
				return &broker.PublishError{Topic: topic, Failed: []broker.FailedEvent{{Index: i, ID: x.ID, Err: eventkit.Permanent(errors.New("not now"))}}}
			}
		}
		return nil
	})
	r := e.relay(rec, func(c *pgcdc.Config) { c.BackfillInterval = 100 * time.Millisecond; c.MaxAttempts = 1 })
	start(t, r)
	e.insert("t", bad, ev("s", 2))
	testenv.WaitFor(t, 10*time.Second, "the row parked", func() bool {
		st, err := e.store.Status(context.Background())
		return err == nil && st.ParkedCount == 1 && st.Backlog == 0
	})
	reject.Store(false)
	var s outbox.Store = e.store
	if n, err := s.Requeue(context.Background(), []int64{parkedSeq(t, e)}); err != nil || n != 1 {
		t.Fatalf("requeue: %d, %v", n, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the requeued row published", func() bool {
		for _, p := range rec.Events() {
			if p.Event.ID == bad.ID {
				return true
			}
		}
		return false
	})
	testenv.WaitFor(t, 10*time.Second, "empty outbox", func() bool { return e.rows() == 0 })
}

func parkedSeq(t *testing.T, e *env) int64 {
	st, err := e.store.Status(context.Background())
	if err != nil || len(st.Parked) != 1 {
		t.Fatalf("status: %+v, %v", st, err)
	}
	return st.Parked[0].Seq
}

// TestBackfillOtherSubjectsFlowPastRetry: a backlog of four chunks is
// backfilled; the head of subject s1 (in the first chunk) is rejected on
// every attempt and retried (it is never parked here), yet the s2 events of
// the later chunks are delivered meanwhile, in order, and no s1 event
// overtakes its head.
func TestBackfillOtherSubjectsFlowPastRetry(t *testing.T) {
	e := newEnv(t)
	bad := ev("s1", 0)
	evs := []eventkit.Event{bad}
	sent := map[string][]string{}
	for i := 1; i <= 10; i++ { // 11 rows: 4 chunks of 3, all held at once (maxHeldChunks)
		x := ev(fmt.Sprint("s", 1+i%2), i)
		evs = append(evs, x)
		sent[x.Subject] = append(sent[x.Subject], x.ID)
	}
	for _, x := range evs {
		e.insert("t", x) // one transaction each, all before the relay leads
	}
	rec := &outboxtest.Recorder{}
	rec.SetFail(func(topic string, events []eventkit.Event) error {
		for i, x := range events {
			if x.ID == bad.ID {
				return &broker.PublishError{Topic: topic, Failed: []broker.FailedEvent{{Index: i, ID: x.ID, Err: eventkit.Permanent(errors.New("too spicy"))}}}
			}
		}
		return nil
	})
	r := e.relay(rec, func(c *pgcdc.Config) {
		c.BatchSize = 3
		c.MaxAttempts = 1 << 20 // retried, never parked during the test
		c.RetryDelay = 20 * time.Millisecond
	})
	start(t, r)
	testenv.WaitFor(t, 20*time.Second, "every s2 event delivered while s1's head is retried", func() bool {
		n := 0
		for _, p := range rec.Events() {
			if p.Event.Subject == "s2" {
				n++
			}
		}
		return n == len(sent["s2"])
	})
	var got []string
	for _, p := range rec.Events() {
		switch p.Event.Subject {
		case "s1":
			t.Fatalf("s1 event %s published while the s1 head is still retried", p.Event.ID)
		case "s2":
			got = append(got, p.Event.ID)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(sent["s2"]) {
		t.Fatalf("s2 order:\n got %v\nwant %v", got, sent["s2"])
	}
	if st := r.Stats(); st.Parked != 0 || st.Backfilled < int64(len(evs)) {
		t.Fatalf("stats: %+v", st)
	}
}
