package consumer

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/inbox"
)

// Strict order in batches (StrictBatched): the ordered batch workers of
// PerSubjectBatched gather the ready subjects' runs, and one
// inbox.SequenceBatcher transaction applies them, each subject's events in
// sequence order. What the batch does not apply is settled as Strict
// settles one event (strict.go): an early event is held or given back, a
// parked head dead-lettered, and a failed head is counted and retried in
// place, alone, while the later events of its subject wait in its run.
// Held events come back through the worker that owns their subject
// (nextHeldLocked) or, for a subject no worker owns, through a recheck
// (takeWokenRun).

// takeWokenRun adds the subject of a due recheck to owned, with its held
// event to run, unless its owner does the recheck.
func (r *route) takeWokenRun(owned []*subjectRun, n int, key string) ([]*subjectRun, int) {
	if d := r.takeWoken(key); d != nil {
		owned = append(owned, &subjectRun{key: key, ds: []broker.Delivery{d}, out: d})
		n++
	}
	return owned, n
}

// nextHeldLocked ends s's held event taken out to run, once it is no
// longer in s's run, and adds the next held event of s that may run now.
func (r *route) nextHeldLocked(s *subjectRun) {
	wasHeld := s.out != nil && !slices.Contains(s.ds, s.out)
	if s.out != nil && !wasHeld {
		return // still to run
	}
	s.out = nil
	if d := r.heldNextLocked(s.key, wasHeld); d != nil {
		s.ds = append(s.ds, d)
		s.out = d
	}
}

// runStrictSubjects runs one StrictBatched batch of the owned subjects'
// runs, leaving in each run what is left of it.
func (r *route) runStrictSubjects(owned []*subjectRun) {
	var tries []*strictTry
	for si, s := range owned {
		ds := r.batchable(s.ds)
		s.ds = s.ds[:0]
		for _, d := range ds {
			if t, ok := r.strictPrep(d, d == s.out); ok {
				t.run = si
				tries = append(tries, t)
			}
		}
	}
	// Each subject's events in sequence order: the inbox applies an event
	// only after its predecessor, so a run that arrived out of order still
	// goes in one batch.
	slices.SortStableFunc(tries, func(a, b *strictTry) int {
		return cmp.Or(cmp.Compare(a.pos.Subject, b.pos.Subject), cmp.Compare(a.pos.Seq, b.pos.Seq))
	})
	switch len(tries) {
	case 0:
		return
	case 1:
		if !r.strictLoop(tries[0]) {
			r.release()
		}
		return
	}
	ps := make([]inbox.Position, len(tries))
	for i, t := range tries {
		ps[i] = t.pos
	}
	fails := make([]int, len(tries))
	results, err := r.cfg.Inbox.(inbox.SequenceBatcher).ProcessInOrderBatch(r.hardCtx, ps, func(ctx context.Context, i, f int) error {
		fails[i] = f
		return r.call(ctx, nil, tries[i].ev, f+1, func(ctx context.Context, call func(context.Context) error) error { return call(ctx) })
	})
	if err != nil {
		// Nothing of the batch was committed: each event alone.
		if r.hardCtx.Err() == nil {
			r.log.Warn("consumer: strict inbox batch failed; processing its events one by one", "events", len(tries), "err", err)
		}
		for _, t := range tries {
			if !r.strictLoop(t) {
				r.release()
			}
		}
		return
	}
	blocked := make([]bool, len(owned))
	var failed []int
	for i, t := range tries {
		res := results[i]
		switch {
		case blocked[t.run] || errors.Is(res, inbox.ErrNotRun):
			owned[t.run].ds = append(owned[t.run].ds, t.d)
		case res != nil && !errors.Is(res, inbox.ErrDuplicate) && !errors.Is(res, inbox.ErrEarly) && !errors.Is(res, inbox.ErrParked):
			// The head failed: its subject's later events wait.
			blocked[t.run] = true
			failed = append(failed, i)
		default:
			if _, kept := r.strictOutcome(t, res, fails[i]); !kept {
				r.release()
			}
		}
	}
	for _, i := range failed {
		t := tries[i]
		again, kept := r.strictOutcome(t, results[i], fails[i])
		if again {
			kept = r.strictLoop(t)
		}
		if !kept {
			r.release()
		}
	}
}
