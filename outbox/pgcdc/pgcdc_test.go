package pgcdc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// Test tables, slots and publications are named cdct_<random>, so that a
// sweep can drop what a killed test run left behind.
const prefix = "cdct"

func TestMain(m *testing.M) {
	sweep()
	goleak.VerifyTestMain(m)
}

// sweep drops inactive slots that earlier, killed test runs of this
// package left behind (a slot left behind pins WAL). Test names carry their
// creation time, so slots of a test running right now are left alone.
func sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := os.Getenv(testenv.Postgres.EnvVar)
	if url == "" {
		url = testenv.Postgres.Default
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'eventkit\_%\_`+prefix+`\_%' AND NOT active`)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, n := range names {
		// eventkit_[<database>_]cdct_<unix hex>_<random>[_<hash>|_raw|...]
		m := sweepRe.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		sec, err := strconv.ParseInt(m[1], 16, 64)
		if err != nil || time.Since(time.Unix(sec, 0)) < 15*time.Minute {
			continue
		}
		_, _ = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, n)
	}
}

var sweepRe = regexp.MustCompile(`_` + prefix + `_([0-9a-f]{8})_[0-9a-f]{12}`)

// tableName is unique and carries its creation time (see sweep).
func tableName() string { return testenv.Name(fmt.Sprintf("%s_%x", prefix, time.Now().Unix())) }

type env struct {
	t     testing.TB
	pool  *pgxpool.Pool
	store *pgoutbox.Store
	cfg   pgcdc.Config
	// slot and pub are the relay's default names, resolved by Setup.
	slot, pub string
}

func newPool(t testing.TB) *pgxpool.Pool { return newPoolOn(t, testenv.Postgres.URL(t)) }

func newPoolOn(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	pc.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newEnv creates a migrated outbox table and the relay's slot and
// publication, all dropped with t (even when the test fails).
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOn(t, testenv.Postgres.URL(t), tableName())
}

// newEnvOn is newEnv on the database of url, with the given table;
// prepare runs after the migration, before Setup.
func newEnvOn(t testing.TB, url, table string, prepare ...func(*pgxpool.Pool)) *env {
	t.Helper()
	pool := newPoolOn(t, url)
	store, err := pgoutbox.New(pool, pgoutbox.Config{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pool: pool, store: store, cfg: pgcdc.Config{
		Table: table, FeedbackInterval: 100 * time.Millisecond,
		RelayConfig: outbox.RelayConfig{
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			LockRetryInterval: 100 * time.Millisecond, StatusInterval: -1, RetryDelay: 50 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		},
	}}
	admin := e.relay(nil)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := admin.Teardown(cctx); err != nil {
			t.Errorf("teardown: %v", err)
		}
		_, _ = pool.Exec(cctx, `DROP TABLE IF EXISTS `+table+`; DROP TABLE IF EXISTS `+table+`_migrations; DROP FUNCTION IF EXISTS `+table+`_notify()`)
	})
	for _, p := range prepare {
		p(pool)
	}
	if err := admin.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	e.slot, e.pub = admin.Config().Slot, admin.Config().Publication
	return e
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) relay(pub *outboxtest.Recorder, mods ...func(*pgcdc.Config)) *pgcdc.Relay {
	e.t.Helper()
	cfg := e.cfg
	for _, m := range mods {
		m(&cfg)
	}
	var r *pgcdc.Relay
	var err error
	if pub == nil {
		r, err = pgcdc.New(e.pool, nil, cfg)
	} else {
		r, err = pgcdc.New(e.pool, pub, cfg)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// start runs r until the returned stop is called (or the test ends).
func start(t testing.TB, r *pgcdc.Relay) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return within 15s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// insert commits one transaction adding events to topic.
func (e *env) insert(topic string, evs ...eventkit.Event) {
	e.t.Helper()
	ctx := context.Background()
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := e.store.Add(ctx, tx, topic, evs...); err != nil {
		e.t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) rows() int64 {
	e.t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+e.cfg.Table).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) slotLSN(slot string) pglogrepl.LSN {
	e.t.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s); err != nil {
		e.t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		e.t.Fatal(err)
	}
	return lsn
}

// currentLSN returns the WAL insert position: past the end of every
// transaction committed before the call. (pg_current_wal_lsn is the write
// position, which with synchronous_commit = off, as on the private test
// server of scripts/pgtemp.sh, can still be before commits that returned.)
// writeLSN returns the WAL write position (pg_current_wal_lsn).
func (e *env) writeLSN() pglogrepl.LSN {
	e.t.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		e.t.Fatal(err)
	}
	lsn, _ := pglogrepl.ParseLSN(s)
	return lsn
}

func (e *env) currentLSN() pglogrepl.LSN {
	e.t.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		e.t.Fatal(err)
	}
	lsn, _ := pglogrepl.ParseLSN(s)
	return lsn
}

func ev(subject string, i int) eventkit.Event {
	return eventkit.New("test.happened", "application/json", []byte(fmt.Sprintf(`{"n":%d}`, i)), eventkit.WithSubject(subject))
}

func ids(evs []outboxtest.Published) []string {
	out := make([]string, len(evs))
	for i, p := range evs {
		out[i] = p.Event.ID
	}
	return out
}

func TestSetupTeardownIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.relay(nil)
	if err := r.Setup(ctx); err != nil { // second time: no-op
		t.Fatal(err)
	}
	st, err := r.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.SlotExists || !st.PublicationExists || st.Active || st.WALStatus == "" {
		t.Fatalf("status after setup: %+v", st)
	}
	var temporary bool
	var plugin string
	if err := e.pool.QueryRow(ctx, `SELECT temporary, plugin FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&temporary, &plugin); err != nil {
		t.Fatal(err)
	}
	if temporary || plugin != "pgoutput" {
		t.Fatalf("slot temporary=%v plugin=%q, want durable pgoutput", temporary, plugin)
	}
	if err := r.Run(ctx); err == nil || !errors.Is(err, pgcdc.ErrNoPublisher) {
		t.Fatalf("Run without publisher: %v", err)
	}
	for range 2 {
		if err := r.Teardown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st, err = r.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.SlotExists || st.PublicationExists {
		t.Fatalf("status after teardown: %+v", st)
	}
	if _, err := r.Lag(ctx); !errors.Is(err, pgcdc.ErrSlotNotFound) {
		t.Fatalf("Lag without slot: %v", err)
	}
	rec := &outboxtest.Recorder{}
	if err := e.relay(rec).Run(ctx); !errors.Is(err, pgcdc.ErrSlotNotFound) {
		t.Fatalf("Run without slot: %v", err)
	}
	// A publication of the same name on another table is not taken over.
	other := testenv.Name(prefix)
	if _, err := e.pool.Exec(ctx, `CREATE TABLE `+other+` (x int)`); err != nil {
		t.Fatal(err)
	}
	defer e.pool.Exec(context.Background(), `DROP TABLE `+other) //nolint:errcheck
	if _, err := e.pool.Exec(ctx, `CREATE PUBLICATION `+e.pub+` FOR TABLE `+other); err != nil {
		t.Fatal(err)
	}
	if err := r.Setup(ctx); !errors.Is(err, pgcdc.ErrMismatch) {
		t.Fatalf("Setup with a foreign publication: %v", err)
	}
	if _, err := pgcdc.New(e.pool, nil, pgcdc.Config{Slot: "Bad-Name"}); !errors.Is(err, pgcdc.ErrInvalidName) {
		t.Fatalf("bad slot name: %v", err)
	}
}

func TestRoundTripAndCleanup(t *testing.T) {
	e := newEnv(t)
	rec := &outboxtest.Recorder{Next: memorybroker.New(memorybroker.Options{})}
	r := e.relay(rec)
	start(t, r)
	tm := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	full := eventkit.Event{ID: "e-full", Type: "order.created", Source: "/orders", Subject: "o-1", Time: tm,
		DataVersion: "2", DataContentType: "application/octet-stream", DataSchema: "https://example.com/s",
		Data: []byte{0, 1, 2, 0xff, '\\', 'x'}, Extensions: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "correlationid": "c\"1"}}
	bare := eventkit.Event{ID: "e-bare", Type: "t", Source: "s", Time: tm}
	empty := eventkit.Event{ID: "e-empty", Type: "t", Source: "s", Time: tm, Data: []byte{}}
	e.insert("orders", full, bare, empty)
	testenv.WaitFor(t, 10*time.Second, "3 events", func() bool { return len(rec.Events()) >= 3 })
	got := rec.Events()
	stamped := full.Clone() // the store's subject sequence stamp
	stamped.Extensions[eventkit.SubjectSeqExtension] = "1"
	want := []eventkit.Event{stamped, bare, empty}
	for i, w := range want {
		g := got[i]
		if g.Topic != "orders" {
			t.Errorf("topic %q", g.Topic)
		}
		w.Time = w.Time.UTC()
		if len(w.Data) == 0 && len(g.Event.Data) == 0 { // nil and empty are the same (as for the polling relay)
			w.Data, g.Event.Data = nil, nil
		}
		if fmt.Sprintf("%#v", g.Event) != fmt.Sprintf("%#v", w) {
			t.Errorf("event %d:\n got %#v\nwant %#v", i, g.Event, w)
		}
	}
	// Delivered rows are deleted, and the slot moves past the transaction.
	testenv.WaitFor(t, 10*time.Second, "rows deleted", func() bool { return e.rows() == 0 })
	after := e.currentLSN()
	testenv.WaitFor(t, 10*time.Second, "slot to advance", func() bool { return e.slotLSN(e.slot) >= after })
	st, err := r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Active || st.ActivePID == 0 || st.Outbox.Backlog != 0 {
		t.Fatalf("status while running: %+v", st)
	}
	if s := r.Stats(); s.Delivered != 3 || !s.Streaming {
		t.Fatalf("stats: %+v", s)
	}
}

func TestRetentionMarksDelivered(t *testing.T) {
	e := newEnv(t)
	rec := &outboxtest.Recorder{}
	r := e.relay(rec, func(c *pgcdc.Config) { c.Retention = time.Hour })
	start(t, r)
	e.insert("a", ev("s", 1), ev("s", 2))
	testenv.WaitFor(t, 10*time.Second, "marked delivered", func() bool {
		var n int64
		_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+e.cfg.Table+` WHERE delivered_at IS NOT NULL`).Scan(&n)
		return n == 2
	})
}

// Transactions are delivered in commit order, not in seq (insert) order:
// a transaction that took lower seqs but commits later comes later.
func TestCommitOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rec := &outboxtest.Recorder{}
	r := e.relay(rec)
	start(t, r)
	// Rows committed before the relay leads are backfilled from the table,
	// in seq order; commit order is the stream's.
	testenv.WaitFor(t, 10*time.Second, "streaming", func() bool { return r.Stats().Streaming })

	// A inserts first (lower seqs) and commits last.
	txA, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = txA.Rollback(ctx) }()
	a1, a2 := ev("x", 1), ev("y", 2)
	if err := e.store.Add(ctx, txA, "t1", a1, a2); err != nil {
		t.Fatal(err)
	}
	// Other subjects than A's: writers of one subject wait for each
	// other's commit in Add (the subject sequence's row lock).
	b1, b2, b3 := ev("p", 3), ev("z", 4), ev("x", 5)
	e.insert("t1", b1, b2)
	e.insert("t2", b3) // another topic: its own sequence
	c1 := ev("q", 6)
	e.insert("t1", c1)
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	d1 := ev("y", 7)
	e.insert("t1", d1)
	testenv.WaitFor(t, 10*time.Second, "7 events", func() bool { return len(rec.Events()) >= 7 })
	var t1 []string
	for _, p := range rec.Events() {
		if p.Topic == "t1" {
			t1 = append(t1, p.Event.ID)
		}
	}
	want := []string{b1.ID, b2.ID, c1.ID, a1.ID, a2.ID, d1.ID}
	if fmt.Sprint(t1) != fmt.Sprint(want) {
		t.Fatalf("topic t1 order:\n got %v\nwant %v (commit order)", t1, want)
	}
	if len(rec.Events()) != 7 {
		t.Fatalf("got %d events, want 7", len(rec.Events()))
	}
}

// While the broker fails, the slot does not move past the unpublished
// transaction and the rows stay; when it heals everything is delivered,
// even across a relay restart during the outage (after which the new
// leader backfills the waiting rows from the table and may skip its slot).
func TestBrokerOutage(t *testing.T) {
	e := newEnv(t)
	var failing sync.Mutex
	down := true
	rec := &outboxtest.Recorder{}
	rec.SetFail(func(topic string, events []eventkit.Event) error {
		failing.Lock()
		defer failing.Unlock()
		if down {
			return errors.New("broker unavailable")
		}
		return nil
	})
	r := e.relay(rec)
	stop := start(t, r)
	slot := e.slot
	testenv.WaitFor(t, 10*time.Second, "streaming", func() bool { return r.Stats().Streaming })
	var sent []string
	var first pglogrepl.LSN // past the end of the first transaction, before the second's
	for i := range 5 {
		x, y := ev("k", 2*i), ev("k", 2*i+1)
		sent = append(sent, x.ID, y.ID)
		e.insert("t", x, y)
		if i == 0 {
			first = e.currentLSN()
		}
	}
	after := e.currentLSN()
	testenv.WaitFor(t, 10*time.Second, "publish failures", func() bool { return r.Stats().PublishErrors >= 3 })
	time.Sleep(300 * time.Millisecond) // several status intervals
	if got := e.slotLSN(slot); got >= first {
		t.Fatalf("slot confirmed %s, past the first unpublished transaction (which ends before %s)", got, first)
	}
	if n := e.rows(); n != 10 {
		t.Fatalf("%d rows in the outbox during the outage, want 10", n)
	}
	// Restart the relay while the broker is still down.
	stop()
	r2 := e.relay(rec)
	start(t, r2)
	testenv.WaitFor(t, 10*time.Second, "publish failures after restart", func() bool { return r2.Stats().PublishErrors >= 2 })
	// The new leader lists the 10 waiting rows and backfills them from the
	// table, so it may skip its slot past their transactions (see Backfill
	// in the package doc): what must hold is that no row was completed while
	// the broker is down, and that they are all delivered once it heals.
	if n := e.rows(); n != 10 {
		t.Fatalf("%d rows in the outbox after the restart during the outage, want 10", n)
	}
	failing.Lock()
	down = false
	failing.Unlock()
	testenv.WaitFor(t, 10*time.Second, "delivery after the outage", func() bool { return len(rec.Events()) >= 10 })
	testenv.WaitFor(t, 10*time.Second, "slot to advance", func() bool { return e.slotLSN(slot) >= after })
	got := ids(rec.Events())
	if fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("got %v\nwant %v", got, sent)
	}
	testenv.WaitFor(t, 10*time.Second, "rows deleted", func() bool { return e.rows() == 0 })
}

// An event the broker rejects permanently is parked (the row stays with the
// reason) and the stream goes on.
func TestPermanentRejectionParks(t *testing.T) {
	e := newEnv(t)
	bad := ev("s", 2)
	rec := &outboxtest.Recorder{}
	rec.SetFail(func(topic string, events []eventkit.Event) error {
		for i, x := range events {
			if x.ID == bad.ID {
				return &broker.PublishError{Topic: topic, Failed: []broker.FailedEvent{{Index: i, ID: x.ID, Err: eventkit.Permanent(errors.New("too spicy"))}}}
			}
		}
		return nil
	})
	r := e.relay(rec)
	start(t, r)
	e.insert("t", ev("s", 1), bad, ev("s", 3))
	e.insert("t", ev("s", 4))
	testenv.WaitFor(t, 10*time.Second, "3 good events", func() bool { return len(rec.Events()) >= 3 })
	testenv.WaitFor(t, 10*time.Second, "parked row to remain alone", func() bool { return e.rows() == 1 })
	st, err := r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Outbox.ParkedCount != 1 || len(st.Outbox.Parked) != 1 || st.Outbox.Parked[0].ID != bad.ID ||
		!strings.Contains(st.Outbox.Parked[0].Reason, "too spicy") {
		t.Fatalf("parked: %+v", st.Outbox)
	}
	if s := r.Stats(); s.Parked != 1 || s.Delivered != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// The CDC relay takes the outbox's leadership lock, so it never runs at
// the same time as the polling relay (or a second CDC relay) on a table.
func TestLeadershipLock(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	lock, err := e.store.TryLock(ctx) // as a polling relay would
	if err != nil || lock == nil {
		t.Fatalf("TryLock: %v %v", lock, err)
	}
	rec := &outboxtest.Recorder{}
	r := e.relay(rec)
	start(t, r)
	e.insert("t", ev("a", 1))
	time.Sleep(400 * time.Millisecond)
	if n := len(rec.Events()); n != 0 || r.Stats().Streaming {
		t.Fatalf("relay published %d events (streaming %v) while another relay held the lock", n, r.Stats().Streaming)
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "delivery after the lock is free", func() bool { return len(rec.Events()) == 1 })
}

// An idle outbox does not pin WAL: with other tables busy, the slot
// follows the server's WAL end; and a lag over the threshold is logged.
func TestIdleSlotAdvancesAndLagWarning(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var logs testenv.SyncBuffer
	lm := &lagMetrics{}
	if _, err := pgcdc.NewOTelMetrics(noop.NewMeterProvider()); err != nil {
		t.Fatal(err)
	}
	rec := &outboxtest.Recorder{}
	r := e.relay(rec, func(c *pgcdc.Config) {
		c.HeartbeatInterval = 100 * time.Millisecond
		c.LagInterval = 50 * time.Millisecond
		c.LagWarnBytes = 1
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.Metrics = lm
	})
	slot := e.slot
	before := e.slotLSN(slot)
	other := testenv.Name(prefix)
	if _, err := e.pool.Exec(ctx, `CREATE TABLE `+other+` (x int)`); err != nil {
		t.Fatal(err)
	}
	defer e.pool.Exec(context.Background(), `DROP TABLE `+other) //nolint:errcheck
	if _, err := e.pool.Exec(ctx, `INSERT INTO `+other+` SELECT generate_series(1, 10000)`); err != nil {
		t.Fatal(err)
	}
	after := e.currentLSN()
	written := e.writeLSN() // Lag measures from the write position
	if lag, err := r.Lag(ctx); err != nil || lag < int64(written-before) {
		t.Fatalf("Lag before the relay runs = %d, %v; want >= %d", lag, err, written-before)
	}
	start(t, r)
	testenv.WaitFor(t, 10*time.Second, "idle slot to advance", func() bool { return e.slotLSN(slot) >= after })
	testenv.WaitFor(t, 5*time.Second, "heartbeats", func() bool { return r.Stats().Heartbeats > 0 })
	testenv.WaitFor(t, 5*time.Second, "lag warning", func() bool { return strings.Contains(logs.String(), "FALLING BEHIND") })
	if len(rec.Events()) != 0 {
		t.Fatalf("published %d events from other tables", len(rec.Events()))
	}
	if lm.max.Load() <= 0 {
		t.Fatal("no slot lag reported to Metrics")
	}
}

// lagMetrics keeps the largest lag reported: once the relay has caught up
// the last report may well be 0.
type lagMetrics struct {
	nop
	max atomic.Int64
}

func (l *lagMetrics) SlotLag(b int64) {
	for {
		cur := l.max.Load()
		if b <= cur || l.max.CompareAndSwap(cur, b) {
			return
		}
	}
}

type nop struct{}

func (nop) Delivered(int)                              {}
func (nop) PublishLatency(string, time.Duration, bool) {}
func (nop) Error(string)                               {}
func (nop) Parked(string, int)                         {}
func (nop) Backlog(int64, time.Duration, int64)        {}

// A transaction larger than BatchSize is published in several rounds, in
// order; a row that is not a valid event (written around Store.Add) is
// parked and does not stop the stream.
func TestLargeTransactionAndBadRow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rec := &outboxtest.Recorder{}
	r := e.relay(rec, func(c *pgcdc.Config) { c.BatchSize = 100 })
	start(t, r)
	var want []string
	evs := make([]eventkit.Event, 1050)
	for i := range evs {
		evs[i] = ev(fmt.Sprintf("s%d", i%3), i)
		want = append(want, evs[i].ID)
	}
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := e.store.Add(ctx, tx, "big", evs[:500]...); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+e.cfg.Table+` (topic, id, type, source, event_time) VALUES ('big', 'bad-1', 't', 's', 'not a time')`); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Add(ctx, tx, "big", evs[500:]...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "1050 events", func() bool { return len(rec.Events()) >= len(evs) })
	if got := ids(rec.Events()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order differs (got %d events)", len(got))
	}
	testenv.WaitFor(t, 10*time.Second, "only the bad row left", func() bool { return e.rows() == 1 })
	var reason string
	if err := e.pool.QueryRow(ctx, `SELECT last_error FROM `+e.cfg.Table+` WHERE id = 'bad-1' AND parked_at IS NOT NULL`).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reason, "not a time") {
		t.Fatalf("parked reason %q", reason)
	}
	// The stats of the last batch are counted just after its rows are
	// deleted, so they may lag the table for a moment.
	testenv.WaitFor(t, 10*time.Second, "11 batches and 1 parked row in the stats", func() bool {
		s := r.Stats()
		return s.Batches >= 11 && s.Parked == 1
	})
}

// Concurrent Setups agree; Teardown of a slot in use disconnects the relay,
// which then stops with ErrSlotNotFound instead of retrying forever.
func TestConcurrentSetupAndTeardownWhileRunning(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- e.relay(nil).Setup(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Setup: %v", err)
		}
	}
	rec := &outboxtest.Recorder{}
	r := e.relay(rec)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	testenv.WaitFor(t, 10*time.Second, "streaming", func() bool { return r.Stats().Streaming })
	if err := e.relay(nil).Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, pgcdc.ErrSlotNotFound) {
			t.Fatalf("Run after the slot was dropped: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not stop after the slot was dropped")
	}
}

// While the broker is down and the relay's queue is full, the relay still
// talks to the server, so a short wal_sender_timeout does not cut it off.
func TestStaysConnectedWhileBrokerDown(t *testing.T) {
	e := newEnv(t)
	pc, err := pgxpool.ParseConfig(testenv.Postgres.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig.RuntimeParams["wal_sender_timeout"] = "1s" // the relay's connections copy these
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var mu sync.Mutex
	down := true
	rec := &outboxtest.Recorder{}
	rec.SetFail(func(string, []eventkit.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return errors.New("broker unavailable")
		}
		return nil
	})
	cfg := e.cfg
	cfg.QueueSize = 1
	cfg.FeedbackInterval = 100 * time.Millisecond
	r, err := pgcdc.New(pool, rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	testenv.WaitFor(t, 10*time.Second, "streaming", func() bool { return r.Stats().Streaming })
	walsender := func() (pid int32) {
		_ = e.pool.QueryRow(context.Background(), `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&pid)
		return pid
	}
	pid := walsender()
	for i := range 10 {
		e.insert("t", ev("s", i))
	}
	time.Sleep(3 * time.Second) // 3 times the timeout, with the queue full
	if s := r.Stats(); s.Reconnects != 0 {
		t.Fatalf("relay was disconnected while the broker was down: %+v", s)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	testenv.WaitFor(t, 10*time.Second, "delivery", func() bool { return len(rec.Events()) == 10 })
	time.Sleep(300 * time.Millisecond)
	if s, now := r.Stats(), walsender(); s.Reconnects != 0 || now != pid || pid == 0 {
		t.Fatalf("the server dropped the relay's connection (walsender %d, now %d): %+v", pid, now, s)
	}
}
