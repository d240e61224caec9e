package pgcdc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

// TestParkedRowNotRepublishedAfterRestart: a leader parks a row of a
// transaction whose other row it cannot deliver (the broker fails it
// transiently), so the slot stays before the transaction; the next leader's
// stream hands the transaction's inserts over again. The parked row must
// not be published or deleted: it stays parked (until requeued), and only
// the other row is delivered. A transaction held open across the restart
// keeps the relay from skipping the slot past the transaction (see
// backfill.go), so the stream really re-sends it.
func TestParkedRowNotRepublishedAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bad, other := ev("p", 1), ev("q", 2)
	recA := &outboxtest.Recorder{}
	recA.SetFail(func(topic string, events []eventkit.Event) error {
		pe := &broker.PublishError{Topic: topic}
		for i, x := range events {
			switch x.ID {
			case bad.ID:
				pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: x.ID, Err: eventkit.Permanent(errors.New("poison"))})
			case other.ID:
				pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: x.ID, Err: errors.New("broker busy")})
			}
		}
		if len(pe.Failed) == 0 {
			return nil
		}
		return pe
	})
	one := func(c *pgcdc.Config) { c.MaxAttempts = 1 }
	a := e.relay(recA, one)
	stopA := start(t, a)
	testenv.WaitFor(t, 20*time.Second, "first relay streaming", func() bool { return a.Stats().Streaming })
	e.insert("t", bad, other)
	after := e.currentLSN()
	testenv.WaitFor(t, 10*time.Second, "row parked, other row failed", func() bool {
		s := a.Stats()
		return s.Parked == 1 && s.PublishErrors >= 1
	})
	stopA()
	if got := e.slotLSN(e.slot); got >= after {
		t.Fatalf("slot at %s, past the transaction (ends before %s): the stream would not send it again", got, after)
	}

	// An open transaction with an xid: the next leader cannot skip.
	hold, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx) //nolint:errcheck
	if _, err := hold.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}

	recB := &outboxtest.Recorder{}
	b := e.relay(recB, one)
	start(t, b)
	// The other row is of the same transaction: once it is delivered and
	// deleted, the transaction has been handled.
	testenv.WaitFor(t, 20*time.Second, "other row delivered", func() bool { return e.rows() == 1 })
	testenv.WaitFor(t, 20*time.Second, "the stream to hand the transaction over again", func() bool { return b.Stats().Transactions >= 1 })
	// Everything the stream then has is handled: its position is confirmed
	// past the transaction.
	testenv.WaitFor(t, 20*time.Second, "position past the transaction", func() bool { return b.Stats().ConfirmedLSN >= after })
	for _, p := range recB.Events() {
		if p.Event.ID == bad.ID {
			t.Fatal("the parked row was published again")
		}
	}
	st, err := e.store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ParkedCount != 1 || len(st.Parked) != 1 || st.Parked[0].ID != bad.ID {
		t.Fatalf("parked: %+v", st.Parked)
	}
	if s := b.Stats(); s.Delivered != 1 || s.Published != 1 {
		t.Fatalf("stats %+v", s)
	}
}
