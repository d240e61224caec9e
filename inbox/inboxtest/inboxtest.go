// Package inboxtest is the conformance suite every inbox.Inbox passes.
package inboxtest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// Exercise runs the suite. newInbox returns an inbox whose keys no other
// test sees (a fresh table, key prefix or instance).
func Exercise(t *testing.T, newInbox func(t *testing.T) inbox.Inbox) {
	t.Run("OnceThenDuplicate", func(t *testing.T) {
		t.Parallel()
		in := newInbox(t)
		ctx := context.Background()
		key := inbox.Key{Consumer: "billing", EventID: testenv.Name("ev"), EventType: "order.created"}
		calls := 0
		fn := func(context.Context) error { calls++; return nil }
		if err := in.Process(ctx, key, fn); err != nil {
			t.Fatal(err)
		}
		if err := in.Process(ctx, key, fn); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("second Process: %v, want ErrDuplicate", err)
		}
		other := key
		other.Consumer = "shipping"
		if err := in.Process(ctx, other, fn); err != nil {
			t.Fatalf("other consumer: %v", err)
		}
		if calls != 2 {
			t.Fatalf("%d calls, want 2", calls)
		}
	})
	t.Run("FailureRecordsNothing", func(t *testing.T) {
		t.Parallel()
		in := newInbox(t)
		ctx := context.Background()
		key := inbox.Key{Consumer: "c", EventID: testenv.Name("ev")}
		boom := errors.New("boom")
		if err := in.Process(ctx, key, func(context.Context) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("got %v, want boom", err)
		}
		func() {
			defer func() { _ = recover() }()
			_ = in.Process(ctx, key, func(context.Context) error { panic("handler panic") })
		}()
		ran := false
		if err := in.Process(ctx, key, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
			t.Fatalf("retry after failure: err=%v ran=%v", err, ran)
		}
	})
	t.Run("ConcurrentDuplicatesRunOnce", func(t *testing.T) {
		t.Parallel()
		in := newInbox(t)
		ctx := context.Background()
		for range 3 {
			key := inbox.Key{Consumer: "c", EventID: testenv.Name("ev")}
			var effects atomic.Int32
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make(chan error, 5)
			for range 5 {
				wg.Go(func() {
					<-start
					deadline := time.Now().Add(10 * time.Second)
					for {
						err := in.Process(ctx, key, func(context.Context) error {
							time.Sleep(20 * time.Millisecond)
							effects.Add(1)
							return nil
						})
						// In progress elsewhere: come back later, as the
						// consumer runtime does.
						if errors.Is(err, inbox.ErrInProgress) && time.Now().Before(deadline) {
							time.Sleep(5 * time.Millisecond)
							continue
						}
						errs <- err
						return
					}
				})
			}
			close(start)
			wg.Wait()
			close(errs)
			ok, dup := 0, 0
			for err := range errs {
				switch {
				case err == nil:
					ok++
				case errors.Is(err, inbox.ErrDuplicate):
					dup++
				default:
					t.Logf("process: %v (retryable)", err)
				}
			}
			if effects.Load() != 1 || ok != 1 {
				t.Fatalf("effects=%d ok=%d dup=%d, want 1 effect", effects.Load(), ok, dup)
			}
		}
	})
}
