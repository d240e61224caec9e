package sqlinbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// One transaction, several events: a key already recorded is a duplicate,
// a key repeated within the batch is a duplicate of its first copy, a
// failing handler loses only its own writes and key, the rest commits once.
func TestProcessBatch(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		b, ok := e.in.(inbox.Batcher)
		if !ok {
			t.Fatalf("%T is not an inbox.Batcher", e.in)
		}
		ctx := context.Background()
		biz := businessTable(t, e)
		key := func(id string) inbox.Key { return inbox.Key{Consumer: "c", EventID: id, EventType: "t"} }
		write := func(ctx context.Context, id string) error {
			_, err := e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ("+e.ph(1)+", 1, 1)", id)
			return err
		}
		if err := e.in.Process(ctx, key("old"), func(ctx context.Context) error { return write(ctx, "old") }); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		keys := []inbox.Key{key("a"), key("old"), key("fail"), key("a"), key("sqlerr"), key("b")}
		var called []string
		results, err := b.ProcessBatch(ctx, keys, func(ctx context.Context, i int) error {
			id := keys[i].EventID
			called = append(called, id)
			if err := write(ctx, id); err != nil {
				return err
			}
			switch id {
			case "fail":
				return boom
			case "sqlerr": // a failing statement after a write
				return write(ctx, "a")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if e.dialect == sqlinbox.Postgres {
			// No savepoints: the batch stops at the failure, rolls back,
			// runs a again alone and commits it; the rest are not run.
			if fmt.Sprint(called) != "[a fail a]" {
				t.Fatalf("handler called for %v, want a, fail, a", called)
			}
			if results[0] != nil || !errors.Is(results[1], inbox.ErrDuplicate) || !errors.Is(results[2], boom) ||
				!errors.Is(results[3], inbox.ErrNotRun) || !errors.Is(results[4], inbox.ErrNotRun) || !errors.Is(results[5], inbox.ErrNotRun) {
				t.Fatalf("results %v", results)
			}
			keys = []inbox.Key{key("sqlerr"), key("b")}
			results, err = b.ProcessBatch(ctx, keys, func(ctx context.Context, i int) error {
				id := keys[i].EventID
				if err := write(ctx, id); err != nil || id != "sqlerr" {
					return err
				}
				return write(ctx, "a")
			})
			if err != nil || results[0] == nil || !errors.Is(results[1], inbox.ErrNotRun) {
				t.Fatalf("results %v, %v", results, err)
			}
			if results, err = b.ProcessBatch(ctx, keys[1:], func(ctx context.Context, i int) error { return write(ctx, "b") }); err != nil || results[0] != nil {
				t.Fatalf("results %v, %v", results, err)
			}
		} else {
			if got := len(called); got != 4 {
				t.Fatalf("handler called for %v, want a, fail, sqlerr, b", called)
			}
			if results[0] != nil || !errors.Is(results[1], inbox.ErrDuplicate) || !errors.Is(results[2], boom) ||
				!errors.Is(results[3], inbox.ErrDuplicate) || results[4] == nil || results[5] != nil {
				t.Fatalf("results %v", results)
			}
		}
		for id, want := range map[string]int{"old": 1, "a": 1, "b": 1, "fail": 0, "sqlerr": 0} {
			if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz+" WHERE id = "+e.ph(1), id); n != want {
				t.Fatalf("%s: %d rows, want %d", id, n, want)
			}
		}
		// The failed ones left no key: they run on their retry, the others
		// are duplicates now.
		keys = []inbox.Key{key("a"), key("fail"), key("sqlerr")}
		results, err = b.ProcessBatch(ctx, keys, func(ctx context.Context, i int) error { return write(ctx, keys[i].EventID) })
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(results[0], inbox.ErrDuplicate) || results[1] != nil || results[2] != nil {
			t.Fatalf("retry results %v", results)
		}
		if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz); n != 5 {
			t.Fatalf("%d rows, want 5", n)
		}
		// The first copy of a key fails, the second copy in the same batch
		// takes over: its effect and the key commit, once.
		keys = []inbox.Key{key("twice"), key("twice"), key("twice")}
		calls := 0
		results, err = b.ProcessBatch(ctx, keys, func(ctx context.Context, i int) error {
			calls++
			if err := write(ctx, "twice"); err != nil {
				return err
			}
			if calls == 1 {
				return boom
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if e.dialect == sqlinbox.Postgres {
			// The batch stops at the failed first copy: the others are
			// not run, and the next batch records the key.
			if calls != 1 || !errors.Is(results[0], boom) || !errors.Is(results[1], inbox.ErrNotRun) || !errors.Is(results[2], inbox.ErrNotRun) {
				t.Fatalf("calls=%d results %v", calls, results)
			}
			results, err = b.ProcessBatch(ctx, keys[1:], func(ctx context.Context, i int) error { return write(ctx, "twice") })
			if err != nil || results[0] != nil || !errors.Is(results[1], inbox.ErrDuplicate) {
				t.Fatalf("results %v, %v", results, err)
			}
		} else if calls != 2 || !errors.Is(results[0], boom) || results[1] != nil || !errors.Is(results[2], inbox.ErrDuplicate) {
			t.Fatalf("calls=%d results %v", calls, results)
		}
		if err := e.in.Process(ctx, key("twice"), func(ctx context.Context) error { return nil }); !errors.Is(err, inbox.ErrDuplicate) {
			t.Fatalf("key not recorded: %v", err)
		}
		if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz+" WHERE id = 'twice'"); n != 1 {
			t.Fatalf("%d rows for twice, want 1", n)
		}
	})
}

// A batch whose transaction cannot commit records nothing: the context ends
// before the commit.
func TestProcessBatchCommitFailure(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		b := e.in.(inbox.Batcher)
		biz := businessTable(t, e)
		ctx, cancel := context.WithCancel(context.Background())
		keys := []inbox.Key{{Consumer: "c", EventID: "x"}, {Consumer: "c", EventID: "y"}}
		_, err := b.ProcessBatch(ctx, keys, func(ctx context.Context, i int) error {
			_, err := e.exec(ctx, "INSERT INTO "+biz+" (id, n, version) VALUES ("+e.ph(1)+", 1, 1)", keys[i].EventID)
			if i == len(keys)-1 {
				cancel() // dies right before the commit
			}
			return err
		})
		if err == nil {
			t.Fatal("ProcessBatch committed on a cancelled context")
		}
		if n := e.queryInt(t, "SELECT COUNT(*) FROM "+biz); n != 0 {
			t.Fatalf("%d rows survived the failed batch", n)
		}
		// Nothing recorded: the redelivery processes both.
		calls := 0
		results, err := b.ProcessBatch(context.Background(), keys, func(ctx context.Context, i int) error { calls++; return nil })
		if err != nil || calls != 2 || results[0] != nil || results[1] != nil {
			t.Fatalf("redelivery: %v %v calls=%d", results, err, calls)
		}
	})
}
