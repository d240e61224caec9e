package sqlinbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/eventkit/eventkit/inbox"
)

func sequencer(t *testing.T, e *env) inbox.Sequencer {
	t.Helper()
	s, ok := e.in.(inbox.Sequencer)
	if !ok {
		t.Fatalf("%T is not an inbox.Sequencer", e.in)
	}
	return s
}

// ProcessInOrder applies a subject's events in sequence order only: early
// events wait, applied ones are duplicates, a failure rolls back and is
// counted on the head, a parked subject holds its later events until Skip
// or Unpark.
func TestProcessInOrder(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := sequencer(t, e)
		biz := businessTable(t, e)
		pos := func(subject string, seq int64) inbox.Position {
			return inbox.Position{Consumer: "g", Topic: "orders", Subject: subject, Seq: seq}
		}
		var sawFailures int
		apply := func(p inbox.Position) func(ctx context.Context, failures int) error {
			return func(ctx context.Context, failures int) error {
				sawFailures = failures
				_, err := e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ("+e.ph(1)+", "+e.ph(2)+", 0)",
					fmt.Sprintf("%s-%d", p.Subject, p.Seq), p.Seq)
				return err
			}
		}
		count := func() int { return e.queryInt(t, "SELECT count(*) FROM "+biz) }
		var early *inbox.EarlyError
		if err := s.ProcessInOrder(ctx, pos("a", 2), apply(pos("a", 2))); !errors.As(err, &early) || early.Last != 0 || !errors.Is(err, inbox.ErrEarly) {
			t.Fatalf("seq 2 first: %v, want an EarlyError with Last 0", err)
		}
		if err := s.ProcessInOrder(ctx, pos("a", 1), apply(pos("a", 1))); err != nil {
			t.Fatal(err)
		}
		if err := s.ProcessInOrder(ctx, pos("a", 1), apply(pos("a", 1))); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("seq 1 again: %v, want ErrDuplicate", err)
		}
		// The head fails twice: rolled back, counted.
		boom := errors.New("boom")
		for want := 1; want <= 2; want++ {
			err := s.ProcessInOrder(ctx, pos("a", 2), func(ctx context.Context, failures int) error {
				_ = apply(pos("a", 2))(ctx, failures)
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("failing head: %v", err)
			}
			if n, err := s.RecordFailure(ctx, pos("a", 2), "boom"); err != nil || n != want {
				t.Fatalf("RecordFailure: %d %v, want %d", n, err, want)
			}
		}
		if n, err := s.RecordFailure(ctx, pos("a", 3), "not the head"); err != nil || n != 0 {
			t.Fatalf("RecordFailure of a non-head: %d %v, want 0", n, err)
		}
		if got := count(); got != 1 {
			t.Fatalf("%d rows after the failed head, want 1 (its writes rolled back)", got)
		}
		// Parked at 2: 2 is ErrParked, 3 waits with Parked = 2, other
		// subjects go on.
		if err := s.Park(ctx, pos("a", 2), "max attempts"); err != nil {
			t.Fatal(err)
		}
		if err := s.ProcessInOrder(ctx, pos("a", 2), apply(pos("a", 2))); !errors.Is(err, inbox.ErrParked) {
			t.Fatalf("parked head: %v, want ErrParked", err)
		}
		if err := s.ProcessInOrder(ctx, pos("a", 3), apply(pos("a", 3))); !errors.As(err, &early) || early.Parked != 2 {
			t.Fatalf("behind the parked head: %v, want an EarlyError with Parked 2", err)
		}
		if err := s.ProcessInOrder(ctx, pos("b", 1), apply(pos("b", 1))); err != nil {
			t.Fatalf("another subject: %v", err)
		}
		// Skip 2: 3 runs; 2 is now a duplicate.
		if err := s.Skip(ctx, pos("a", 3)); !errors.Is(err, inbox.ErrNotParked) {
			t.Fatalf("Skip at the wrong seq: %v, want ErrNotParked", err)
		}
		if err := s.Skip(ctx, pos("a", 2)); err != nil {
			t.Fatal(err)
		}
		if err := s.ProcessInOrder(ctx, pos("a", 2), apply(pos("a", 2))); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("skipped head: %v, want ErrDuplicate", err)
		}
		if err := s.ProcessInOrder(ctx, pos("a", 3), apply(pos("a", 3))); err != nil {
			t.Fatal(err)
		}
		// Park at 4, Unpark: 4 runs again as the head with no failures.
		if _, err := s.RecordFailure(ctx, pos("a", 4), "x"); err != nil {
			t.Fatal(err)
		}
		if err := s.Park(ctx, pos("a", 4), "permanent"); err != nil {
			t.Fatal(err)
		}
		if err := s.Unpark(ctx, pos("a", 4)); err != nil {
			t.Fatal(err)
		}
		if err := s.Unpark(ctx, pos("a", 4)); !errors.Is(err, inbox.ErrNotParked) {
			t.Fatalf("second Unpark: %v, want ErrNotParked", err)
		}
		sawFailures = -1
		if err := s.ProcessInOrder(ctx, pos("a", 4), apply(pos("a", 4))); err != nil || sawFailures != 0 {
			t.Fatalf("replayed head: %v (failures %d), want applied with 0 failures", err, sawFailures)
		}
		if got := count(); got != 4 {
			t.Fatalf("%d rows, want 4 (a1, b1, a3, a4)", got)
		}
		if err := s.ProcessInOrder(ctx, inbox.Position{Consumer: "g", Topic: "t", Subject: "a"}, apply(pos("a", 0))); err == nil {
			t.Fatal("seq 0 accepted")
		}
	})
}

// A subject whose very first event fails: the failure is counted and the
// subject can be parked, although the handler's rolled-back transaction
// took the position row it created with it (RecordFailure returned 0,
// "no longer the head", and the consumer retried in a hot loop forever).
func TestFirstEventFails(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := sequencer(t, e)
		p := inbox.Position{Consumer: "g", Topic: "orders", Subject: "first", Seq: 1}
		boom := errors.New("boom")
		for want := 1; want <= 2; want++ {
			if err := s.ProcessInOrder(ctx, p, func(context.Context, int) error { return boom }); !errors.Is(err, boom) {
				t.Fatalf("failing first event: %v", err)
			}
			if n, err := s.RecordFailure(ctx, p, "boom"); err != nil || n != want {
				t.Fatalf("RecordFailure of the first event: %d %v, want %d", n, err, want)
			}
		}
		if err := s.Park(ctx, p, "max attempts"); err != nil {
			t.Fatal(err)
		}
		if err := s.ProcessInOrder(ctx, p, func(context.Context, int) error { return nil }); !errors.Is(err, inbox.ErrParked) {
			t.Fatalf("parked first event: %v, want ErrParked", err)
		}
		if err := s.Skip(ctx, p); err != nil {
			t.Fatal(err)
		}
		next := p
		next.Seq = 2
		if err := s.ProcessInOrder(ctx, next, func(context.Context, int) error { return nil }); err != nil {
			t.Fatalf("after the skipped first event: %v", err)
		}
	})
}

// Eight workers take shuffled copies (two of each) of 4 subjects' events,
// putting early ones back: every subject's events are applied exactly
// once each, in sequence order (the handler's compare-and-swap on the
// business row would fail otherwise).
func TestProcessInOrderConcurrent(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := sequencer(t, e)
		biz := businessTable(t, e)
		const subjects, per = 4, 25
		var work []inbox.Position
		for k := range subjects {
			subj := fmt.Sprint("s", k)
			err := e.in.Process(ctx, inbox.Key{Consumer: "setup", EventID: subj}, func(ctx context.Context) error {
				_, err := e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ("+e.ph(1)+", 0, 0)", subj)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= per; i++ {
				p := inbox.Position{Consumer: "g", Topic: "t", Subject: subj, Seq: int64(i)}
				work = append(work, p, p)
			}
		}
		rand.Shuffle(len(work), func(i, j int) { work[i], work[j] = work[j], work[i] })
		queue := make(chan inbox.Position, len(work))
		for _, p := range work {
			queue <- p
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var violations, applied, dups, errs int
		pending := len(work)
		for range 8 {
			wg.Go(func() {
				for p := range queue {
					err := s.ProcessInOrder(ctx, p, func(ctx context.Context, _ int) error {
						n, err := e.exec(ctx, "UPDATE "+biz+" SET n = n + 1 WHERE id = "+e.ph(1)+" AND n = "+e.ph(2), p.Subject, p.Seq-1)
						if err == nil && n != 1 {
							mu.Lock()
							violations++
							mu.Unlock()
						}
						return err
					})
					mu.Lock()
					switch {
					case err == nil:
						applied++
					case errors.Is(err, inbox.ErrDuplicate):
						dups++
					case errors.Is(err, inbox.ErrEarly):
						mu.Unlock()
						queue <- p
						continue
					default:
						t.Errorf("%s: %v", p, err)
						errs++
						if errs > 20 {
							mu.Unlock()
							return
						}
						mu.Unlock()
						queue <- p
						continue
					}
					pending--
					if pending == 0 {
						close(queue)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if violations != 0 || applied != subjects*per || dups != subjects*per {
			t.Fatalf("violations %d, applied %d, duplicates %d; want 0, %d, %d", violations, applied, dups, subjects*per, subjects*per)
		}
		for k := range subjects {
			if n := e.queryInt(t, "SELECT n FROM "+biz+" WHERE id = "+e.ph(1), fmt.Sprint("s", k)); n != per {
				t.Fatalf("subject s%d: n = %d, want %d", k, n, per)
			}
		}
	})
}
