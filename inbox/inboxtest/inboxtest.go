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
// With WithTx and an inbox.Batcher it checks ProcessBatch the same way: a
// handler failing in the middle of a batch, a duplicate inside it, a
// handler that swallows its failed statement, a context that ends between
// the batch's steps, concurrent batches sharing keys: whatever the results
// say agrees with what is committed, and processing the events that were
// not recorded again records each once.
//
// Limits: without WithTx the atomicity of the handler's writes with the key
// is not checked; without WithExpiry, expiry is not.
package inboxtest

import (
	"context"
	"errors"
	"math/rand/v2"
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
		if in, _ := o.newTx(t); isBatcher(in) {
			t.Run("Batch", func(t *testing.T) {
				t.Parallel()
				exerciseBatch(t, o.newTx)
			})
		}
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
	waitRuns(t, in, key, inbox.ErrDuplicate, done, ttl, ttl/20, "TTL")
}

// waitRuns calls Process on key every step until its function runs: until
// then each call must fail with held (the key's TTL or lease is not over),
// and the function must run no sooner than 90% of d after since (the
// timer's slack) and within d + 5s. what names d in messages.
func waitRuns(t *testing.T, in inbox.Inbox, key inbox.Key, held error, since time.Time, d, step time.Duration, what string) {
	t.Helper()
	ctx := context.Background()
	deadline := since.Add(d + 5*time.Second)
	for {
		ran := false
		err := in.Process(ctx, key, func(context.Context) error { ran = true; return nil })
		at := time.Now()
		if ran {
			if err != nil {
				t.Fatalf("after the %s: %v", what, err)
			}
			if early := at.Sub(since); early < d-d/10 {
				t.Fatalf("ran %s after the key was taken, before the %s of %s", early, what, d)
			}
			return
		}
		if !errors.Is(err, held) {
			t.Fatalf("before the %s ran out: %v, want %v", what, err, held)
		}
		if at.After(deadline) {
			t.Fatalf("key still held %s after its %s of %s", at.Sub(since), what, d)
		}
		time.Sleep(step)
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
	waitRuns(t, in, key, inbox.ErrInProgress, start, lease, step, "lease")
	// The documented window: the holder outlived its lease, the duplicate
	// ran; the holder still finishes without error.
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("holder after its lease: %v", err)
	}
}

func isBatcher(in inbox.Inbox) bool { _, ok := in.(inbox.Batcher); return ok }

// exerciseBatch checks inbox.Batcher against its contract (see the package
// doc).
func exerciseBatch(t *testing.T, newInbox func(t *testing.T) (inbox.Inbox, Tx)) {
	in, tx := newInbox(t)
	b := in.(inbox.Batcher)
	ctx := context.Background()
	key := func(id string) inbox.Key { return inbox.Key{Consumer: "c", EventID: id, EventType: "x"} }
	keysOf := func(ids []string) []inbox.Key {
		keys := make([]inbox.Key, len(ids))
		for i, id := range ids {
			keys[i] = key(id)
		}
		return keys
	}
	committedBefore := map[string]bool{} // ids committed outside the batch under test
	// recorded reports whether id's key is recorded (Process sees a
	// duplicate); if not, Process has now recorded it with id's write.
	recorded := func(t *testing.T, id string) bool {
		t.Helper()
		err := in.Process(ctx, key(id), func(ctx context.Context) error { return tx.Write(ctx, id) })
		if err != nil && !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("%s: Process: %v", id, err)
		}
		return err != nil
	}
	// agree checks that the batch's outcome matches what is committed:
	// a nil result is written and recorded, any other (of a key with no
	// committed copy) neither; then every key ends recorded with its write.
	agree := func(t *testing.T, ids []string, results []error, err error) {
		t.Helper()
		if err == nil && len(results) != len(ids) {
			t.Fatalf("%d results for %d keys", len(results), len(ids))
		}
		ok := map[string]bool{}
		for i, id := range ids {
			if err == nil && results[i] == nil {
				ok[id] = true
			}
		}
		for _, id := range ids {
			if w := tx.Written(t, id); w != ok[id] && !committedBefore[id] {
				t.Fatalf("%s: written=%v but results %v (err %v)", id, w, results, err)
			}
			if r := recorded(t, id); r != (ok[id] || committedBefore[id]) {
				t.Fatalf("%s: key recorded=%v but results %v (err %v)", id, r, results, err)
			}
			if !tx.Written(t, id) {
				t.Fatalf("%s: recorded without its write", id)
			}
		}
	}
	boom := errors.New("boom")

	t.Run("FailureMidBatch", func(t *testing.T) {
		ids := []string{testenv.Name("a"), testenv.Name("b"), testenv.Name("fail"), testenv.Name("c"), testenv.Name("d")}
		calls := map[string]int{}
		results, err := b.ProcessBatch(ctx, keysOf(ids), func(ctx context.Context, i int) error {
			calls[ids[i]]++
			if err := tx.Write(ctx, ids[i]); err != nil {
				return err
			}
			if i == 2 {
				return boom
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if results[0] != nil || results[1] != nil || !errors.Is(results[2], boom) {
			t.Fatalf("results %v: want the events before the failure recorded and the failure's own error", results)
		}
		for i := 3; i < len(ids); i++ {
			if results[i] != nil && !errors.Is(results[i], inbox.ErrNotRun) {
				t.Fatalf("results %v: after the failure want nil or ErrNotRun", results)
			}
		}
		if calls[ids[2]] != 1 {
			t.Fatalf("the failed handler ran %d times", calls[ids[2]])
		}
		agree(t, ids, results, err)
	})

	t.Run("DuplicateInsideTheBatch", func(t *testing.T) {
		old, a, f := testenv.Name("old"), testenv.Name("a"), testenv.Name("f")
		if err := in.Process(ctx, key(old), func(ctx context.Context) error { return tx.Write(ctx, old) }); err != nil {
			t.Fatal(err)
		}
		committedBefore[old] = true
		// a twice; f twice, its first copy failing.
		ids := []string{a, old, f, a, f}
		fCalls := 0
		results, err := b.ProcessBatch(ctx, keysOf(ids), func(ctx context.Context, i int) error {
			if ids[i] == old {
				t.Errorf("the handler of a key recorded before ran")
			}
			if ids[i] == f {
				if fCalls++; fCalls == 1 {
					return boom
				}
			}
			return tx.Write(ctx, ids[i])
		})
		if err != nil {
			t.Fatal(err)
		}
		if results[0] != nil || !errors.Is(results[1], inbox.ErrDuplicate) || !errors.Is(results[2], boom) {
			t.Fatalf("results %v", results)
		}
		if r := results[3]; !errors.Is(r, inbox.ErrDuplicate) && !errors.Is(r, inbox.ErrNotRun) {
			t.Fatalf("results %v: a's second copy must be a duplicate (or not run)", results)
		}
		agree(t, []string{a, old, f}, []error{results[0], results[1], results[4]}, err)
	})

	t.Run("SwallowedStatementError", func(t *testing.T) {
		// The second handler writes, then writes a's id again (that
		// write fails) and returns nil: the database may refuse the rest
		// of the transaction (PostgreSQL); whatever the batch reports
		// must be what committed.
		ids := []string{testenv.Name("a"), testenv.Name("swallow"), testenv.Name("c")}
		results, err := b.ProcessBatch(ctx, keysOf(ids), func(ctx context.Context, i int) error {
			if err := tx.Write(ctx, ids[i]); err != nil || i != 1 {
				return err
			}
			_ = tx.Write(ctx, ids[0])
			return nil
		})
		if err == nil && errors.Is(results[1], inbox.ErrDuplicate) {
			t.Fatalf("results %v", results)
		}
		agree(t, ids, results, err)
	})

	t.Run("ContextEndsBetweenSteps", func(t *testing.T) {
		// The context ends in the second handler's call, or, where a
		// failure makes the batch run its first events again, in the
		// first handler's second call: nothing may be recorded twice, and
		// what is reported must be what committed.
		for _, at := range []string{"first-run", "second-run"} {
			ids := []string{testenv.Name("x"), testenv.Name("fail"), testenv.Name("y")}
			cctx, cancel := context.WithCancel(ctx)
			calls := 0
			results, err := b.ProcessBatch(cctx, keysOf(ids), func(ctx context.Context, i int) error {
				if err := tx.Write(ctx, ids[i]); err != nil {
					return err
				}
				if i == 0 {
					if calls++; calls == 2 {
						cancel()
					}
				}
				if i == 1 {
					if at == "first-run" {
						cancel()
						return nil
					}
					return boom
				}
				return nil
			})
			cancel()
			if at == "first-run" && err == nil {
				t.Fatalf("%s: the batch committed on a cancelled context: %v", at, results)
			}
			agree(t, ids, results, err)
		}
	})

	t.Run("ConcurrentBatchesShareKeys", func(t *testing.T) {
		ids := make([]string, 20)
		for i := range ids {
			ids[i] = testenv.Name("k")
		}
		var mu sync.Mutex
		effects := map[string]int{}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				mine := append([]string(nil), ids...)
				if w%2 == 1 { // the other order
					for i, j := 0, len(mine)-1; i < j; i, j = i+1, j-1 {
						mine[i], mine[j] = mine[j], mine[i]
					}
				}
				var lastErr error
				for attempt := 0; len(mine) > 0 && attempt < 20; attempt++ {
					results, err := b.ProcessBatch(ctx, keysOf(mine), func(ctx context.Context, i int) error {
						if err := tx.Write(ctx, mine[i]); err != nil {
							return err
						}
						mu.Lock()
						effects[mine[i]]++
						mu.Unlock()
						return nil
					})
					if err != nil { // a deadlock, say: nothing recorded, again
						lastErr = err
						// Back off as a caller would; without it the
						// opposite orders can deadlock 20 times in a
						// row on a loaded MariaDB.
						time.Sleep(time.Duration(1+rand.IntN(10*(attempt+1))) * time.Millisecond)
						continue
					}
					var again []string
					for i, r := range results {
						if r != nil && !errors.Is(r, inbox.ErrDuplicate) {
							again = append(again, mine[i])
						}
					}
					mine = again
				}
				if len(mine) > 0 {
					t.Errorf("worker %d: %d keys never recorded (last error: %v)", w, len(mine), lastErr)
				}
			})
		}
		wg.Wait()
		for _, id := range ids {
			if !tx.Written(t, id) || !recorded(t, id) {
				t.Fatalf("%s not committed", id)
			}
		}
		_ = effects // handlers may run more than once; the commits are checked above
	})
}
