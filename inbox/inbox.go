// Package inbox records which events a consumer has already processed, so that
// an at-least-once delivery is handled effectively once. An Inbox wraps the handler call: Process(ctx, key, fn) runs fn unless key
// was already recorded, and records key only when fn succeeds. The key is the
// consumer (group) name plus the event id (and type). Implementations differ
// in how strong that "effectively once" is:
//
//   - sqlinbox (PostgreSQL, MySQL/MariaDB, SQLite): the key is inserted in
//     the same database transaction as the handler's own writes, and that
//     transaction is committed before the delivery is acked. The effect and
//     the record commit together or not at all, so a crash at any point, a
//     redelivery or a concurrent duplicate never applies the effect twice —
//     provided the handler's effects are writes in that transaction. This is
//     the mode to use for business state.
//   - redisinbox: reserve-then-confirm with SET NX and a lease, then a
//     "done" mark with a TTL once the handler succeeded. Concurrent duplicates
//     are held off while the lease lasts, but the effect and the mark are not
//     atomic: a crash (or a lost connection) after the effect and before the
//     mark, or a handler that outlives its lease, lets the effect run twice.
//     Duplicates arriving after the TTL are not detected.
//   - lruinbox: the same protocol in process memory (expirable LRU): it only
//     catches duplicates seen by this process, within the TTL and the size
//     bound, and forgets everything on restart.
//
// sqlinbox also implements Batcher: several events in one transaction, so
// that one commit serves a batch (the consumer's batched modes, consumer.Batched).
//
// None of them makes a handler's side effects outside the transaction (HTTP
// calls, e-mails) exactly-once; make those idempotent (see the helpers in
// package sqlinbox: Upsert-style writes and compare-and-swap on a version).
package inbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

var (
	// ErrDuplicate is returned by Process when the key has already been
	// processed: the caller should ack the delivery and skip it.
	ErrDuplicate = errors.New("inbox: event already processed")
	// ErrInProgress is returned by Process when another worker holds a
	// reservation for the key (redisinbox, lruinbox): the caller should try
	// again later; it is not a failure of the event.
	ErrInProgress = errors.New("inbox: event is being processed elsewhere")
	// ErrNotRun is a Batcher's result for an event of the batch that was
	// not attempted (nothing of it recorded, its handler's writes, if it
	// ran, rolled back) because an earlier event of the batch failed: the
	// caller processes it again.
	ErrNotRun = errors.New("inbox: not run (an earlier event of the batch failed)")
)

// Key identifies one event for one consumer.
type Key struct {
	// Consumer is the consumer (group) name: two consumer groups process the
	// same event independently.
	Consumer string
	// EventID is the event's id.
	EventID string
	// EventType is the event's type: stored for inspection; it is part of
	// the key only in that ids are unique across types anyway.
	EventType string
}

func (k Key) String() string { return fmt.Sprintf("%s/%s", k.Consumer, k.EventID) }

// Inbox runs a handler at most once per key, in the sense its implementation
// documents.
type Inbox interface {
	// Process runs fn unless key has been recorded. It records key when fn
	// returns nil (atomically with fn's transaction, for sqlinbox) and
	// returns nil; when fn fails, nothing is recorded and fn's error is
	// returned (wrapped, if at all, so errors.Is/As see it). When key was
	// already recorded, fn is not called and ErrDuplicate is returned.
	// ErrInProgress means another worker holds the key for now.
	Process(ctx context.Context, key Key, fn func(ctx context.Context) error) error
}

// Batcher is implemented by inboxes that can process several events in one
// transaction (sqlinbox), so that one commit serves many events.
type Batcher interface {
	// ProcessBatch processes keys in order in one transaction and commits
	// once. A key already recorded (by an earlier commit, or earlier in
	// this batch) gets ErrDuplicate and fn is not called; otherwise
	// fn(ctx, i) runs with the transaction in its context.
	//
	// When fn(i) fails, key i is not recorded and results[i] is fn's
	// error. An implementation either isolates the failure (a savepoint
	// per event: the others go on, sqlinbox on MySQL and SQLite) or stops
	// there (sqlinbox on PostgreSQL): it rolls the transaction back, runs
	// keys[:i] again in a new one (their handlers run a second time; only
	// the committed run's writes remain) and gives every later key
	// ErrNotRun, for the caller to process again. Either way nothing is
	// recorded twice and no failure loses another key's writes.
	//
	// When err is nil the transaction committed and results[i] is nil
	// (key i recorded with fn's effects), ErrDuplicate, ErrNotRun, or an
	// error (nothing of key i recorded). When err is not nil nothing of the
	// batch was recorded, whatever fn returned, and results is nil.
	ProcessBatch(ctx context.Context, keys []Key, fn func(ctx context.Context, i int) error) (results []error, err error)
}

// Pruner is implemented by inboxes that need their old keys deleted (the
// SQL inbox; Redis and LRU expire keys themselves).
type Pruner interface {
	// Prune deletes keys processed before cutoff and returns how many.
	Prune(ctx context.Context, cutoff time.Time) (int64, error)
}

// RunRetention calls p.Prune every interval with cutoff now-keep until ctx
// ends; it blocks and returns ctx's error. Errors of single Prune calls are
// passed to onErr (if not nil) and do not stop the loop. Run it in a
// goroutine you own. Keep must be longer than any redelivery can be late
// (the broker's retention or max redelivery horizon), or late duplicates
// are no longer detected.
func RunRetention(ctx context.Context, p Pruner, keep, interval time.Duration, onErr func(error)) error {
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := p.Prune(ctx, time.Now().Add(-keep)); err != nil && onErr != nil && ctx.Err() == nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
