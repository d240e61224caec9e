package eventkittest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the default scenario database

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/outbox/sqliteoutbox"
)

// ErrCrashBeforeCommit is the error the CrashBeforeCommit fault makes the
// first attempt of every event end with, after the handler returned nil and
// before the inbox transaction commits (it is rolled back).
var ErrCrashBeforeCommit = errors.New("eventkittest: injected crash before commit")

// TB is the part of testing.TB the runner uses (*testing.T implements it).
type TB interface {
	Helper()
	TempDir() string
	Cleanup(func())
	Fatal(args ...any)
}

// A Fault is one named fault configuration of a scenario.
type Fault struct {
	Name   string
	Faults Faults
	// CrashBeforeCommit rolls back the inbox transaction of every event's
	// first attempt after the handler succeeded, as a crash between the
	// handler and the commit would: writes in the transaction vanish,
	// effects outside it (an HTTP call, a counter in memory) stay, and the
	// event is handled again.
	CrashBeforeCommit bool
}

// DefaultFaults are the faults Run drives a handler through, each alone.
// The first one, "NoFault", is the baseline.
func DefaultFaults() []Fault {
	return []Fault{
		{Name: "NoFault"},
		{Name: "DroppedAcks", Faults: Faults{DropAckEvery: 1}},
		{Name: "Duplicates", Faults: Faults{Duplicates: 2}},
		{Name: "ConcurrentDuplicates", Faults: Faults{Concurrent: 3}},
		{Name: "Reordered", Faults: Faults{ReorderEvery: 2, ReorderDelay: 50 * time.Millisecond}},
		{Name: "Delayed", Faults: Faults{Delay: 5 * time.Millisecond}},
		{Name: "PublishFails", Faults: Faults{FailPublish: 1}},
		{Name: "Disconnect", Faults: Faults{DisconnectAfter: 1, DisconnectFor: 2}},
		{Name: "CrashBeforeCommit", CrashBeforeCommit: true},
	}
}

// A Scenario is a handler, the events it is given and the check of the end
// state, which Run repeats under every fault.
type Scenario struct {
	// Events are published to Topic, in order, one Publish call each (a
	// failed call is retried, as the outbox relay does).
	Events []eventkit.Event
	// Handler returns the handler under test, on the run's database. With
	// the inbox (the default) the handler runs in the inbox transaction:
	// sqlinbox.Tx(ctx) is a *sql.Tx of db, and the writes through it commit
	// with the inbox key.
	Handler func(db *sql.DB) consumer.Handler
	// Setup creates the handler's tables in a fresh database (optional).
	Setup func(ctx context.Context, db *sql.DB) error
	// Check inspects the end state once every event was acked or
	// dead-lettered and returns an error if it is wrong.
	Check func(ctx context.Context, db *sql.DB, r Result) error
	// DB opens the database for one fault run (default: a new SQLite file
	// in t.TempDir()). The inbox table is named uniquely per run.
	DB func(t TB) (*sql.DB, sqlinbox.Dialect)
	// Faults to run (default DefaultFaults()).
	Faults []Fault
	// Topic and Group (default "eventkittest" and "handler").
	Topic, Group string
	// Consumer is the consumer configuration; Inbox is set by the runner
	// and Concurrency raised to Fault.Faults.Concurrent where needed
	// (default: Concurrency 4, fast retries).
	Consumer consumer.Config
	// NoInbox runs the handler without an inbox (and without a
	// transaction in its context): to show what the inbox protects from.
	NoInbox bool
	// Timeout bounds one fault run (default 30s).
	Timeout time.Duration
}

// Result is what one fault run observed.
type Result struct {
	Fault    Fault
	Injected Stats          // what the fault broker did
	Consumer consumer.Stats // what the consumer runtime counted
	Crashes  int            // CrashBeforeCommit rollbacks
}

// Run runs s under each of its faults as a subtest, failing the subtest when
// the run cannot complete, the fault did not happen, or Check fails.
func Run(t *testing.T, s Scenario) {
	t.Helper()
	faults := s.Faults
	if faults == nil {
		faults = DefaultFaults()
	}
	for _, f := range faults {
		t.Run(f.Name, func(t *testing.T) {
			if _, err := RunFault(t, s, f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// RunFault runs s once under f: a fresh database and inbox, a memory broker
// wrapped in a FaultBroker, the consumer runtime with the inbox, the events
// published, and, once all are settled, Check. It returns an error if any
// step fails, if f injected nothing (the scenario did not test the fault),
// or if Check fails.
func RunFault(t TB, s Scenario, f Fault) (Result, error) {
	res := Result{Fault: f}
	if s.Handler == nil || s.Check == nil {
		return res, errors.New("eventkittest: a Scenario needs a Handler and a Check")
	}
	if len(s.Events) == 0 {
		return res, errors.New("eventkittest: a Scenario needs Events")
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	topic, group := s.Topic, s.Group
	if topic == "" {
		topic = "eventkittest"
	}
	if group == "" {
		group = "handler"
	}
	db, dialect := openDB(t, s)
	if s.Setup != nil {
		if err := s.Setup(ctx, db); err != nil {
			return res, fmt.Errorf("eventkittest: setup: %w", err)
		}
	}

	cfg := s.Consumer
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Retry == (consumer.RetryPolicy{}) {
		cfg.Retry = consumer.RetryPolicy{MaxAttempts: 10, Initial: time.Millisecond, Max: 20 * time.Millisecond}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = time.Second
	}
	if f.Faults.Concurrent > 1 {
		// Copies of one event must be able to run at once.
		cfg.Concurrency = max(cfg.Concurrency, f.Faults.Concurrent)
		cfg.OrderedBySubject, cfg.StrictOrder = false, false
		if size, wait := cfg.Mode.Batch(); size > 0 {
			cfg.Mode = consumer.Batched(size, wait)
		} else {
			cfg.Mode = consumer.Unordered()
		}
	}
	mem := memorybroker.New(memorybroker.Options{})
	defer func() { _ = mem.Close(context.Background()) }()
	fb := NewFaultBroker(mem, f.Faults)
	cfg.DeadLetterPublisher = mem // dead letters are not the handler's concern
	var crash *crashInbox
	if !s.NoInbox {
		in, err := sqlinbox.New(db, dialect, sqlinbox.Options{Table: uniqueTable()})
		if err != nil {
			return res, err
		}
		if err := in.Migrate(ctx); err != nil {
			return res, err
		}
		cfg.Inbox = in
		if f.CrashBeforeCommit {
			crash = &crashInbox{Inbox: in, seen: map[string]bool{}}
			cfg.Inbox = crash
		}
	} else if f.CrashBeforeCommit {
		return res, errors.New("eventkittest: CrashBeforeCommit needs the inbox")
	}
	c, err := consumer.New(fb, cfg)
	if err != nil {
		return res, err
	}
	if err := c.Handle(topic, group, s.Handler(db)); err != nil {
		return res, err
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx) }()
	stopped := false
	stopConsumer := func() error {
		if stopped {
			return nil
		}
		stopped = true
		stop()
		return <-runErr
	}
	defer func() { _ = stopConsumer() }()
	select {
	case <-c.Ready():
	case err := <-runErr:
		stopped = true
		return res, fmt.Errorf("eventkittest: consumer: %w", err)
	case <-ctx.Done():
		return res, ctx.Err()
	}

	ids := make([]string, len(s.Events))
	for i, ev := range s.Events {
		ids[i] = ev.ID
		if err := publish(ctx, fb, topic, ev); err != nil {
			return res, err
		}
	}
	if err := fb.WaitSettled(ctx, ids); err != nil {
		return res, err
	}
	if err := stopConsumer(); err != nil && !errors.Is(err, context.Canceled) {
		return res, fmt.Errorf("eventkittest: consumer: %w", err)
	}
	res.Injected = fb.Stats()
	res.Consumer = c.Stats()
	if crash != nil {
		res.Crashes = crash.count()
	}
	if err := faultHappened(f, res, len(s.Events)); err != nil {
		return res, err
	}
	if err := s.Check(ctx, db, res); err != nil {
		return res, fmt.Errorf("eventkittest: fault %s: check: %w", f.Name, err)
	}
	return res, nil
}

// faultHappened reports an error when f was configured but nothing was
// injected: the scenario would then pass without testing anything.
func faultHappened(f Fault, r Result, events int) error {
	st, ff := r.Injected, f.Faults
	var missing []string
	if ff.DropAckEvery > 0 && events >= ff.DropAckEvery && st.AcksDropped == 0 {
		missing = append(missing, "no ack was dropped")
	}
	if ff.Duplicates > 0 && st.Duplicated == 0 {
		missing = append(missing, "no event was duplicated")
	}
	if ff.Concurrent > 1 && st.MaxConcurrent < ff.Concurrent {
		missing = append(missing, fmt.Sprintf("at most %d deliveries of an event were in flight at once", st.MaxConcurrent))
	}
	if ff.ReorderEvery > 0 && events >= ff.ReorderEvery && st.Reordered == 0 {
		missing = append(missing, "no event was held back")
	}
	if ff.FailPublish > 0 && events >= ff.FailPublish && st.PublishesFailed == 0 {
		missing = append(missing, "no publish failed")
	}
	if ff.DisconnectAfter > 0 && st.DisconnectedOps == 0 {
		missing = append(missing, "no operation hit the disconnection")
	}
	if f.CrashBeforeCommit && r.Crashes == 0 {
		missing = append(missing, "no transaction was rolled back")
	}
	if len(missing) > 0 {
		return fmt.Errorf("eventkittest: fault %s did not happen: %v", f.Name, missing)
	}
	return nil
}

// publish publishes ev, retrying failed calls as the outbox relay would.
func publish(ctx context.Context, b broker.Publisher, topic string, ev eventkit.Event) error {
	var err error
	for range 20 {
		if err = b.Publish(ctx, topic, ev); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("eventkittest: publish %s: %w", ev.ID, err)
}

func openDB(t TB, s Scenario) (*sql.DB, sqlinbox.Dialect) {
	if s.DB != nil {
		return s.DB(t)
	}
	return OpenSQLite(t)
}

// OpenSQLite opens a new SQLite database file in t.TempDir() with the
// settings the SQL inbox needs (IMMEDIATE transactions, a busy timeout), and
// closes it when the test ends.
func OpenSQLite(t TB) (*sql.DB, sqlinbox.Dialect) {
	t.Helper()
	db, err := sql.Open("sqlite", sqliteoutbox.DSN(filepath.Join(t.TempDir(), "eventkittest.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, sqlinbox.SQLite
}

var (
	tableMu  sync.Mutex
	tableSeq int
)

func uniqueTable() string {
	tableMu.Lock()
	defer tableMu.Unlock()
	tableSeq++
	return fmt.Sprintf("eventkittest_inbox_%d_%d", time.Now().UnixNano()%1e9, tableSeq)
}

// crashInbox rolls back the first transaction of every key after the
// handler succeeded.
type crashInbox struct {
	inbox.Inbox
	mu      sync.Mutex
	seen    map[string]bool
	crashes int
}

func (c *crashInbox) Process(ctx context.Context, key inbox.Key, fn func(ctx context.Context) error) error {
	c.mu.Lock()
	first := !c.seen[key.String()]
	c.seen[key.String()] = true
	c.mu.Unlock()
	if !first {
		return c.Inbox.Process(ctx, key, fn)
	}
	return c.Inbox.Process(ctx, key, func(ctx context.Context) error {
		if err := fn(ctx); err != nil {
			return err
		}
		c.mu.Lock()
		c.crashes++
		c.mu.Unlock()
		return ErrCrashBeforeCommit
	})
}

func (c *crashInbox) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.crashes
}

// HandleInTx runs h on ev the way the consumer runtime does with a SQL
// inbox: in.Process with the key (group, ev.ID), the handler getting the
// inbox transaction in its context (sqlinbox.Tx(ctx) for database/sql,
// sqlinbox.PgxTx(ctx) for pgx). It returns inbox.ErrDuplicate when the
// event was already processed by group. Use it to unit-test a handler that
// needs its transaction, without a broker.
func HandleInTx(ctx context.Context, in inbox.Inbox, group string, h consumer.Handler, ev eventkit.Event) error {
	return in.Process(ctx, inbox.Key{Consumer: group, EventID: ev.ID, EventType: ev.Type},
		func(ctx context.Context) error { return h.HandleEvent(ctx, ev) })
}

// NewSQLiteInbox returns a migrated SQL inbox on a new SQLite database (see
// OpenSQLite), for HandleInTx.
func NewSQLiteInbox(t TB) (*sql.DB, *sqlinbox.Inbox) {
	t.Helper()
	db, d := OpenSQLite(t)
	in, err := sqlinbox.New(db, d, sqlinbox.Options{Table: uniqueTable()})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, in
}
