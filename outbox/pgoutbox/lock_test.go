package pgoutbox_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
)

// TestLeaderSessionKilled terminates the leader's lock session on the server
// (as a network partition or a DBA would): the leader must notice, stop, and
// a relay (the standby, or the old leader once it reconnects) must take over
// with no loss and per-subject order kept.
func TestLeaderSessionKilled(t *testing.T) {
	t.Parallel()
	h := harness(t)
	ctx := context.Background()
	store := h.Store.(interface{ Table() string })
	hash := fnv.New64a()
	_, _ = hash.Write([]byte("eventkit.outbox:" + store.Table()))
	key := hash.Sum64()
	pool := newPool(t)

	rec := &outboxtest.Recorder{}
	cfg := outbox.RelayConfig{
		BatchSize: 20, PollInterval: 100 * time.Millisecond, LockRetryInterval: 50 * time.Millisecond,
		StatusInterval: -1, Logger: outboxtest.TestLogger(t),
	}
	r1 := outbox.NewRelay(h.Store, rec, cfg)
	r2 := outbox.NewRelay(h.NewStore(t), rec, cfg)
	outboxtest.StartRelay(t, r1)
	outboxtest.WaitFor(t, 5*time.Second, "r1 leads", r1.IsLeader)
	outboxtest.StartRelay(t, r2)

	sent := map[string][]string{}
	write := func(from, to int) {
		for i := from; i < to; i += 10 {
			var evs []eventkit.Event
			for j := i; j < i+10; j++ {
				e := outboxtest.Event(fmt.Sprint("s", j%7), j)
				evs = append(evs, e)
				sent[e.Subject] = append(sent[e.Subject], e.ID)
			}
			outboxtest.AddCommit(t, ctx, h, "t1", evs...)
		}
	}
	write(0, 300)
	var n int64
	err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2 AND objsubid = 1`,
		int64(uint32(key>>32)), int64(uint32(key))).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("terminated %d lock sessions (%v), want 1", n, err)
	}
	outboxtest.WaitFor(t, 5*time.Second, "r1 steps down", func() bool { return !r1.IsLeader() || r1.Stats().Leaderships > 1 })
	write(300, 600)
	outboxtest.WaitFor(t, 20*time.Second, "all delivered", func() bool {
		seen := map[string]bool{}
		for _, p := range rec.Events() {
			seen[p.Event.ID] = true
		}
		return len(seen) == 600
	})
	var evs []eventkit.Event
	for _, p := range rec.Events() {
		evs = append(evs, p.Event)
	}
	dups, err := outboxtest.CheckStream(evs, sent)
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := r1.Stats(), r2.Stats()
	if s1.Leaderships+s2.Leaderships < 2 {
		t.Fatalf("no takeover: r1 %v, r2 %v", s1, s2)
	}
	t.Logf("after the lock session was killed: r1 %v; r2 %v; %d duplicates", s1, s2, dups)
}

// TestTwoDatabases runs an outbox of the default table name in each of two
// databases of one server: both relays lead and drain at once. Advisory
// locks belong to the database they are taken in (pg_locks.database), so
// the same key in two databases is two locks: this checks it, also in
// pg_locks.
func TestTwoDatabases(t *testing.T) {
	t.Parallel()
	a := harnessOn(t, testdb.Postgres(t), outbox.DefaultTable)
	b := harnessOn(t, testdb.Postgres(t), outbox.DefaultTable)
	ctx := context.Background()
	la, err := a.Store.TryLock(ctx)
	if err != nil || la == nil {
		t.Fatalf("lock a: %v %v", la, err)
	}
	lb, err := b.Store.TryLock(ctx)
	if err != nil || lb == nil {
		t.Fatalf("lock b while a holds its own: %v %v", lb, err)
	}
	hash := fnv.New64a()
	_, _ = hash.Write([]byte("eventkit.outbox:" + outbox.DefaultTable))
	key := hash.Sum64()
	var dbs int
	if err := newPool(t).QueryRow(ctx, `SELECT count(DISTINCT database) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2 AND objsubid = 1
  AND database IN (SELECT oid FROM pg_database WHERE datname LIKE 'ekdb\_%')`,
		int64(uint32(key>>32)), int64(uint32(key))).Scan(&dbs); err != nil || dbs < 2 {
		t.Fatalf("the key is locked in %d test databases (%v), want 2", dbs, err)
	}
	_ = la.Release(ctx)
	_ = lb.Release(ctx)
	outboxtest.TwoDatabases(t, a, b)
}
