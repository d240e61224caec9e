package eventkittest_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
	"github.com/eventkit/eventkit/eventkittest"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// txHandler adapts a demo handler: the inbox transaction when there is one,
// else a transaction of its own (NoInbox runs).
func txHandler(db *sql.DB, fn shop.TxFunc) consumer.Handler {
	return consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
		if tx, err := sqlinbox.Tx(ctx); err == nil {
			return fn(ctx, tx, ev)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
		if err := fn(ctx, tx, ev); err != nil {
			return err
		}
		return tx.Commit()
	})
}

func must(t *testing.T) func(eventkit.Event, error) eventkit.Event {
	return func(ev eventkit.Event, err error) eventkit.Event {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
}

// notificationEvents: three reserved orders and one cancelled one.
func notificationEvents(t *testing.T, reg *eventkit.Registry) []eventkit.Event {
	var evs []eventkit.Event
	for i := range 3 {
		id := fmt.Sprintf("ord-%d", i)
		evs = append(evs, must(t)(eventkit.NewTyped(reg, shop.InventoryReserved{OrderID: id, SKU: "SKU-KETTLE",
			ProductName: "Gooseneck kettle", Quantity: 1 + i, RemainingStock: 10}, eventkit.WithSubject(id))))
	}
	evs = append(evs, must(t)(eventkit.NewTyped(reg, shop.OrderCancelled{OrderID: "ord-9", CustomerID: "c", Reason: "no stock"},
		eventkit.WithSubject("ord-9"))))
	return evs
}

// checkNotifiedOnce: one notification per order, each sent once.
func checkNotifiedOnce(ctx context.Context, db *sql.DB, _ eventkittest.Result) error {
	rows, err := db.QueryContext(ctx, `SELECT order_id, kind, sent_count FROM demo_notifications ORDER BY order_id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var id, kind string
		var n int
		if err := rows.Scan(&id, &kind, &n); err != nil {
			return err
		}
		got = append(got, fmt.Sprintf("%s:%s:%d", id, kind, n))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	want := []string{"ord-0:confirmed:1", "ord-1:confirmed:1", "ord-2:confirmed:1", "ord-9:cancelled:1"}
	if !slices.Equal(got, want) {
		return fmt.Errorf("notifications %v, want %v", got, want)
	}
	return nil
}

func notificationsScenario(t *testing.T) eventkittest.Scenario {
	reg := shop.NewRegistry()
	return eventkittest.Scenario{
		Events: notificationEvents(t, reg),
		Setup: func(ctx context.Context, db *sql.DB) error {
			return (&shop.Notifications{DB: shop.DB{DB: db, Dialect: sqlinbox.SQLite}}).Migrate(ctx)
		},
		Handler: func(db *sql.DB) consumer.Handler {
			n := &shop.Notifications{DB: shop.DB{DB: db, Dialect: sqlinbox.SQLite}, Reg: reg}
			return txHandler(db, n.OnEvent)
		},
		Check: checkNotifiedOnce,
	}
}

// The demo's notifications handler keeps one notification per order under
// every fault: its UPSERT runs in the inbox transaction.
func TestNotificationsUnderFaults(t *testing.T) {
	eventkittest.Run(t, notificationsScenario(t))
}

// Without the inbox the same handler counts every redelivery
// (sent_count > 1): each redelivery fault really delivers the event again to
// the handler, and Check fails.
func TestRedeliveryFaultsHappen(t *testing.T) {
	s := notificationsScenario(t)
	s.NoInbox = true
	for _, f := range eventkittest.DefaultFaults() {
		redelivers := f.Faults.DropAckEvery > 0 || f.Faults.Duplicates > 0 || f.Faults.Concurrent > 1 || f.Faults.DisconnectAfter > 0
		if f.CrashBeforeCommit {
			continue // needs the inbox: TestNonIdempotentHandlerFails
		}
		t.Run(f.Name, func(t *testing.T) {
			res, err := eventkittest.RunFault(t, s, f)
			switch {
			case redelivers && err == nil:
				t.Fatalf("the handler without inbox passed %s: the fault did not redeliver (%+v)", f.Name, res.Injected)
			case redelivers && !strings.Contains(err.Error(), "check: notifications"):
				t.Fatalf("want a failed check, got %v", err)
			case !redelivers && err != nil:
				t.Fatalf("%s does not redeliver, yet: %v", f.Name, err)
			}
		})
	}
}

// mailer is an effect outside the inbox transaction.
type mailer struct {
	mu   sync.Mutex
	sent map[string]int
}

func (m *mailer) send(orderID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent[orderID]++
}

// A handler that sends an e-mail besides its transactional write is not
// idempotent: the scenario must fail (at CrashBeforeCommit, where the write
// is rolled back and the mail is not).
func TestNonIdempotentHandlerFails(t *testing.T) {
	reg := shop.NewRegistry()
	var m *mailer
	s := notificationsScenario(t)
	s.Handler = func(db *sql.DB) consumer.Handler {
		m = &mailer{sent: map[string]int{}}
		inner := s0Handler(db, reg)
		return consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
			if err := inner.HandleEvent(ctx, ev); err != nil {
				return err
			}
			m.send(ev.Subject)
			return nil
		})
	}
	s.Check = func(ctx context.Context, db *sql.DB, r eventkittest.Result) error {
		if err := checkNotifiedOnce(ctx, db, r); err != nil {
			return err
		}
		for id, n := range m.sent {
			if n != 1 {
				return fmt.Errorf("order %s mailed %d times", id, n)
			}
		}
		return nil
	}
	failed := map[string]bool{}
	for _, f := range eventkittest.DefaultFaults() {
		_, err := eventkittest.RunFault(t, s, f)
		if err != nil {
			if !strings.Contains(err.Error(), "mailed") {
				t.Fatalf("%s: %v, want the mail check to fail", f.Name, err)
			}
			failed[f.Name] = true
		}
	}
	if !failed["CrashBeforeCommit"] {
		t.Fatalf("the non-idempotent handler passed CrashBeforeCommit (failed: %v)", failed)
	}
	if failed["NoFault"] {
		t.Fatal("the baseline failed")
	}
}

func s0Handler(db *sql.DB, reg *eventkit.Registry) consumer.Handler {
	n := &shop.Notifications{DB: shop.DB{DB: db, Dialect: sqlinbox.SQLite}, Reg: reg}
	return txHandler(db, n.OnEvent)
}

// The inventory service reserves stock exactly once per order and writes
// exactly one outgoing event per order, under every fault.
func TestInventoryUnderFaults(t *testing.T) {
	reg := shop.NewRegistry()
	var evs []eventkit.Event
	orders := []struct {
		sku string
		qty int32
	}{{"SKU-KETTLE", 2}, {"SKU-KETTLE", 2}, {"SKU-SCALE", 1}, {"SKU-KETTLE", 2}}
	for i, o := range orders {
		id := fmt.Sprintf("ord-%d", i)
		evs = append(evs, must(t)(eventkit.NewTyped(reg, &examplepb.OrderCreated{OrderId: id, CustomerId: "c",
			ProductSku: o.sku, ProductName: o.sku, Quantity: o.qty}, eventkit.WithSubject(id))))
	}
	const stock = 5
	eventkittest.Run(t, eventkittest.Scenario{
		Events: evs,
		Setup: func(ctx context.Context, db *sql.DB) error {
			inv := &shop.Inventory{DB: shop.DB{DB: db, Dialect: sqlinbox.SQLite}}
			if err := inv.Migrate(ctx, stock); err != nil {
				return err
			}
			_, err := db.ExecContext(ctx, `CREATE TABLE test_outbox (id TEXT PRIMARY KEY, type TEXT NOT NULL, subject TEXT NOT NULL)`)
			return err
		},
		Handler: func(db *sql.DB) consumer.Handler {
			inv := &shop.Inventory{DB: shop.DB{DB: db, Dialect: sqlinbox.SQLite}, Reg: reg, Topics: shop.DefaultTopics,
				Outbox: func(ctx context.Context, tx *sql.Tx, _ string, events ...eventkit.Event) error {
					for _, e := range events {
						if _, err := tx.ExecContext(ctx, `INSERT INTO test_outbox (id, type, subject) VALUES (?, ?, ?)`, e.ID, e.Type, e.Subject); err != nil {
							return err
						}
					}
					return nil
				}}
			return txHandler(db, inv.OnOrderCreated)
		},
		Check: func(ctx context.Context, db *sql.DB, _ eventkittest.Result) error {
			var reservations, reserved, outgoing, subjects int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = 'reserved' THEN quantity END), 0) FROM demo_reservations`).Scan(&reservations, &reserved); err != nil {
				return err
			}
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT subject) FROM test_outbox`).Scan(&outgoing, &subjects); err != nil {
				return err
			}
			var left int
			if err := db.QueryRowContext(ctx, `SELECT SUM(initial - available) FROM demo_stock`).Scan(&left); err != nil {
				return err
			}
			if reservations != len(orders) || outgoing != len(orders) || subjects != len(orders) || left != reserved {
				return fmt.Errorf("%d reservations, %d events for %d orders, %d units taken for %d reserved; want one each",
					reservations, outgoing, subjects, left, reserved)
			}
			return nil
		},
	})
}

// The Reordered fault makes later events overtake earlier ones, and
// PublishFails and Delayed are injected.
func TestOrderAndPublishFaultsHappen(t *testing.T) {
	reg := shop.NewRegistry()
	s := notificationsScenario(t)
	var mu sync.Mutex
	var seen []string
	s.Handler = func(db *sql.DB) consumer.Handler {
		mu.Lock()
		seen = nil
		mu.Unlock()
		inner := s0Handler(db, reg)
		return consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
			mu.Lock()
			seen = append(seen, ev.Subject)
			mu.Unlock()
			return inner.HandleEvent(ctx, ev)
		})
	}
	s.Consumer = consumer.Config{Concurrency: 1}
	published := []string{"ord-0", "ord-1", "ord-2", "ord-9"}
	for _, f := range eventkittest.DefaultFaults() {
		switch f.Name {
		case "NoFault", "Reordered", "PublishFails", "Delayed":
		default:
			continue
		}
		res, err := eventkittest.RunFault(t, s, f)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		mu.Lock()
		got := slices.Clone(seen)
		mu.Unlock()
		switch f.Name {
		case "NoFault":
			if !slices.Equal(got, published) {
				t.Fatalf("without faults handled %v, want %v", got, published)
			}
		case "Reordered":
			if slices.Equal(got, published) || res.Injected.Reordered == 0 {
				t.Fatalf("Reordered handled %v in publish order (%+v)", got, res.Injected)
			}
		case "PublishFails":
			if res.Injected.PublishesFailed != 1 || res.Injected.PublishCalls != len(published)+1 {
				t.Fatalf("PublishFails: %+v", res.Injected)
			}
		case "Delayed":
			if res.Injected.Delayed < len(published) {
				t.Fatalf("Delayed: %+v", res.Injected)
			}
		}
	}
}

// A fault that cannot happen with the scenario's events fails the run
// instead of passing vacuously.
func TestFaultThatDidNotHappenFails(t *testing.T) {
	s := notificationsScenario(t)
	_, err := eventkittest.RunFault(t, s, eventkittest.Fault{Name: "Late", Faults: eventkittest.Faults{DisconnectAfter: 1000}})
	if err == nil || !strings.Contains(err.Error(), "did not happen") {
		t.Fatalf("got %v, want a fault that did not happen", err)
	}
}

// HandleInTx gives the handler the inbox transaction and records the key.
func TestHandleInTx(t *testing.T) {
	reg := shop.NewRegistry()
	db, in := eventkittest.NewSQLiteInbox(t)
	ctx := context.Background()
	if err := (&shop.Notifications{DB: shop.DB{DB: db, Dialect: sqlinbox.SQLite}}).Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	h := consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
		tx, err := sqlinbox.Tx(ctx)
		if err != nil {
			return err
		}
		return (&shop.Notifications{DB: shop.DB{DB: db, Dialect: sqlinbox.SQLite}, Reg: reg}).OnEvent(ctx, tx, ev)
	})
	ev := notificationEvents(t, reg)[0]
	if err := eventkittest.HandleInTx(ctx, in, "notifications", h, ev); err != nil {
		t.Fatal(err)
	}
	if err := eventkittest.HandleInTx(ctx, in, "notifications", h, ev); !errors.Is(err, inbox.ErrDuplicate) {
		t.Fatalf("second call: %v, want ErrDuplicate", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT sent_count FROM demo_notifications WHERE order_id = 'ord-0'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("sent_count %d, %v", n, err)
	}
}

// A scenario whose consumer runs in per-subject or strict order
// (Config.Mode) still gets the copies of the Concurrent fault into the
// handler at once: the run makes the consumer unordered for that fault,
// whichever way the order was set. (No inbox: its transaction would
// serialise the copies.)
func TestConcurrentFaultWithOrderedMode(t *testing.T) {
	for _, mode := range []consumer.Mode{consumer.PerSubject(), consumer.Strict()} {
		for _, f := range eventkittest.DefaultFaults() {
			if f.Faults.Concurrent <= 1 {
				continue
			}
			t.Run(mode.String()+"/"+f.Name, func(t *testing.T) {
				var mu sync.Mutex
				running := map[string]int{}
				peak := 0
				s := eventkittest.Scenario{
					Events:   notificationEvents(t, shop.NewRegistry()),
					Consumer: consumer.Config{Mode: mode},
					NoInbox:  true,
					Handler: func(*sql.DB) consumer.Handler {
						return consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
							mu.Lock()
							running[ev.ID]++
							peak = max(peak, running[ev.ID])
							mu.Unlock()
							time.Sleep(20 * time.Millisecond)
							mu.Lock()
							running[ev.ID]--
							mu.Unlock()
							return nil
						})
					},
					Check: func(context.Context, *sql.DB, eventkittest.Result) error { return nil },
				}
				if _, err := eventkittest.RunFault(t, s, f); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				defer mu.Unlock()
				if peak < 2 {
					t.Fatalf("copies of one event ran one at a time (peak %d) in %s", peak, mode)
				}
			})
		}
	}
}
