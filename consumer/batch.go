package consumer

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/inbox"
)

// batchWorker is the unordered worker of batch mode (Config.InboxBatch >
// 1): it takes a delivery, gathers more that are ready, for at most
// InboxBatchWait and up to InboxBatch, and processes them in one inbox
// transaction.
func (r *route) batchWorker() {
	batch := make([]broker.Delivery, 0, r.cfg.InboxBatch)
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
		timer.Reset(r.cfg.InboxBatchWait)
	gather:
		for len(batch) < r.cfg.InboxBatch {
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

// processBatch handles ds to the end, in one inbox transaction where it
// can: every delivery is settled and its slot released when it returns.
func (r *route) processBatch(ds []broker.Delivery) {
	if len(ds) == 1 {
		r.process(ds[0]) // a savepoint would only cost a round trip
		return
	}
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
	if len(items) == 0 {
		return
	}
	// Unordered mode: sort by event id so that concurrent batches take the
	// inbox keys' locks in one order and do not deadlock on them.
	slices.SortStableFunc(items, func(a, b broker.Delivery) int { return strings.Compare(a.Event().ID, b.Event().ID) })
	keys := make([]inbox.Key, len(items))
	attempts := make([]int, len(items))
	for i, d := range items {
		ev := d.Event()
		keys[i] = inbox.Key{Consumer: r.group, EventID: ev.ID, EventType: ev.Type}
		attempts[i] = max(d.Attempt(), 1)
	}
	results, err := r.cfg.Inbox.(inbox.Batcher).ProcessBatch(r.hardCtx, keys, func(ctx context.Context, i int) error {
		return r.call(ctx, items[i].Event(), attempts[i], func(ctx context.Context, call func(context.Context) error) error {
			return call(ctx)
		})
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
		return
	}
	for i, d := range items {
		var first time.Time
		r.outcome(d, d.Event(), attempts[i], &first, results[i]) // unordered: never again in place
		r.release()
	}
}
