package outboxtest

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/eventkit/eventkit"
)

// testSubjectSeq: Add stamps every event with a subject with the next
// number of its (topic, subject) sequence; numbers are gap-free in commit
// order (a rollback returns them; concurrent writers of one subject never
// share or skip one); events without a subject get none; the caller's
// events are not modified.
func testSubjectSeq(t *testing.T, h Harness) {
	ctx := ctxT(t)
	a1, b1, a2, none := Event("A", 1), Event("B", 1), Event("A", 2), Event("", 0)
	a2.Extensions = map[string]string{eventkit.SubjectSeqExtension: "999"} // the store owns the extension
	AddCommit(t, ctx, h, "t1", a1, b1, a2, none)
	AddCommit(t, ctx, h, "t2", Event("A", 1)) // another topic: its own sequence
	if a1.Extensions != nil || a2.Extensions[eventkit.SubjectSeqExtension] != "999" {
		t.Fatal("Add modified the caller's events")
	}
	// A rolled-back transaction gives its numbers back.
	tx, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Add(ctx, "t1", Event("A", 3), Event("A", 4)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	a3 := Event("A", 3)
	AddCommit(t, ctx, h, "t1", a3)

	want := map[string]string{a1.ID: "1", b1.ID: "1", a2.ID: "2", none.ID: "", a3.ID: "3"}
	recs := claimAll(t, ctx, h.Store)
	for _, r := range recs {
		got := r.Event.Extensions[eventkit.SubjectSeqExtension]
		if r.Topic == "t2" {
			if got != "1" {
				t.Errorf("topic t2, subject A: subjectseq %q, want 1", got)
			}
			continue
		}
		if w, ok := want[r.Event.ID]; !ok || got != w {
			t.Errorf("event %s (subject %q): subjectseq %q, want %q", r.Event.ID, r.Event.Subject, got, w)
		}
		if _, has := r.Event.Extensions[eventkit.SubjectSeqExtension]; r.Event.Subject == "" && has {
			t.Errorf("event without a subject got subjectseq %q", got)
		}
	}
	if len(recs) != 6 {
		t.Fatalf("%d records, want 6", len(recs))
	}
	var seqs []int64
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
	}
	if _, err := h.Store.Complete(ctx, seqs, false); err != nil {
		t.Fatal(err)
	}

	// Concurrent writers of a few subjects, a third of them rolling back:
	// in outbox order (which, per subject, is commit order, as the counter
	// row serialises them) each subject reads 4, 5, 6, ... (A) and 2, 3,
	// ... (B) with no gap and no repeat.
	writers, per := 4, 15
	if !h.ConcurrentWriters {
		writers = 1
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	var mu sync.Mutex
	committed := map[string]int{}
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				subj := []string{"A", "B", "C"}[(w+i)%3]
				tx, err := h.Begin(ctx)
				if err != nil {
					errs <- err
					return
				}
				if err := tx.Add(ctx, "t1", Event(subj, i), Event(subj, i)); err != nil {
					_ = tx.Rollback(ctx)
					if h.RolledBack != nil && h.RolledBack(err) {
						continue // rolled back by the database: its numbers are returned too
					}
					errs <- err
					return
				}
				if rand.IntN(3) == 0 {
					if err := tx.Rollback(ctx); err != nil {
						errs <- err
						return
					}
					continue
				}
				mu.Lock() // commit and count under one lock: nothing to do with the store's
				err = tx.Commit(ctx)
				if err == nil {
					committed[subj] += 2
				}
				mu.Unlock()
				if err != nil && !(h.RolledBack != nil && h.RolledBack(err)) {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	next := map[string]int{"A": 4, "B": 2, "C": 1}
	n := map[string]int{}
	for _, r := range claimAll(t, ctx, h.Store) {
		s := r.Event.Subject
		if got, want := r.Event.Extensions[eventkit.SubjectSeqExtension], fmt.Sprint(next[s]); got != want {
			t.Fatalf("subject %s: record %d has subjectseq %s, want %s", s, r.Seq, got, want)
		}
		next[s]++
		n[s]++
	}
	for s, c := range committed {
		if n[s] != c {
			t.Errorf("subject %s: %d records, %d committed", s, n[s], c)
		}
	}
}
