package pgcdc_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox/outboxtest"
)

// TestConcurrentWritersLeaveNoRow: 8 writers commit small transactions as
// fast as they can while the CDC relay runs, with no fault at all. Logical
// decoding can hand a transaction over before its rows are visible to other
// sessions; a relay that deletes without checking the rows affected confirms
// the slot past rows it never deleted, and they stay in the outbox for good.
// Every row must be gone at the end, every time.
func TestConcurrentWritersLeaveNoRow(t *testing.T) {
	e := newEnv(t)
	rec := &outboxtest.Recorder{}
	r := e.relay(rec)
	stop := start(t, r)
	const writers, perWriter = 8, 400
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i += 2 {
				tx, err := e.pool.Begin(ctx)
				if err != nil {
					errs <- err
					return
				}
				evs := []eventkit.Event{ev(fmt.Sprint("w", w), i), ev(fmt.Sprint("w", w), i+1)}
				if err := e.store.Add(ctx, tx, "strand", evs...); err != nil {
					_ = tx.Rollback(ctx)
					errs <- err
					return
				}
				if err := tx.Commit(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = writers * perWriter
	testenv.WaitFor(t, 30*time.Second, "all published", func() bool { return distinct(rec.Events()) == total })
	// The slot confirms only what was completed: once it has passed the
	// last commit, every row must be gone.
	end := e.currentLSN()
	testenv.WaitFor(t, 30*time.Second, "slot past the last commit", func() bool { return r.Stats().ConfirmedLSN >= end })
	left := e.rows()
	st := r.Stats()
	stop()
	if left != 0 {
		t.Fatalf("%d of %d rows left in the outbox after the slot moved past them", left, total)
	}
	// Stats counts rows the database completed, not events published.
	if st.Delivered != total {
		t.Fatalf("Stats.Delivered %d, want %d (published %d)", st.Delivered, total, st.Published)
	}
	t.Logf("%d rows completed; %d completions retried for rows not visible yet", st.Delivered, st.Rechecks)
}
