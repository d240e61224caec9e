package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
)

// RelayFactory builds the relay under test on a harness's outbox.
type RelayFactory struct {
	// New returns a relay from h's outbox to pub with cfg. It may set up
	// what its source needs (a replication slot) and clean it up with t.
	New func(t testing.TB, h Harness, pub broker.Publisher, cfg outbox.RelayConfig) *outbox.Relay
	// Streams is true for a source that streams changes (outbox/pgcdc):
	// it delivers only rows committed after New returned, and its rows
	// cannot be corrupted after the fact (the stream already carries them),
	// so the cases that need either are skipped.
	Streams bool
}

// Polling builds the polling relay on the harness's store.
var Polling = RelayFactory{New: func(_ testing.TB, h Harness, pub broker.Publisher, cfg outbox.RelayConfig) *outbox.Relay {
	return outbox.NewRelay(h.Store, pub, cfg)
}}

func (f RelayFactory) new(t testing.TB, h Harness, pub broker.Publisher, cfg outbox.RelayConfig) *outbox.Relay {
	if f.New == nil {
		return Polling.New(t, h, pub, cfg)
	}
	return f.New(t, h, pub, cfg)
}

// RunRelay runs the relay suite on the relay that rf builds on top of each
// store that factory returns: ordered delivery, out-of-order commits,
// broker outages, Publish calls that fail in the middle, permanent
// rejections, HA takeover, retention and wake-on-commit.
func RunRelay(t *testing.T, factory Factory, rf RelayFactory) {
	run := func(name string, f func(*testing.T, Harness, RelayFactory)) {
		t.Run(name, func(t *testing.T) { t.Parallel(); f(t, factory(t), rf) })
	}
	run("DeliversInOrderPerTopicRun", testRelayOrder)
	run("OutOfOrderCommitNotSkipped", testRelayGap)
	run("BrokerDownThenRecovers", testBrokerDown)
	run("PartialFailureKeepsSubjectOrder", testPartialFailure)
	run("PermanentRejectionParks", testPermanent)
	run("HATakeover", testHA)
	run("Retention", testRetention)
	run("WakeOnCommit", testWake)
	run("UndecodableRowParked", testRelayCorrupt)
	run("LateCommitDuringReadAhead", testReadAheadGap)
}

// hookStore runs beforeClaim before each Claim of the store it wraps.
type hookStore struct {
	outbox.Store
	beforeClaim func(p outbox.ClaimParams)
}

func (s *hookStore) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Record, error) {
	s.beforeClaim(p)
	return s.Store.Claim(ctx, p)
}

// hookRunStore is a hookStore that keeps its store's outbox.RunCompleter,
// so that the relay takes the same path as on the bare store.
type hookRunStore struct {
	*hookStore
	outbox.RunCompleter
}

// hooked wraps store with beforeClaim, keeping its optional RunCompleter.
func hooked(store outbox.Store, beforeClaim func(p outbox.ClaimParams)) outbox.Store {
	hs := &hookStore{Store: store, beforeClaim: beforeClaim}
	if rc, ok := store.(outbox.RunCompleter); ok {
		return &hookRunStore{hs, rc}
	}
	return hs
}

// testReadAheadGap: while a full batch is in flight the relay reads the next
// one (rows after it). Transaction A, holding the lowest seq for subject x,
// commits just before that read-ahead, then B writes x again (a higher seq,
// inside the read-ahead). A must still be published before B.
func testReadAheadGap(t *testing.T, h Harness, rf RelayFactory) {
	if rf.Streams {
		t.Skip("a stream source does not read ahead")
	}
	if !h.ConcurrentWriters {
		t.Skip("store does not allow concurrent write transactions")
	}
	ctx := ctxT(t)
	txA, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := Event("x", 0)
	if err := txA.Add(ctx, "t1", a); err != nil { // lowest seq, not committed
		t.Fatal(err)
	}
	var ys []eventkit.Event
	for i := 1; i <= 15; i++ {
		ys = append(ys, Event("y", i))
	}
	AddCommit(t, ctx, h, "t1", ys...)
	b := Event("x", 16)
	var once sync.Once
	store := hooked(h.Store, func(p outbox.ClaimParams) {
		if p.AfterSeq > 0 {
			once.Do(func() {
				if err := txA.Commit(ctx); err != nil {
					t.Error(err)
				}
				AddCommit(t, ctx, h, "t1", b)
			})
		}
	})
	rec := &Recorder{}
	cfg := fastConfig(t)
	cfg.BatchSize = 10
	hs := h
	hs.Store = store
	relay := rf.new(t, hs, rec, cfg)
	StartRelay(t, relay)
	WaitFor(t, 10*time.Second, "all delivered", func() bool { return len(distinct(rec.Events())) == 17 })
	pos := map[string]int{}
	for i, p := range rec.Events() {
		if _, ok := pos[p.Event.ID]; !ok {
			pos[p.Event.ID] = i
		}
	}
	if pos[a.ID] > pos[b.ID] {
		t.Fatalf("subject x out of order: A (committed first, lower seq) published at %d, B at %d", pos[a.ID], pos[b.ID])
	}
}

func testRelayCorrupt(t *testing.T, h Harness, rf RelayFactory) {
	if h.Corrupt == nil || rf.Streams {
		t.Skip("harness cannot corrupt rows (or the stream already carries them)")
	}
	ctx := ctxT(t)
	bad, good := Event("a", 1), Event("a", 2)
	AddCommit(t, ctx, h, "t1", bad, good)
	recs := claimAll(t, ctx, h.Store)
	if err := h.Corrupt(ctx, recs[0].Seq); err != nil {
		t.Fatal(err)
	}
	rec := &Recorder{}
	relay := rf.new(t, h, rec, fastConfig(t))
	StartRelay(t, relay)
	WaitFor(t, 10*time.Second, "good event delivered", func() bool { return distinct(rec.Events())[good.ID] })
	if distinct(rec.Events())[bad.ID] {
		t.Fatal("undecodable row was published")
	}
	st, err := h.Store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ParkedCount != 1 || st.Parked[0].ID != bad.ID || !strings.Contains(st.Parked[0].Reason, "cannot decode") {
		t.Fatalf("parked: %+v", st.Parked)
	}
}

// TestLogger returns a logger that writes to t.Log at level Warn and above.
func TestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tLogWriter struct{ t testing.TB }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// StartRelay runs relay until the test ends (or the returned stop is called,
// which waits for Run to return).
func StartRelay(t testing.TB, relay *outbox.Relay) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("relay.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// WaitFor polls cond every few milliseconds until it is true, and fails t
// saying what it waited for when d passes first (testenv.WaitFor).
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, d, what, cond)
}

func fastConfig(t testing.TB) outbox.RelayConfig {
	return outbox.RelayConfig{
		PollInterval:      200 * time.Millisecond,
		MinBackoff:        10 * time.Millisecond,
		MaxBackoff:        100 * time.Millisecond,
		LockRetryInterval: 50 * time.Millisecond,
		LeaseTTL:          time.Second,
		RetryDelay:        100 * time.Millisecond,
		StatusInterval:    -1,
		PublishTimeout:    5 * time.Second,
		Logger:            TestLogger(t),
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func distinct(got []Published) map[string]bool {
	m := map[string]bool{}
	for _, p := range got {
		m[p.Event.ID] = true
	}
	return m
}

func eventsOf(got []Published) []eventkit.Event {
	out := make([]eventkit.Event, len(got))
	for i, p := range got {
		out[i] = p.Event
	}
	return out
}

type countingMetrics struct {
	delivered, latencies, errors atomic.Int64
	backlogCalls                 atomic.Int64
}

func (m *countingMetrics) Delivered(n int)                            { m.delivered.Add(int64(n)) }
func (m *countingMetrics) PublishLatency(string, time.Duration, bool) { m.latencies.Add(1) }
func (m *countingMetrics) Error(string)                               { m.errors.Add(1) }
func (m *countingMetrics) Parked(string, int)                         {}
func (m *countingMetrics) Backlog(int64, time.Duration, int64)        { m.backlogCalls.Add(1) }

func testRelayOrder(t *testing.T, h Harness, rf RelayFactory) {
	ctx := ctxT(t)
	rec := &Recorder{}
	m := &countingMetrics{}
	cfg := fastConfig(t)
	cfg.Metrics = m
	cfg.StatusInterval = 50 * time.Millisecond
	relay := rf.new(t, h, rec, cfg)
	var evs []eventkit.Event
	topics := []string{"t1", "t1", "t2", "t2", "t2", "t1", "t3"}
	tx, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, topic := range topics {
		e := Event(fmt.Sprint("s", i%2), i)
		evs = append(evs, e)
		if err := tx.Add(ctx, topic, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	StartRelay(t, relay)
	WaitFor(t, 10*time.Second, "delivery", func() bool { return relay.Stats().Delivered == int64(len(evs)) })
	got := rec.Events()
	if len(got) != len(evs) {
		t.Fatalf("published %d, want %d", len(got), len(evs))
	}
	calls := 5
	if h.Partitions > 1 {
		// Partitions are relayed side by side: the order holds per
		// subject (per partition), not across subjects.
		byID := map[string]int{}
		for i, e := range evs {
			byID[e.ID] = i
		}
		last := map[string]int{}
		for _, g := range got {
			i, ok := byID[g.Event.ID]
			if !ok || g.Topic != topics[i] {
				t.Fatalf("unexpected %s on %s", g.Event.ID, g.Topic)
			}
			if err := SameEvent(g.Event, evs[i]); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if j, ok := last[g.Event.Subject]; ok && j > i {
				t.Fatalf("subject %s: event %d after %d", g.Event.Subject, i, j)
			}
			last[g.Event.Subject] = i
		}
		calls = rec.Calls()
	} else {
		for i := range evs {
			if got[i].Event.ID != evs[i].ID || got[i].Topic != topics[i] {
				t.Fatalf("event %d: got %s on %s, want %s on %s", i, got[i].Event.ID, got[i].Topic, evs[i].ID, topics[i])
			}
			if err := SameEvent(got[i].Event, evs[i]); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
		}
		// One call per same-topic run, and within a run at most one event per
		// subject per call: t1 [s0 s1] | t2 [s0 s1] [s0] | t1 [s1] | t3 [s0].
		if c := rec.Calls(); c != 5 {
			t.Fatalf("%d Publish calls, want 5 (one per same-topic run and subject wave)", c)
		}
	}
	WaitFor(t, 5*time.Second, "backlog metric", func() bool { return m.backlogCalls.Load() > 0 })
	if m.delivered.Load() != int64(len(evs)) || m.latencies.Load() != int64(calls) {
		t.Fatalf("metrics: delivered %d, latencies %d", m.delivered.Load(), m.latencies.Load())
	}
	st, err := h.Store.Status(ctx)
	if err != nil || st.Backlog != 0 {
		t.Fatalf("backlog after delivery: %+v %v", st, err)
	}
	if !relay.IsLeader() || relay.Stats().Leaderships != int64(max(h.Partitions, 1)) || relay.Stats().Published != int64(len(evs)) {
		t.Fatalf("leader %v, stats %v", relay.IsLeader(), relay.Stats())
	}
	if hl := relay.Health(); !hl.Ready() || hl.Status() != "leader" {
		t.Fatalf("health %+v", hl)
	}
}

// testRelayGap: tx A inserts (lower seq), tx B inserts and commits, the relay
// delivers B, then A commits: A must be delivered too.
func testRelayGap(t *testing.T, h Harness, rf RelayFactory) {
	if !h.ConcurrentWriters {
		t.Skip("store does not allow concurrent write transactions")
	}
	ctx := ctxT(t)
	rec := &Recorder{}
	relay := rf.new(t, h, rec, fastConfig(t))
	StartRelay(t, relay)
	txA, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := Event("a", 1)
	if err := txA.Add(ctx, "t1", a); err != nil {
		t.Fatal(err)
	}
	b := Event("b", 2)
	AddCommit(t, ctx, h, "t1", b)
	WaitFor(t, 10*time.Second, "B delivered", func() bool { return distinct(rec.Events())[b.ID] })
	time.Sleep(300 * time.Millisecond) // the relay polls on past B a few times
	if distinct(rec.Events())[a.ID] {
		t.Fatal("uncommitted A was published")
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, "A delivered after its late commit", func() bool { return distinct(rec.Events())[a.ID] })
	if got := rec.Events(); len(got) != 2 || got[0].Event.ID != b.ID || got[1].Event.ID != a.ID {
		t.Fatalf("published %v", eventsOf(got))
	}
}

// testBrokerDown: the publisher fails (wholly, then partly) for a while; the
// relay retries with backoff, loses nothing and keeps per-subject order.
func testBrokerDown(t *testing.T, h Harness, rf RelayFactory) {
	ctx := ctxT(t)
	rec := &Recorder{}
	var down atomic.Bool
	down.Store(true)
	var calls atomic.Int64
	rec.Fail = func(topic string, events []eventkit.Event) error {
		n := calls.Add(1)
		if down.Load() {
			return errors.New("connection refused")
		}
		if n%3 == 0 && len(events) > 1 { // flaky: the second half of the call fails
			pe := &broker.PublishError{Topic: topic}
			for i := len(events) / 2; i < len(events); i++ {
				pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: events[i].ID, Err: errors.New("timeout")})
			}
			return pe
		}
		return nil
	}
	cfg := fastConfig(t)
	cfg.BatchSize = 20
	relay := rf.new(t, h, rec, cfg)
	StartRelay(t, relay)
	sent := map[string][]string{}
	write := func(from, to int) {
		for i := from; i < to; i += 10 {
			var evs []eventkit.Event
			for j := i; j < i+10; j++ {
				e := Event(fmt.Sprint("s", j%5), j)
				evs = append(evs, e)
				sent[e.Subject] = append(sent[e.Subject], e.ID)
			}
			AddCommit(t, ctx, h, "t1", evs...)
		}
	}
	write(0, 100)
	WaitFor(t, 10*time.Second, "publish errors counted", func() bool { return relay.Stats().PublishErrors >= 2 })
	if n := len(rec.Events()); n != 0 {
		t.Fatalf("%d events accepted while the broker was down", n)
	}
	if hl := relay.Health(); hl.Ready() || hl.Status() != "broker unavailable" || hl.BrokerErr == nil {
		t.Fatalf("health while the broker is down: %+v (%s)", hl, hl.Status())
	}
	down.Store(false)
	write(100, 200)
	WaitFor(t, 20*time.Second, "all delivered", func() bool { return len(distinct(rec.Events())) == 200 })
	dups, err := CheckStream(eventsOf(rec.Events()), sent)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckBrokerOrder(eventsOf(rec.Events()), sent); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 5*time.Second, "healthy again", func() bool { return relay.Health().Ready() })
	st := relay.Stats()
	t.Logf("broker outage: %v; %d duplicates from partial failures", st, dups)
	WaitFor(t, 5*time.Second, "backlog drained", func() bool {
		s, err := h.Store.Status(ctx)
		return err == nil && s.Backlog == 0
	})
}

// testPermanent: an event the broker rejects permanently is parked after
// MaxAttempts; events of other subjects flow meanwhile; the events of its
// subject wait behind it, unpublished, then follow.
func testPermanent(t *testing.T, h Harness, rf RelayFactory) {
	ctx := ctxT(t)
	rec := &Recorder{}
	bad := Event("s1", 0)
	more := Event("s2", 7) // written after the first rejection, while the bad one waits for its retry
	cfg := fastConfig(t)
	cfg.MaxAttempts = 3
	cfg.RetryDelay = 300 * time.Millisecond // attempts at 0, 0.3s, 0.9s
	var parkedAt atomic.Int64               // how many events the broker held when the bad one was last offered
	var rejections, held atomic.Int64
	rec.Fail = func(topic string, events []eventkit.Event) error {
		i := slices.IndexFunc(events, func(e eventkit.Event) bool { return e.ID == bad.ID })
		if i < 0 {
			return nil
		}
		if rejections.Load()+1 == int64(cfg.MaxAttempts) &&
			!distinct(rec.Events())[more.ID] && !slices.ContainsFunc(events, func(e eventkit.Event) bool { return e.ID == more.ID }) {
			// The attempt that parks waits (as a transient failure, which
			// does not count) until the broker has the s2 event written
			// after the first rejection: no time window for the relay to
			// send it in. A relay that held s2 behind the retried s1 head
			// never sends it, the head never parks, and the waits below
			// fail.
			held.Add(1)
			return &broker.PublishError{Topic: topic, Failed: []broker.FailedEvent{{Index: i, ID: bad.ID, Err: errors.New("outboxtest: held until the s2 event is in")}}}
		}
		rejections.Add(1)
		parkedAt.Store(int64(len(rec.Events())))
		return &broker.PublishError{Topic: topic, Failed: []broker.FailedEvent{{Index: i, ID: bad.ID,
			Err: &eventkit.SizeError{ID: bad.ID, Size: 2 << 20, Limit: 1 << 20, Where: "nats max_payload"}}}}
	}
	relay := rf.new(t, h, rec, cfg)
	sent := map[string][]string{}
	evs := []eventkit.Event{bad}
	for i := 1; i <= 6; i++ {
		evs = append(evs, Event(fmt.Sprint("s", 1+i%2), i)) // s1 and s2 behind the bad one
	}
	for _, e := range evs[1:] {
		sent[e.Subject] = append(sent[e.Subject], e.ID)
	}
	AddCommit(t, ctx, h, "t1", evs...)
	StartRelay(t, relay)
	WaitFor(t, 10*time.Second, "first rejection", func() bool { return relay.Stats().Rejected >= 1 })
	sent["s2"] = append(sent["s2"], more.ID)
	AddCommit(t, ctx, h, "t1", more)
	WaitFor(t, 10*time.Second, "s2 delivered past the rejected event", func() bool { return distinct(rec.Events())[more.ID] })
	// While the bad event waits for its retries, no later event of its
	// subject may reach the broker: it would be ahead of it.
	for _, p := range rec.Events() {
		if p.Event.Subject == "s1" && relay.Stats().Parked == 0 {
			t.Fatalf("s1 event %s published while the earlier rejected s1 event was still being retried", p.Event.ID)
		}
	}
	WaitFor(t, 10*time.Second, "parked", func() bool { return relay.Stats().Parked == 1 })
	WaitFor(t, 10*time.Second, "s1 followers delivered", func() bool { return len(distinct(rec.Events())) == len(evs) })
	got := eventsOf(rec.Events())
	if _, err := CheckStream(got, sent); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, "backlog drained", func() bool {
		st, err := h.Store.Status(ctx)
		return err == nil && st.Backlog == 0
	})
	// The s1 events behind the bad one went out once, after it was parked
	// (its last attempt came after everything then at the broker).
	got = eventsOf(rec.Events())
	copies := map[string]int{}
	firstAt := map[string]int{}
	for i, e := range got {
		if copies[e.ID] == 0 {
			firstAt[e.ID] = i
		}
		copies[e.ID]++
	}
	for _, id := range sent["s1"] {
		if copies[id] != 1 {
			t.Errorf("s1 event %s published %d times, want once", id, copies[id])
		}
		if int64(firstAt[id]) < parkedAt.Load() {
			t.Errorf("s1 event %s published at %d, before the rejected s1 event's last attempt (at %d)", id, firstAt[id], parkedAt.Load())
		}
	}
	st, err := h.Store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ParkedCount != 1 || len(st.Parked) != 1 || st.Parked[0].ID != bad.ID || st.Parked[0].Attempts != 3 ||
		!strings.Contains(st.Parked[0].Reason, "over the limit") {
		t.Fatalf("status parked: %+v", st.Parked)
	}
	if st.Backlog != 0 {
		t.Fatalf("backlog %d", st.Backlog)
	}
	if s := relay.Stats(); s.Rejected != 3 || s.PublishErrors != held.Load() || s.Delivered != int64(len(evs)) {
		t.Fatalf("stats %v (%d held attempts)", s, held.Load())
	}
}

// testHA: two relays on one outbox, 2,000 events over 20 subjects written
// while they run; the leader is stopped mid-stream and the standby takes
// over: no loss, per-subject order kept.
func testHA(t *testing.T, h Harness, rf RelayFactory) {
	ctx := ctxT(t)
	rec := &Recorder{}
	cfg := fastConfig(t)
	cfg.BatchSize = 50
	other := h.Store
	if h.NewStore != nil {
		other = h.NewStore(t)
	}
	h2 := h
	h2.Store = other
	r1 := rf.new(t, h, rec, cfg)
	r2 := rf.new(t, h2, rec, cfg)
	stop1 := StartRelay(t, r1)
	WaitFor(t, 5*time.Second, "r1 leads", r1.IsLeader)
	stop2 := StartRelay(t, r2)

	const total, subjects = 2000, 20
	sent := map[string][]string{}
	writerDone := make(chan struct{})
	var werr error
	go func() {
		defer close(writerDone)
		for i := 0; i < total; i += 20 {
			tx, err := h.Begin(ctx)
			if err != nil {
				werr = err
				return
			}
			for j := i; j < i+20; j++ {
				e := Event(fmt.Sprint("s", j%subjects), j)
				if err := tx.Add(ctx, "orders", e); err != nil {
					werr = err
					return
				}
				sent[e.Subject] = append(sent[e.Subject], e.ID)
			}
			if err := tx.Commit(ctx); err != nil {
				werr = err
				return
			}
		}
	}()
	WaitFor(t, 60*time.Second, "a third delivered", func() bool { return len(rec.Events()) >= total/3 })
	if h.Partitions > 1 {
		// The partitions are shared: r2 joins and takes half of them.
		WaitFor(t, 10*time.Second, "r2 takes its share of the partitions", func() bool {
			h1, h2 := r1.Health(), r2.Health()
			return len(h1.Partitions) == h.Partitions/2 && len(h2.Partitions) == h.Partitions/2
		})
		if p1, p2 := r1.Health().Partitions, r2.Health().Partitions; slices.ContainsFunc(p1, func(p int) bool { return slices.Contains(p2, p) }) {
			t.Fatalf("a partition with two leaders: r1 %v, r2 %v", p1, p2)
		}
	} else {
		if r2.IsLeader() {
			t.Fatal("two leaders")
		}
		WaitFor(t, 5*time.Second, "r2 says it is a standby", func() bool {
			hl := r2.Health()
			return hl.Ready() && hl.Status() == "standby"
		})
	}
	stop1() // stop a leading relay mid-stream
	WaitFor(t, 10*time.Second, "the other takes over", func() bool {
		return r2.IsLeader() && len(r2.Health().Partitions) == max(h.Partitions, 1)*boolInt(h.Partitions > 1)
	})
	<-writerDone
	if werr != nil {
		t.Fatal(werr)
	}
	WaitFor(t, 60*time.Second, "all delivered", func() bool { return len(distinct(rec.Events())) == total })
	dups, err := CheckStream(eventsOf(rec.Events()), sent)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("HA: r1 %v; r2 %v; %d duplicates", r1.Stats(), r2.Stats(), dups)
	if dups > cfg.BatchSize {
		t.Fatalf("%d duplicates: more than one batch", dups)
	}
	stop2()
}

func testRetention(t *testing.T, h Harness, rf RelayFactory) {
	ctx := ctxT(t)
	rec := &Recorder{}
	cfg := fastConfig(t)
	cfg.Retention = time.Hour
	relay := rf.new(t, h, rec, cfg)
	stop := StartRelay(t, relay)
	var evs []eventkit.Event
	for i := range 10 {
		evs = append(evs, Event("a", i))
	}
	AddCommit(t, ctx, h, "t1", evs...)
	WaitFor(t, 10*time.Second, "delivered", func() bool { return relay.Stats().Delivered == 10 })
	st, err := h.Store.Status(ctx)
	if err != nil || st.Backlog != 0 || st.Delivered != 10 {
		t.Fatalf("retained: %+v %v", st, err)
	}
	stop()
	cfg.Retention = time.Millisecond
	cfg.CleanupInterval = 20 * time.Millisecond
	relay2 := rf.new(t, h, rec, cfg)
	StartRelay(t, relay2)
	WaitFor(t, 10*time.Second, "background cleanup", func() bool {
		st, err := h.Store.Status(ctx)
		return err == nil && st.Delivered == 0
	})
	if n := len(rec.Events()); n != 10 {
		t.Fatalf("%d published (delivered events were published again?)", n)
	}
}

func testWake(t *testing.T, h Harness, rf RelayFactory) {
	ctx := ctxT(t)
	rec := &Recorder{}
	cfg := fastConfig(t)
	cfg.PollInterval = time.Minute // only a wake-up can deliver in time
	relay := rf.new(t, h, rec, cfg)
	StartRelay(t, relay)
	WaitFor(t, 5*time.Second, "leader", relay.IsLeader)
	time.Sleep(200 * time.Millisecond) // listening
	var worst time.Duration
	for i := range 5 {
		e := Event("a", i)
		t0 := time.Now()
		AddCommit(t, ctx, h, "t1", e)
		WaitFor(t, 5*time.Second, "woken delivery", func() bool { return distinct(rec.Events())[e.ID] })
		worst = max(worst, time.Since(t0))
		time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond)
	}
	t.Logf("commit-to-publish latency with a 1m poll interval: worst of 5 %v", worst)
}
