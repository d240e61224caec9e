// Package outboxtest is the conformance suite for outbox stores (Run) and
// for the relay on top of them (RunRelay). Guarantee: every store in eventkit
// passes both against its real database, so a store that passes keeps the
// outbox contract of package outbox.
//
// Use: call Run and RunRelay from a store's tests with a Factory for its
// database (and Crash, TwoDatabases, RunPartitions for the stores that
// support them); Recorder, a recording Publisher, FaultPublisher and the
// helpers (Event, AddCommit, StartRelay, WaitFor, CheckStream) serve other
// tests.
package outboxtest

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
	"github.com/eventkit/eventkit/outbox"
)

// Tx is a transaction of the store's database, as the suite uses it.
type Tx interface {
	Add(ctx context.Context, topic string, events ...eventkit.Event) error
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// Harness is what a factory gives the suite: a store on a fresh, migrated,
// empty outbox table, and a way to begin transactions on its database.
type Harness struct {
	Store outbox.Store
	Begin func(ctx context.Context) (Tx, error)
	// ConcurrentWriters is true when two write transactions can be open at
	// once (Postgres, MySQL; not SQLite), so the out-of-order commit tests
	// apply.
	ConcurrentWriters bool
	// RolledBack, if set, reports whether err from Add or Commit means the
	// database rolled the transaction back on its own and the application
	// would retry it (MySQL's Error 1213, a deadlock InnoDB finds between
	// writers of a new subject when the first of them rolls back). The
	// concurrent-writer tests count such a transaction as rolled back
	// instead of failing.
	RolledBack func(err error) bool
	// NewStore, if set, returns a second store on the same table (as another
	// process would have), for the HA tests. Default: the same Store.
	NewStore func(t *testing.T) outbox.Store
	// Corrupt, if set, overwrites the stored event_time of record seq with
	// text that is not a time (as a foreign tool might), for the
	// undecodable-row tests.
	Corrupt func(ctx context.Context, seq int64) error
	// LargeTxMB is the payload size of the large-transaction test, in MB of
	// 1,000 KB events (default 5; the MySQL suite uses 18, over MariaDB's
	// default 16 MB max_allowed_packet).
	LargeTxMB int
	// Partitions is the outbox's partition count when the factory split it
	// (outbox.Partitioned); 0 or 1 when it is not split.
	Partitions int
}

// Factory returns a Harness on a new outbox table, cleaned up with t.
type Factory func(t *testing.T) Harness

// NewTx adapts a store's typed writer and one of its transactions to Tx.
func NewTx[TTx any](w outbox.Writer[TTx], tx TTx, commit, rollback func(ctx context.Context) error) Tx {
	return &typedTx[TTx]{w: w, tx: tx, commit: commit, rollback: rollback}
}

// BeginSQL is a Harness.Begin of database/sql transactions on db, written
// to with w.
func BeginSQL(db *sql.DB, w outbox.Writer[*sql.Tx]) func(ctx context.Context) (Tx, error) {
	return func(ctx context.Context) (Tx, error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		return NewTx[*sql.Tx](w, tx,
			func(context.Context) error { return tx.Commit() },
			func(context.Context) error { return tx.Rollback() }), nil
	}
}

// CheckMigrations checks a store's migration runner on a database where
// the store's tables do not exist yet: status reports no version applied,
// migrate succeeds twice (it is idempotent), and then status reports every
// version applied, with its time.
func CheckMigrations(t *testing.T, migrate func(context.Context) error, status func(context.Context) ([]outbox.MigrationState, error)) {
	t.Helper()
	ctx := context.Background()
	st, err := status(ctx)
	if err != nil || len(st) == 0 || st[0].Applied {
		t.Fatalf("before: %+v %v", st, err)
	}
	for range 2 {
		if err := migrate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st, err = status(ctx)
	if err != nil {
		t.Fatalf("after: %v", err)
	}
	for _, m := range st {
		if !m.Applied || m.AppliedAt.IsZero() {
			t.Fatalf("after: %+v", st)
		}
	}
}

type typedTx[TTx any] struct {
	w                outbox.Writer[TTx]
	tx               TTx
	commit, rollback func(ctx context.Context) error
}

func (t *typedTx[TTx]) Add(ctx context.Context, topic string, events ...eventkit.Event) error {
	return t.w.Add(ctx, t.tx, topic, events...)
}
func (t *typedTx[TTx]) Commit(ctx context.Context) error   { return t.commit(ctx) }
func (t *typedTx[TTx]) Rollback(ctx context.Context) error { return t.rollback(ctx) }

// Published is one event a Recorder accepted.
type Published struct {
	Topic string
	Event eventkit.Event
}

// Recorder is a broker.Publisher that keeps what it accepts, in order, for
// tests. Fail, if set, is asked about every Publish call before anything is
// accepted; it returns nil to accept all, or an error (a *broker.PublishError
// to fail some events only).
type Recorder struct {
	mu    sync.Mutex
	got   []Published
	calls int
	Fail  func(topic string, events []eventkit.Event) error
	// Next, if set, receives every accepted event after it is recorded.
	Next broker.Publisher
}

// Publish implements broker.Publisher.
func (r *Recorder) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	if err := ctx.Err(); err != nil {
		return adapterkit.FailAll(topic, events, err)
	}
	if err := adapterkit.ValidateEvents(topic, 0, events); err != nil {
		return err
	}
	r.mu.Lock()
	fail := r.Fail
	r.calls++
	r.mu.Unlock()
	var failed map[int]bool
	if fail != nil {
		if err := fail(topic, events); err != nil {
			pe, ok := err.(*broker.PublishError)
			if !ok {
				return adapterkit.FailAll(topic, events, err)
			}
			failed = map[int]bool{}
			for _, ix := range pe.FailedIndexes() {
				failed[ix] = true
			}
			r.mu.Lock()
			for i, e := range events {
				if !failed[i] {
					r.got = append(r.got, Published{topic, e.Clone()})
				}
			}
			r.mu.Unlock()
			return pe
		}
	}
	r.mu.Lock()
	for _, e := range events {
		r.got = append(r.got, Published{topic, e.Clone()})
	}
	r.mu.Unlock()
	if r.Next != nil {
		return r.Next.Publish(ctx, topic, events...)
	}
	return nil
}

// SetFail replaces Fail safely while the recorder is in use.
func (r *Recorder) SetFail(f func(topic string, events []eventkit.Event) error) {
	r.mu.Lock()
	r.Fail = f
	r.mu.Unlock()
}

// Events returns a copy of what was accepted so far.
func (r *Recorder) Events() []Published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Published(nil), r.got...)
}

// Calls returns the number of Publish calls.
func (r *Recorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// CheckStream checks a stream of received events against what was sent:
// every sent id arrived at least once, and for each subject the first
// arrivals are in the order sent. It returns the number of duplicates.
// sent lists ids in per-subject order (subject -> ids).
func CheckStream(got []eventkit.Event, sent map[string][]string) (dups int, err error) {
	seen := map[string]bool{}
	firsts := map[string][]string{}
	for _, e := range got {
		if seen[e.ID] {
			dups++
			continue
		}
		seen[e.ID] = true
		firsts[e.Subject] = append(firsts[e.Subject], e.ID)
	}
	for subj, ids := range sent {
		f := firsts[subj]
		if len(f) != len(ids) {
			missing := 0
			for _, id := range ids {
				if !seen[id] {
					missing++
				}
			}
			return dups, fmt.Errorf("subject %q: sent %d, received %d distinct (%d missing)", subj, len(ids), len(f), missing)
		}
		for i := range ids {
			if f[i] != ids[i] {
				return dups, fmt.Errorf("subject %q: event %d out of order: got %s, want %s", subj, i, f[i], ids[i])
			}
		}
	}
	return dups, nil
}
