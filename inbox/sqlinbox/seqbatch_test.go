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

func seqBatcher(t *testing.T, e *env) inbox.SequenceBatcher {
	t.Helper()
	s, ok := e.in.(inbox.SequenceBatcher)
	if !ok {
		t.Fatalf("%T is not an inbox.SequenceBatcher", e.in)
	}
	return s
}

// ProcessInOrderBatch applies, in one transaction, what ProcessInOrder
// would apply one by one: a subject's run advances event by event within
// the batch, an event ahead of a gap is early, one applied already (by an
// earlier commit or earlier in the batch) a duplicate, a parked subject
// holds; a failed handler rolls back its writes, the events before it
// commit once (their handlers ran twice) and the ones after it are not
// run.
func TestProcessInOrderBatch(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := seqBatcher(t, e)
		biz := businessTable(t, e)
		pos := func(subject string, seq int64) inbox.Position {
			return inbox.Position{Consumer: "g", Topic: "orders", Subject: subject, Seq: seq}
		}
		calls := map[string]int{}
		var sawFailures map[string]int
		var fail string // "subject#seq" whose handler fails
		boom := errors.New("boom")
		run := func(ps ...inbox.Position) ([]error, error) {
			sawFailures = map[string]int{}
			return s.ProcessInOrderBatch(ctx, ps, func(ctx context.Context, i, failures int) error {
				id := fmt.Sprintf("%s#%d", ps[i].Subject, ps[i].Seq)
				calls[id]++
				sawFailures[id] = failures
				if _, err := e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ("+e.ph(1)+", 0, 0)", id); err != nil {
					return err
				}
				if id == fail {
					return boom
				}
				return nil
			})
		}
		count := func() int { return e.queryInt(t, "SELECT count(*) FROM "+biz) }
		is := func(err, want error) bool {
			if want == nil {
				return err == nil
			}
			return errors.Is(err, want)
		}
		check := func(what string, got []error, want ...error) {
			t.Helper()
			if len(got) != len(want) {
				t.Fatalf("%s: %d results, want %d", what, len(got), len(want))
			}
			for i := range want {
				if !is(got[i], want[i]) {
					t.Fatalf("%s: result %d is %v, want %v (all: %v)", what, i, got[i], want[i], got)
				}
			}
		}

		// a runs 1, 2, 3 within the batch; a's copy of 2 is a duplicate;
		// b starts at 2 (early); c at 1; a5 is early behind the gap at 4.
		res, err := run(pos("a", 1), pos("a", 2), pos("b", 2), pos("a", 2), pos("c", 1), pos("a", 3), pos("a", 5))
		if err != nil {
			t.Fatal(err)
		}
		check("first batch", res, nil, nil, inbox.ErrEarly, inbox.ErrDuplicate, nil, nil, inbox.ErrEarly)
		var early *inbox.EarlyError
		if !errors.As(res[6], &early) || early.Last != 3 || early.Parked != 0 {
			t.Fatalf("a5: %v, want an EarlyError with Last 3 (the batch's own advance)", res[6])
		}
		if got := count(); got != 4 {
			t.Fatalf("%d business rows, want 4 (a1 a2 a3 c1)", got)
		}
		res, err = run(pos("a", 3), pos("a", 4), pos("c", 1))
		if err != nil {
			t.Fatal(err)
		}
		check("second batch", res, inbox.ErrDuplicate, nil, inbox.ErrDuplicate)

		// A failure in the middle: c2's writes are rolled back, a5 and b1
		// before it commit once (their handlers ran twice), c3 and b2 after
		// it are not run.
		fail = "c#2"
		clear(calls)
		res, err = run(pos("a", 5), pos("b", 1), pos("c", 2), pos("c", 3), pos("b", 2))
		if err != nil {
			t.Fatal(err)
		}
		check("failing batch", res, nil, nil, boom, inbox.ErrNotRun, inbox.ErrNotRun)
		if calls["a#5"] != 2 || calls["b#1"] != 2 || calls["c#2"] != 1 || calls["c#3"] != 0 {
			t.Fatalf("handler calls %v, want a5 and b1 twice, c2 once, c3 never", calls)
		}
		if got := count(); got != 7 {
			t.Fatalf("%d business rows, want 7 (c2 rolled back)", got)
		}
		// The failure is the head's: recorded, it is passed to the next
		// try; the event after it in the same batch sees 0.
		if n, err := s.RecordFailure(ctx, pos("c", 2), "boom"); err != nil || n != 1 {
			t.Fatalf("RecordFailure: %d %v, want 1", n, err)
		}
		fail = ""
		res, err = run(pos("c", 2), pos("c", 3), pos("b", 2))
		if err != nil {
			t.Fatal(err)
		}
		check("retried batch", res, nil, nil, nil)
		if sawFailures["c#2"] != 1 || sawFailures["c#3"] != 0 {
			t.Fatalf("failures seen %v, want c#2 1 and c#3 0", sawFailures)
		}

		// A failure of the very first event: nothing commits, nothing runs
		// twice.
		fail = "d#1"
		clear(calls)
		res, err = run(pos("d", 1), pos("d", 2))
		if err != nil {
			t.Fatal(err)
		}
		check("failing first", res, boom, inbox.ErrNotRun)
		if calls["d#1"] != 1 || calls["d#2"] != 0 {
			t.Fatalf("handler calls %v", calls)
		}
		fail = ""

		// Parked: the head is ErrParked, later events wait with Parked set,
		// other subjects go on in the same batch.
		if err := s.Park(ctx, pos("a", 6), "max attempts"); err != nil {
			t.Fatal(err)
		}
		res, err = run(pos("a", 6), pos("a", 7), pos("d", 1))
		if err != nil {
			t.Fatal(err)
		}
		check("parked batch", res, inbox.ErrParked, inbox.ErrEarly, nil)
		if !errors.As(res[1], &early) || early.Parked != 6 {
			t.Fatalf("behind the parked head: %v, want Parked 6", res[1])
		}
		// The positions the batches wrote are the ones ProcessInOrder
		// reads.
		if err := s.ProcessInOrder(ctx, pos("b", 3), func(context.Context, int) error { return nil }); err != nil {
			t.Fatalf("b3 after the batches: %v", err)
		}
		if err := s.ProcessInOrder(ctx, pos("c", 3), func(context.Context, int) error { return nil }); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("c3 after the batches: %v, want ErrDuplicate", err)
		}
		if _, err := s.ProcessInOrderBatch(ctx, []inbox.Position{pos("a", 0)}, func(context.Context, int, int) error { return nil }); err == nil {
			t.Fatal("seq 0 accepted")
		}
	})
}

// Four workers take shuffled copies (two of each) of 6 subjects' events in
// batches of up to 8 that share subjects, putting back what was early or
// not run: every event is applied exactly once, in sequence order (the
// handler's compare-and-swap on the business row fails otherwise), and
// concurrent batches locking the same position rows do not deadlock.
func TestProcessInOrderBatchConcurrent(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := seqBatcher(t, e)
		biz := businessTable(t, e)
		const subjects, per = 6, 20
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
		var mu sync.Mutex
		queue := work
		var violations, applied, dups, errs int
		take := func() []inbox.Position {
			mu.Lock()
			defer mu.Unlock()
			n := min(len(queue), 1+rand.IntN(8))
			b := append([]inbox.Position(nil), queue[:n]...)
			queue = queue[n:]
			return b
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					b := take()
					if len(b) == 0 {
						mu.Lock()
						done := applied == subjects*per && dups == subjects*per || errs > 20
						mu.Unlock()
						if done {
							return
						}
						continue
					}
					res, err := s.ProcessInOrderBatch(ctx, b, func(ctx context.Context, i, _ int) error {
						p := b[i]
						n, err := e.exec(ctx, "UPDATE "+biz+" SET n = n + 1 WHERE id = "+e.ph(1)+" AND n = "+e.ph(2), p.Subject, p.Seq-1)
						if err == nil && n != 1 {
							mu.Lock()
							violations++
							mu.Unlock()
						}
						return err
					})
					mu.Lock()
					if err != nil {
						t.Errorf("batch: %v", err)
						errs++
						queue = append(queue, b...)
						mu.Unlock()
						continue
					}
					for i, r := range res {
						switch {
						case r == nil:
							applied++
						case errors.Is(r, inbox.ErrDuplicate):
							dups++
						case errors.Is(r, inbox.ErrEarly), errors.Is(r, inbox.ErrNotRun):
							queue = append(queue, b[i])
						default:
							t.Errorf("%s: %v", b[i], r)
							errs++
							queue = append(queue, b[i])
						}
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
