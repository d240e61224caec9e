// Package demo runs the example services of examples/shop in one process, with
// injected faults, for `eventkit demo`, and checks afterwards that every
// order was decided exactly once.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/debezium"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/outbox"
)

// Service names, also the keys of Config.Stores.
const (
	SvcOrders        = "orders"
	SvcInventory     = "inventory"
	SvcNotifications = "notifications"
	SvcOps           = "ops" // holds the dead-letter table
)

// Config configures a demo run.
type Config struct {
	// Orders to place (default 500).
	Orders int
	// Broker all services use.
	Broker broker.Broker
	// Stores holds each service's database (SvcOrders, SvcInventory,
	// SvcNotifications, SvcOps), opened with OutboxTable(service) as the
	// outbox table. Services may share one database: every table name is
	// prefixed with the service's name.
	Stores map[string]*connect.Store
	// Topics (default DefaultTopics).
	Topics shop.Topics
	// Faults injects faults while the demo runs (default on in the CLI):
	// the orders relay is killed and restarted mid-stream, one ack in ten
	// is lost (the event comes again), one poison event is published, and
	// the inventory consumer is restarted with work in flight.
	Faults bool
	// Progress, if set, is called about ten times a second.
	Progress func(Progress)
	// Logger for the services' components (default: discard).
	Logger *slog.Logger
	// Timeout bounds the whole run (default 3 minutes).
	Timeout time.Duration
	// RelayFormat is how the relays publish: RelayCloudEvents (default,
	// eventkit's own encoding) or RelayDebezium (the messages Debezium's
	// outbox event router publishes for the outbox rows, through
	// debezium.Publisher, read by the consumers through debezium.Wrap).
	RelayFormat string
}

// Relay formats (Config.RelayFormat).
const (
	RelayCloudEvents = "cloudevents"
	RelayDebezium    = "debezium"
)

// DebeziumFormat is the debezium.Format the demo uses on broker b with
// RelayDebezium: docs/debezium.md's Kafka Connect configuration on Kafka
// (debezium.Format{}), Debezium Server's NATS JetStream sink elsewhere
// (headers JSON-encoded).
func DebeziumFormat(b broker.Broker) debezium.Format {
	if b.Capabilities().Name == "kafka" {
		return debezium.Format{}
	}
	return debezium.Format{Headers: debezium.JSON}
}

// DeadLetterTable is the demo's dead-letter table (in the SvcOps store).
const DeadLetterTable = "demo_dead_letters"

// Progress is a snapshot of a running demo.
type Progress struct {
	Target, Placed, Published, Decided, Notified int
}

// Summary is the outcome of a demo run.
type Summary struct {
	Orders           int    `json:"orders_placed"`
	Published        int64  `json:"events_published"`
	Delivered        uint64 `json:"events_handled"`
	Duplicates       uint64 `json:"duplicates_skipped"`
	Retried          uint64 `json:"retried"`
	DeadLettered     uint64 `json:"dead_lettered"`
	LostAcks         int64  `json:"acks_lost_on_purpose"`
	RelayRestarts    int    `json:"relay_restarts"`
	ConsumerRestarts int    `json:"consumer_restarts"`
	PoisonEventID    string `json:"poison_event_id,omitempty"`
	PoisonInDLQ      bool   `json:"poison_in_dead_letters"`
	// Elapsed is printed by eventkit demo --json as elapsed_seconds.
	Elapsed time.Duration `json:"-"`
	// Interrupted is set when the caller's context ended (SIGINT) before
	// the services settled: the figures are what happened until then and
	// no verdict was computed.
	Interrupted bool    `json:"interrupted"`
	Verdict     Verdict `json:"verdict"`
}

// OK reports whether the verdict passed.
func (s Summary) OK() bool { return s.Verdict.OK }

type svc struct {
	st    *connect.Store
	db    shop.DB
	inbox *sqlinbox.Inbox
	add   shop.Outbox
}

// Run runs the demo to the end and returns its summary. An error means the
// demo could not run (a database or the broker failed); a failed
// consistency check is a Summary whose Verdict is not OK.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if cfg.Orders <= 0 {
		cfg.Orders = 500
	}
	if cfg.Topics == (shop.Topics{}) {
		cfg.Topics = shop.DefaultTopics
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	// The relays publish through relayPub, the consumers read through sub.
	var relayPub broker.Publisher = cfg.Broker
	var sub broker.Subscriber = cfg.Broker
	switch cfg.RelayFormat {
	case "", RelayCloudEvents:
	case RelayDebezium:
		f := DebeziumFormat(cfg.Broker)
		p, err := debezium.Publisher(cfg.Broker, f)
		if err != nil {
			return Summary{}, fmt.Errorf("demo: relay format %s needs NATS JetStream, Kafka or the memory broker: %w", RelayDebezium, err)
		}
		relayPub, sub = p, debezium.Wrap(cfg.Broker, f)
	default:
		return Summary{}, fmt.Errorf("demo: unknown relay format %q (%s, %s)", cfg.RelayFormat, RelayCloudEvents, RelayDebezium)
	}
	start := time.Now()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	reg := shop.NewRegistry()
	var sum Summary

	svcs := map[string]*svc{}
	for _, name := range []string{SvcOrders, SvcInventory, SvcNotifications} {
		st := cfg.Stores[name]
		if st == nil {
			return sum, fmt.Errorf("demo: no store for %s", name)
		}
		if st.AddSQL == nil {
			return sum, fmt.Errorf("demo: the %s store has no database/sql outbox writer", name)
		}
		in, err := sqlinbox.New(st.SQL, st.Dialect, sqlinbox.Options{Table: shop.InboxTable(name)})
		if err != nil {
			return sum, err
		}
		svcs[name] = &svc{st: st, db: shop.DB{DB: st.SQL, Dialect: st.Dialect}, inbox: in, add: shop.Outbox(st.AddSQL)}
	}
	ops := cfg.Stores[SvcOps]
	if ops == nil {
		return sum, errors.New("demo: no ops store")
	}
	dl, err := sqldeadletter.New(ops.SQL, ops.Dialect, DeadLetterTable)
	if err != nil {
		return sum, err
	}

	orders := &shop.Orders{DB: svcs[SvcOrders].db, Topics: cfg.Topics, Outbox: svcs[SvcOrders].add, Reg: reg}
	inv := &shop.Inventory{DB: svcs[SvcInventory].db, Topics: cfg.Topics, Outbox: svcs[SvcInventory].add, Reg: reg}
	notes := &shop.Notifications{DB: svcs[SvcNotifications].db, Reg: reg}

	// Schema: start from empty tables, so that a run on a shared database
	// checks only itself. The outbox and inbox tables are emptied rather
	// than dropped: their stores track their migrations.
	if err := resetTables(ctx, svcs, ops); err != nil {
		return sum, err
	}
	for name, s := range svcs {
		if err := s.st.Outbox.Migrate(ctx); err != nil {
			return sum, fmt.Errorf("demo: migrate %s outbox: %w", name, err)
		}
		if err := s.inbox.Migrate(ctx); err != nil {
			return sum, fmt.Errorf("demo: migrate %s inbox: %w", name, err)
		}
		for _, t := range []string{shop.OutboxTable(name), shop.InboxTable(name)} {
			if _, err := s.db.ExecContext(ctx, "DELETE FROM "+t); err != nil {
				return sum, fmt.Errorf("demo: empty %s: %w", t, err)
			}
		}
	}
	if err := dl.Migrate(ctx); err != nil {
		return sum, err
	}
	if err := orders.Migrate(ctx); err != nil {
		return sum, err
	}
	// Enough stock for about 70% of the demand (orders ask for 1-3 units).
	if err := inv.Migrate(ctx, max(2, cfg.Orders*2*7/10/len(shop.Catalogue))); err != nil {
		return sum, err
	}
	if err := notes.Migrate(ctx); err != nil {
		return sum, err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	var runErr error
	var runErrOnce sync.Once
	fail := func(err error) {
		if err != nil && runCtx.Err() == nil {
			runErrOnce.Do(func() { runErr = err; stopAll() })
		}
	}

	// Relays: one per service with an outbox.
	var published atomic.Int64
	startRelay := func(name string) (stop func()) {
		rctx, rcancel := context.WithCancel(runCtx)
		r := outbox.NewRelay(svcs[name].st.Outbox, relayPub, outbox.RelayConfig{
			PollInterval: 250 * time.Millisecond, StatusInterval: -1, Logger: cfg.Logger.With("relay", name)})
		done := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			err := r.Run(rctx)
			published.Add(r.Stats().Delivered)
			if rctx.Err() == nil {
				fail(fmt.Errorf("demo: %s relay: %w", name, err))
			}
		}()
		return func() { rcancel(); <-done }
	}
	stopOrdersRelay := startRelay(SvcOrders)
	stopInvRelay := startRelay(SvcInventory)
	defer func() { stopOrdersRelay(); stopInvRelay() }()

	// Consumers, each behind an inbox in its service's database. With
	// faults on, one ack in ten is "lost": the broker delivers the event
	// again and the inbox must drop the duplicate.
	lossy := &lossyAcks{Subscriber: sub}
	if cfg.Faults {
		lossy.every = 10
	}
	var statsMu sync.Mutex
	var doneStats []consumer.Stats
	live := map[*consumer.Consumer]bool{}
	startConsumer := func(name string, routes map[string]shop.TxFunc) (stop func()) {
		s := svcs[name]
		c, err := consumer.New(lossy, consumer.Config{
			Concurrency: 8, Mode: consumer.PerSubject(), Inbox: s.inbox,
			Retry:           consumer.RetryPolicy{MaxAttempts: 5, Initial: 50 * time.Millisecond, Max: time.Second},
			ShutdownTimeout: 200 * time.Millisecond, Logger: cfg.Logger.With("consumer", name),
			DeadLetterPublisher: cfg.Broker,
		})
		if err != nil {
			fail(err)
			return func() {}
		}
		for topic, fn := range routes {
			fn := fn
			if err := c.HandleFunc(topic, name, func(ctx context.Context, ev eventkit.Event) error {
				tx, err := sqlinbox.Tx(ctx)
				if err != nil {
					return err
				}
				return fn(ctx, tx, ev)
			}); err != nil {
				fail(err)
				return func() {}
			}
		}
		cctx, ccancel := context.WithCancel(runCtx)
		done := make(chan struct{})
		statsMu.Lock()
		live[c] = true
		statsMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			if err := c.Run(cctx); err != nil {
				fail(fmt.Errorf("demo: %s consumer: %w", name, err))
			}
			statsMu.Lock()
			delete(live, c)
			doneStats = append(doneStats, c.Stats())
			statsMu.Unlock()
		}()
		return func() { ccancel(); <-done }
	}
	invRoutes := map[string]shop.TxFunc{cfg.Topics.Orders: inv.OnOrderCreated}
	stopInv := startConsumer(SvcInventory, invRoutes)
	stopOrd := startConsumer(SvcOrders, map[string]shop.TxFunc{cfg.Topics.Inventory: orders.OnInventory})
	stopNotes := startConsumer(SvcNotifications, map[string]shop.TxFunc{cfg.Topics.Inventory: notes.OnEvent, cfg.Topics.Orders: notes.OnEvent})
	defer func() { stopInv(); stopOrd(); stopNotes() }()

	dlSubs, err := deadletter.Collect(runCtx, cfg.Broker, dl, "", cfg.Topics.Orders+".dlq", cfg.Topics.Inventory+".dlq")
	if err != nil {
		return sum, err
	}
	defer func() {
		for _, s := range dlSubs {
			cctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.Close(cctx)
			c()
		}
	}()

	stats := func() consumer.Stats {
		statsMu.Lock()
		defer statsMu.Unlock()
		var t consumer.Stats
		all := append([]consumer.Stats(nil), doneStats...)
		for c := range live {
			all = append(all, c.Stats())
		}
		for _, s := range all {
			t.Handled += s.Handled
			t.Duplicates += s.Duplicates
			t.Retried += s.Retried
			t.DeadLettered += s.DeadLettered
			t.InFlight += s.InFlight
		}
		return t
	}

	// Place the orders from a few concurrent "customers", injecting the
	// faults on the way.
	var placed atomic.Int64
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress != nil {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-progressDone:
					return
				case <-t.C:
					decided, notified, _ := counts(ctx, orders.DB, notes.DB)
					cfg.Progress(Progress{Target: cfg.Orders, Placed: int(placed.Load()), Published: int(published.Load()),
						Decided: decided, Notified: notified})
				}
			}
		}()
	}
	defer func() { close(progressDone); progressWG.Wait() }()

	const customers = 4
	next := atomic.Int64{}
	var placeWG sync.WaitGroup
	for c := range customers {
		placeWG.Add(1)
		go func() {
			defer placeWG.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			for {
				i := next.Add(1)
				if i > int64(cfg.Orders) || runCtx.Err() != nil {
					return
				}
				p := shop.Catalogue[rng.IntN(len(shop.Catalogue))]
				if _, err := orders.Place(runCtx, fmt.Sprintf("customer-%d", rng.IntN(50)), p.SKU, 1+rng.IntN(3)); err != nil {
					fail(fmt.Errorf("demo: place order: %w", err))
					return
				}
				placed.Add(1)
			}
		}()
	}
	if cfg.Faults {
		waitPlaced := func(n int64) {
			for placed.Load() < n && runCtx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		n := int64(cfg.Orders)
		waitPlaced(n / 3)
		// Kill the orders relay mid-stream and start a new one.
		stopOrdersRelay()
		sum.RelayRestarts++
		time.Sleep(300 * time.Millisecond)
		stopOrdersRelay = startRelay(SvcOrders)

		waitPlaced(n / 2)
		// A poison event: an order.created whose Protobuf payload is garbage.
		poison := eventkit.New(shop.TypeOrderCreated, eventkit.ContentTypeProtobuf, []byte{0xff, 0xff, 0xff, 0xff},
			eventkit.WithSubject("ord-poison"), eventkit.WithSource("/demo/chaos"))
		if err := relayPub.Publish(runCtx, cfg.Topics.Orders, poison); err != nil {
			fail(fmt.Errorf("demo: publish poison event: %w", err))
		}
		sum.PoisonEventID = poison.ID

		waitPlaced(2 * n / 3)
		// Restart the inventory consumer with work in flight.
		stopInv()
		sum.ConsumerRestarts++
		stopInv = startConsumer(SvcInventory, invRoutes)
	}
	placeWG.Wait()
	sum.Orders = int(placed.Load())

	// Wait until every order is decided and notified, the outboxes are
	// drained, and the poison event is in the dead letters.
	for runCtx.Err() == nil {
		decided, notified, err := counts(ctx, orders.DB, notes.DB)
		if err == nil && decided == sum.Orders && notified == sum.Orders && drained(ctx, svcs) && stats().InFlight == 0 {
			if sum.PoisonEventID == "" {
				break
			}
			if n, err := dl.Count(ctx, sqldeadletter.Filter{EventID: sum.PoisonEventID}); err == nil && n > 0 {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if runErr != nil {
		return sum, runErr
	}
	sum.Interrupted = parent.Err() != nil
	if err := ctx.Err(); err != nil && !sum.Interrupted {
		sum.Verdict.Problems = append(sum.Verdict.Problems, fmt.Sprintf("the demo did not settle within %v", cfg.Timeout))
	}
	// Let stray redeliveries arrive, then stop everything and judge.
	time.Sleep(300 * time.Millisecond)
	stopInv()
	stopOrd()
	stopNotes()
	stopOrdersRelay()
	stopInvRelay()
	stopInv, stopOrd, stopNotes, stopOrdersRelay, stopInvRelay = func() {}, func() {}, func() {}, func() {}, func() {}

	st := stats()
	sum.Published = published.Load()
	sum.Delivered, sum.Duplicates, sum.Retried, sum.DeadLettered = st.Handled, st.Duplicates, st.Retried, st.DeadLettered
	sum.LostAcks = lossy.lost.Load()
	vctx, vcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer vcancel()
	v, err := Check(vctx, orders.DB, inv.DB, notes.DB)
	if err != nil {
		return sum, err
	}
	v.Problems = append(sum.Verdict.Problems, v.Problems...)
	if sum.PoisonEventID != "" {
		n, err := dl.Count(vctx, sqldeadletter.Filter{EventID: sum.PoisonEventID})
		sum.PoisonInDLQ = err == nil && n == 1
		if !sum.PoisonInDLQ {
			v.Problems = append(v.Problems, "the poison event is not in the dead letters")
		}
	}
	v.OK = len(v.Problems) == 0 && !sum.Interrupted
	sum.Verdict = v
	sum.Elapsed = time.Since(start)
	return sum, nil
}

// counts returns how many orders are decided (not pending) and notified.
func counts(ctx context.Context, orders, notes shop.DB) (decided, notified int, err error) {
	if err = orders.QueryRowContext(ctx, `SELECT COUNT(*) FROM demo_orders WHERE status <> 'pending'`).Scan(&decided); err != nil {
		return
	}
	err = notes.QueryRowContext(ctx, `SELECT COUNT(*) FROM demo_notifications`).Scan(&notified)
	return
}

func drained(ctx context.Context, svcs map[string]*svc) bool {
	for _, name := range []string{SvcOrders, SvcInventory} {
		s, err := svcs[name].st.Outbox.Status(ctx)
		if err != nil || s.Backlog > 0 {
			return false
		}
	}
	return true
}

// resetTables drops the demo's tables so that a run starts empty.
func resetTables(ctx context.Context, svcs map[string]*svc, ops *connect.Store) error {
	// The demo's own tables are dropped and created again.
	drop := func(db shop.DB, tables ...string) error {
		for _, t := range tables {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
				return fmt.Errorf("demo: reset: %w", err)
			}
		}
		return nil
	}
	if err := drop(svcs[SvcOrders].db, "demo_orders", "demo_products"); err != nil {
		return err
	}
	if err := drop(svcs[SvcInventory].db, "demo_stock", "demo_reservations"); err != nil {
		return err
	}
	if err := drop(svcs[SvcNotifications].db, "demo_notifications"); err != nil {
		return err
	}
	return drop(shop.DB{DB: ops.SQL, Dialect: ops.Dialect}, DeadLetterTable)
}

// lossyAcks wraps a subscriber so that, when every > 0, the first ack of one
// delivery in every is turned into a nack: as if the ack were lost after the
// handler's transaction committed. The broker delivers the event again.
type lossyAcks struct {
	broker.Subscriber
	every int64
	n     atomic.Int64
	lost  atomic.Int64
}

func (l *lossyAcks) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if l.every <= 0 {
		return l.Subscriber.Subscribe(ctx, topic, group, h, opts...)
	}
	return l.Subscriber.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		return h(ctx, &lossyDelivery{Delivery: d, l: l})
	}, opts...)
}

type lossyDelivery struct {
	broker.Delivery
	l *lossyAcks
}

func (d *lossyDelivery) Ack(ctx context.Context) error {
	if d.Attempt() == 1 && d.DecodeErr() == nil && d.l.n.Add(1)%d.l.every == 0 {
		d.l.lost.Add(1)
		return d.Delivery.Nack(ctx, 0)
	}
	return d.Delivery.Ack(ctx)
}
