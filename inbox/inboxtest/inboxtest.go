// Package inboxtest is the conformance suite every inbox.Inbox passes.
// Guarantee: an inbox that passes Exercise processes a key once and then
// reports a duplicate, per consumer; a failed or panicking handler records
// nothing; concurrent duplicates run the handler once and every other call
// ends as a duplicate (any other error fails the suite).
//
// Use: call Exercise from the inbox's tests. With WithTx it also checks that
// the handler's writes and the key commit together or not at all, a failure
// after the handler's write (its error, its panic, a commit that fails)
// leaving neither; with WithExpiry, that a key is forgotten after the TTL and
// not before, and that a reservation holds concurrent duplicates off for the
// lease (or for as long as the handler runs, when there is no lease) and
// then lets one in.
//
// Limits: without WithTx the atomicity of the handler's writes with the key
// is not checked; without WithExpiry, expiry is not.
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

// Tx gives the suite access to the handler's transaction of a
// transactional inbox (sqlinbox) and to what it committed.
type Tx struct {
	// Write makes one write named id in the handler's transaction, which
	// the inbox put in ctx (e.g. an INSERT through sqlinbox.Tx(ctx)).
	Write func(ctx context.Context, id string) error
	// Written reports whether the write named id is committed, reading
	// outside any transaction.
	Written func(t *testing.T, id string) bool
}

// Option adds checks to Exercise.
type Option func(*options)

type options struct {
	newTx            func(t *testing.T) (inbox.Inbox, Tx)
	newExpiring      func(t *testing.T) inbox.Inbox
	lease, ttl, hold time.Duration
}

// WithTx checks that the handler's writes and the inbox key commit together:
// newInbox returns an inbox (keys no other test sees) and its Tx.
func WithTx(newInbox func(t *testing.T) (inbox.Inbox, Tx)) Option {
	return func(o *options) { o.newTx = newInbox }
}

// WithExpiry checks the expiry of keys and reservations: newInbox returns an
// inbox that forgets a processed key after ttl and whose reservation of a
// key lasts lease (0: as long as the handler runs). Keep them short (100ms
// to 1s): the suite waits for them.
func WithExpiry(newInbox func(t *testing.T) inbox.Inbox, lease, ttl time.Duration) Option {
	return func(o *options) { o.newExpiring, o.lease, o.ttl = newInbox, lease, ttl }
}

// Exercise runs the suite. newInbox returns an inbox whose keys no other
// test sees (a fresh table, key prefix or instance).
func Exercise(t *testing.T, newInbox func(t *testing.T) inbox.Inbox, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.newTx != nil {
		t.Run("HandlerWritesCommitWithTheKey", func(t *testing.T) {
			t.Parallel()
			exerciseTx(t, o.newTx)
		})
	}
	if o.newExpiring != nil {
		t.Run("KeyExpiresAfterTTL", func(t *testing.T) {
			t.Parallel()
			exerciseTTL(t, o.newExpiring(t), o.ttl)
		})
		t.Run("ReservationHoldsForTheLease", func(t *testing.T) {
			t.Parallel()
			exerciseLease(t, o.newExpiring(t), o.lease, o.ttl)
		})
	}
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
					// ErrInProgress after 10s means the holder's
					// reservation never ended; anything else is a
					// failure the inbox should have turned into a
					// duplicate (a unique violation, a deadlock).
					t.Errorf("concurrent duplicate: %v, want nil or ErrDuplicate", err)
				}
			}
			if effects.Load() != 1 || ok != 1 || dup != 4 {
				t.Fatalf("effects=%d ok=%d dup=%d, want 1 effect", effects.Load(), ok, dup)
			}
		}
	})
}

func exerciseTx(t *testing.T, newInbox func(t *testing.T) (inbox.Inbox, Tx)) {
	in, tx := newInbox(t)
	ctx := context.Background()
	key := func(id string) inbox.Key { return inbox.Key{Consumer: "c", EventID: id, EventType: "x"} }
	// retry processes key again with a handler that writes and succeeds:
	// it must run (the key was not recorded) and commit.
	retry := func(id string) {
		t.Helper()
		ran := false
		if err := in.Process(ctx, key(id), func(ctx context.Context) error { ran = true; return tx.Write(ctx, id) }); err != nil || !ran {
			t.Fatalf("%s: retry: err=%v ran=%v, want the handler to run and succeed", id, err, ran)
		}
		if !tx.Written(t, id) {
			t.Fatalf("%s: retry succeeded but its write is not committed", id)
		}
		if err := in.Process(ctx, key(id), func(context.Context) error { return nil }); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("%s: after the retry: %v, want ErrDuplicate", id, err)
		}
	}

	// Success: the write and the key, together.
	id := testenv.Name("ok")
	if err := in.Process(ctx, key(id), func(ctx context.Context) error { return tx.Write(ctx, id) }); err != nil {
		t.Fatal(err)
	}
	if !tx.Written(t, id) {
		t.Fatal("the handler's write is not committed after Process returned nil")
	}
	if err := in.Process(ctx, key(id), func(context.Context) error { return nil }); !errors.Is(err, inbox.ErrDuplicate) {
		t.Fatalf("after success: %v, want ErrDuplicate", err)
	}

	// The handler fails after its write: neither the write nor the key.
	id = testenv.Name("fail")
	boom := errors.New("boom after the write")
	err := in.Process(ctx, key(id), func(ctx context.Context) error {
		if err := tx.Write(ctx, id); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failing handler: %v, want boom", err)
	}
	if tx.Written(t, id) {
		t.Fatal("a failed handler's write was committed")
	}
	retry(id)

	// The handler panics after its write.
	id = testenv.Name("panic")
	func() {
		defer func() { _ = recover() }()
		_ = in.Process(ctx, key(id), func(ctx context.Context) error {
			if err := tx.Write(ctx, id); err != nil {
				return err
			}
			panic("after the write")
		})
	}()
	if tx.Written(t, id) {
		t.Fatal("a panicking handler's write was committed")
	}
	retry(id)

	// The handler succeeds but the commit fails (its context ends first).
	id = testenv.Name("commit")
	cctx, cancel := context.WithCancel(ctx)
	err = in.Process(cctx, key(id), func(ctx context.Context) error {
		if err := tx.Write(ctx, id); err != nil {
			return err
		}
		cancel()
		return nil
	})
	cancel()
	if err == nil || errors.Is(err, inbox.ErrDuplicate) {
		t.Fatalf("Process with its context cancelled before the commit: %v, want an error", err)
	}
	if tx.Written(t, id) {
		t.Fatal("the write was committed although Process failed")
	}
	retry(id)
}

func exerciseTTL(t *testing.T, in inbox.Inbox, ttl time.Duration) {
	ctx := context.Background()
	key := inbox.Key{Consumer: "c", EventID: testenv.Name("ttl")}
	noop := func(context.Context) error { return nil }
	if err := in.Process(ctx, key, noop); err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	if err := in.Process(ctx, key, noop); !errors.Is(err, inbox.ErrDuplicate) {
		t.Fatalf("within the TTL: %v, want ErrDuplicate", err)
	}
	deadline := done.Add(ttl + 5*time.Second)
	for {
		ran := false
		err := in.Process(ctx, key, func(context.Context) error { ran = true; return nil })
		at := time.Now()
		if ran {
			if err != nil {
				t.Fatalf("after the TTL: %v", err)
			}
			// The key was written at or before done: it may not be
			// forgotten sooner than ttl after that.
			if early := at.Sub(done); early < ttl-ttl/10 {
				t.Fatalf("key forgotten %s after it was processed, before the TTL of %s", early, ttl)
			}
			return
		}
		if !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("before the TTL ran out: %v, want ErrDuplicate", err)
		}
		if at.After(deadline) {
			t.Fatalf("key still a duplicate %s after its TTL of %s", at.Sub(done), ttl)
		}
		time.Sleep(ttl / 20)
	}
}

func exerciseLease(t *testing.T, in inbox.Inbox, lease, ttl time.Duration) {
	ctx := context.Background()
	key := inbox.Key{Consumer: "c", EventID: testenv.Name("lease")}
	inside := make(chan struct{})
	release := make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- in.Process(ctx, key, func(context.Context) error {
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	start := time.Now()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	step := max(lease, ttl) / 20
	if lease == 0 {
		// Held for as long as the handler runs, however long that is.
		until := start.Add(2*ttl + 100*time.Millisecond)
		for time.Now().Before(until) {
			if err := in.Process(ctx, key, func(context.Context) error { return errors.New("ran beside the holder") }); !errors.Is(err, inbox.ErrInProgress) {
				t.Fatalf("while the holder runs: %v, want ErrInProgress", err)
			}
			time.Sleep(step)
		}
		close(release)
		if err := <-held; err != nil {
			t.Fatal(err)
		}
		if err := in.Process(ctx, key, func(context.Context) error { return nil }); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("after the holder succeeded: %v, want ErrDuplicate", err)
		}
		return
	}
	deadline := start.Add(lease + 5*time.Second)
	for {
		ran := false
		err := in.Process(ctx, key, func(context.Context) error { ran = true; return nil })
		at := time.Now()
		if ran {
			if err != nil {
				t.Fatalf("after the lease: %v", err)
			}
			if early := at.Sub(start); early < lease-lease/10 {
				t.Fatalf("a duplicate got in %s into a lease of %s", early, lease)
			}
			break
		}
		if !errors.Is(err, inbox.ErrInProgress) {
			t.Fatalf("during the lease: %v, want ErrInProgress", err)
		}
		if at.After(deadline) {
			t.Fatalf("reservation still held %s into a lease of %s", at.Sub(start), lease)
		}
		time.Sleep(step)
	}
	// The documented window: the holder outlived its lease, the duplicate
	// ran; the holder still finishes without error.
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("holder after its lease: %v", err)
	}
}
