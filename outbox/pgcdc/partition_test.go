package pgcdc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

// TestPartitionedOutboxRefused: the slot streams the whole table, so a CDC
// relay on a partitioned outbox would publish what the partitions' polling
// relays publish. Run refuses it at start with ErrPartitioned (no retry
// loop, nothing published), and a relay that stood by while the count was
// changed stops with it when it takes the lock, before streaming.
func TestPartitionedOutboxRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.insert("part", ev("s", 1))
	if err := e.store.SetPartitions(ctx, 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.store.SetPartitions(context.Background(), 1) })

	rec := &outboxtest.Recorder{}
	r := e.relay(rec)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := r.Run(rctx)
	if !errors.Is(err, pgcdc.ErrPartitioned) {
		t.Fatalf("Run on a 4-partition outbox: %v, want ErrPartitioned", err)
	}
	if rctx.Err() != nil {
		t.Fatal("Run did not return before its context ended")
	}
	if n := len(rec.Events()); n != 0 || e.rows() != 1 {
		t.Fatalf("published %d events, %d rows left; want 0 and 1", n, e.rows())
	}

	// The lock path: the count changed after Run's start-up check (here the
	// names are resolved by Setup and the source's TryLock is called as the
	// engine calls it).
	lock, err := r.Source().TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	if lock == nil {
		t.Fatal("TryLock: lock not taken")
	}
	select {
	case <-lock.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the lock of a partitioned outbox is not lost at once")
	}
	se, ok := lock.(outbox.SourceError)
	if !ok || !errors.Is(se.Err(), pgcdc.ErrPartitioned) {
		t.Fatalf("lock error: %v, want ErrPartitioned", se)
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Streaming || st.Transactions != 0 {
		t.Fatalf("streamed on a partitioned outbox: %+v", st)
	}
}
