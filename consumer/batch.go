package consumer

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/inbox"
)

// batchWorker is the worker of Batched: it takes a delivery, gathers more
// that are ready, for at most the mode's wait and up to its size, and
// processes them in one inbox transaction.
func (r *route) batchWorker() {
	batch := make([]broker.Delivery, 0, r.cfg.Mode.batch())
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case d := <-r.work:
			batch = append(batch[:0], d)
		case <-r.stopping:
			return
		}
		timer.Reset(r.cfg.Mode.wait)
	gather:
		for len(batch) < r.cfg.Mode.batch() {
			select {
			case d := <-r.work:
				batch = append(batch, d)
			case <-timer.C:
				break gather
			case <-r.stopping:
				break gather
			}
		}
		timer.Stop()
		r.processBatch(batch)
		clear(batch)
	}
}

// processBatch handles ds to the end, in inbox transactions of many events
// where it can: every delivery is settled and its slot released when it
// returns.
func (r *route) processBatch(ds []broker.Delivery) {
	items := r.batchable(ds)
	// Unordered mode: sort by event id so that concurrent batches take the
	// inbox keys' (and id-keyed business rows') locks in one order.
	slices.SortStableFunc(items, func(a, b broker.Delivery) int { return strings.Compare(a.Event().ID, b.Event().ID) })
	for len(items) > 0 {
		results := r.runBatch(items, nil)
		if results == nil { // settled one by one
			return
		}
		again := items[:0]
		for i, d := range items {
			if errors.Is(results[i], inbox.ErrNotRun) {
				again = append(again, d) // after a failure of an earlier one: in the next batch
				continue
			}
			var first time.Time
			r.outcome(d, d.Event(), max(d.Attempt(), 1), &first, results[i]) // unordered: never again in place
			r.release()
		}
		clear(items[len(again):])
		items = again
	}
}

// batchable settles the deliveries of ds that must not run (the route
// stops, the partition was lost, undecodable) and returns the others.
func (r *route) batchable(ds []broker.Delivery) []broker.Delivery {
	items := make([]broker.Delivery, 0, len(ds))
	for _, d := range ds {
		if r.isStopping() || lost(d) {
			r.handBack(d)
			r.release()
			continue
		}
		if err := d.DecodeErr(); err != nil {
			r.deadLetterUndecodable(d, err)
			r.release()
			continue
		}
		items = append(items, d)
	}
	return items
}

// runBatch runs items in one inbox batch and returns its results. If the
// batch failed as a whole (nothing of it committed), or holds one event,
// it processes each event alone, settling and releasing it, and returns
// nil. skip, if not nil, says whether item i must not run in this batch
// (an earlier event of its subject failed in it): its result is then
// inbox.ErrNotRun.
func (r *route) runBatch(items []broker.Delivery, skip func(i int, failed bool) bool) []error {
	if len(items) == 1 {
		r.process(items[0]) // a batch would only cost a statement
		return nil
	}
	keys := make([]inbox.Key, len(items))
	for i, d := range items {
		ev := d.Event()
		keys[i] = inbox.Key{Consumer: r.group, EventID: ev.ID, EventType: ev.Type}
	}
	results, err := r.cfg.Inbox.(inbox.Batcher).ProcessBatch(r.hardCtx, keys, func(ctx context.Context, i int) error {
		if skip != nil && skip(i, false) {
			return inbox.ErrNotRun
		}
		err := r.call(ctx, nil, items[i].Event(), max(items[i].Attempt(), 1), func(ctx context.Context, call func(context.Context) error) error {
			return call(ctx)
		})
		if err != nil && skip != nil {
			skip(i, true)
		}
		return err
	})
	if err != nil {
		// Nothing of the batch was committed. Process each event again at
		// once, alone, so that one event that breaks the commit (a
		// deferred constraint) fails alone and follows the retry policy.
		if r.hardCtx.Err() == nil {
			r.log.Warn("consumer: inbox batch failed; processing its events one by one", "events", len(items), "err", err)
		}
		for _, d := range items {
			r.process(d)
		}
		return nil
	}
	return results
}

// subjectRun is the part of a subject's events that an ordered batch
// worker owns and has taken off its backlog, in order.
type subjectRun struct {
	key string
	ds  []broker.Delivery
	out broker.Delivery // strict: the held event taken out to run (in ds, or being settled)
}

// readyCollector runs beside the ordered batch workers: it takes every
// subject that becomes ready off r.ready at once, so that dispatch never
// waits for a worker to finish its batch, and queues it for the next
// worker that gathers a batch. At shutdown it hands back what is queued.
func (r *route) readyCollector() {
	for {
		select {
		case j := <-r.ready:
			r.mu.Lock()
			r.pending = append(r.pending, j)
			r.mu.Unlock()
			select {
			case r.pendingWake <- struct{}{}:
			default:
			}
		case <-r.stopping:
			r.mu.Lock()
			jobs := r.pending
			r.pending = nil
			var backlog []broker.Delivery
			for _, j := range jobs {
				backlog = append(backlog, r.queues[j.key]...)
				delete(r.queues, j.key)
			}
			r.mu.Unlock()
			for _, j := range jobs {
				r.handBack(j.d)
				r.release()
			}
			for _, d := range backlog {
				r.handBack(d)
				r.release()
			}
			return
		}
	}
}

// takePending moves queued ready subjects to owned until they hold limit
// events, and returns owned and how many events it holds.
func (r *route) takePending(owned []*subjectRun, limit int) ([]*subjectRun, int) {
	n := r.topUp(owned, limit)
	for n < limit {
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.mu.Unlock()
			break
		}
		j := r.pending[0]
		r.pending[0] = orderedJob{}
		r.pending = r.pending[1:]
		r.mu.Unlock()
		owned = append(owned, &subjectRun{key: j.key, ds: []broker.Delivery{j.d}})
		n = r.topUp(owned, limit)
	}
	r.wakeIfPending()
	return owned, n
}

// wakeIfPending wakes a waiting worker if ready subjects are queued.
func (r *route) wakeIfPending() {
	r.mu.Lock()
	more := len(r.pending) > 0
	r.mu.Unlock()
	if more {
		select {
		case r.pendingWake <- struct{}{}:
		default:
		}
	}
}

// orderedBatchWorker is the worker of PerSubjectBatched: it takes
// subjects that are ready (readyCollector), waiting at most the mode's
// wait after the first for up to its size events, each
// subject's backlog included, and processes them in one inbox
// transaction, each subject's events in order. It owns those subjects
// until their backlogs are empty, batching what arrives for them in the
// meantime with other ready subjects.
func (r *route) orderedBatchWorker() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		owned, n := r.takePending(nil, r.cfg.Mode.batch())
		if len(owned) == 0 {
			select {
			case <-r.pendingWake:
				continue
			case key := <-r.held.wake: // nil unless StrictBatched
				owned, n = r.takeWokenRun(owned, n, key)
				if len(owned) == 0 {
					continue
				}
			case <-r.stopping:
				return
			}
		}
		timer.Reset(r.cfg.Mode.wait)
	gather:
		for n < r.cfg.Mode.batch() {
			select {
			case <-r.pendingWake:
				owned, n = r.takePending(owned, r.cfg.Mode.batch())
			case key := <-r.held.wake:
				owned, n = r.takeWokenRun(owned, n, key)
			case <-timer.C:
				break gather
			case <-r.stopping:
				break gather
			}
		}
		timer.Stop()
		for len(owned) > 0 {
			owned = r.runSubjects(owned)
			// Subjects still owned have more events: batch them with
			// the subjects that are ready now, without waiting.
			if len(owned) > 0 {
				owned, _ = r.takePending(owned, r.cfg.Mode.batch())
			}
		}
		r.wakeIfPending()
	}
}

// topUp moves deliveries from the backlogs of owned subjects to their runs
// until the runs hold limit events (or the backlogs are empty), and
// returns how many they hold.
func (r *route) topUp(owned []*subjectRun, limit int) int {
	n := 0
	for _, s := range owned {
		n += len(s.ds)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range owned {
		q := r.queues[s.key]
		k := min(len(q), limit-n)
		if k <= 0 {
			continue
		}
		s.ds = append(s.ds, q[:k]...)
		clear(q[:k])
		r.queues[s.key] = q[k:]
		n += k
	}
	return n
}

// runSubjects processes one batch of the owned subjects' runs and returns
// the subjects still owned, with what is left to run of each (events not
// run after a failure, then more of the backlog); a subject with nothing
// left is given up.
func (r *route) runSubjects(owned []*subjectRun) []*subjectRun {
	if r.cfg.Mode.strict() {
		r.runStrictSubjects(owned)
	} else {
		r.runSubjectsOnce(owned)
	}
	r.topUp(owned, r.cfg.Mode.batch())
	kept := owned[:0]
	r.mu.Lock()
	for _, s := range owned {
		if r.cfg.Mode.strict() {
			r.nextHeldLocked(s)
		}
		if len(s.ds) == 0 && len(r.queues[s.key]) == 0 {
			delete(r.queues, s.key)
			continue
		}
		kept = append(kept, s)
	}
	r.mu.Unlock()
	clear(owned[len(kept):])
	return kept
}

// runSubjectsOnce runs one PerSubjectBatched batch of the owned subjects'
// runs, leaving in each run what is left of it.
func (r *route) runSubjectsOnce(owned []*subjectRun) {
	var items []broker.Delivery
	var subj []int // items[i] belongs to owned[subj[i]]
	for si, s := range owned {
		for _, d := range r.batchable(s.ds) {
			items = append(items, d)
			subj = append(subj, si)
		}
		s.ds = s.ds[:0]
	}
	if len(items) > 0 {
		// A subject stops at its first failure: its later events are not
		// run in this batch.
		failedAt := make([]int, len(owned))
		for i := range failedAt {
			failedAt[i] = len(items)
		}
		results := r.runBatch(items, func(i int, failed bool) bool {
			if failed {
				failedAt[subj[i]] = min(failedAt[subj[i]], i)
			}
			return i > failedAt[subj[i]]
		})
		if results != nil {
			r.settleSubjects(owned, items, subj, results)
		}
	}
}

// settleSubjects settles an ordered batch's results: per subject, the
// events up to its first failure are settled; the failure is retried in
// place (after every subject's successes are acked) and its later events
// go back to the subject's run, as do the events a failure of another
// subject left not run.
func (r *route) settleSubjects(owned []*subjectRun, items []broker.Delivery, subj []int, results []error) {
	blocked := make([]bool, len(owned))
	var failures []int
	for i, d := range items {
		si := subj[i]
		switch {
		case blocked[si] || errors.Is(results[i], inbox.ErrNotRun):
			owned[si].ds = append(owned[si].ds, d)
		case results[i] != nil && !errors.Is(results[i], inbox.ErrDuplicate):
			blocked[si] = true
			failures = append(failures, i)
		default:
			var first time.Time
			r.outcome(d, d.Event(), max(d.Attempt(), 1), &first, results[i])
			r.release()
		}
	}
	for _, i := range failures {
		d, ev := items[i], items[i].Event()
		attempt := max(d.Attempt(), 1)
		var first time.Time
		for again, next := r.outcome(d, ev, attempt, &first, results[i]); again; {
			attempt = next
			again, next = r.outcome(d, ev, attempt, &first, r.invoke(d, ev, attempt))
		}
		r.release()
	}
}
