// Command inventory is the inventory service of the eventkit examples. It
// consumes order.created, reserves stock with compare-and-swap on the stock
// row's version, and answers with inventory.reserved or inventory.rejected.
//
// Everything one event causes happens in one database transaction: the inbox
// records the event id (a duplicate delivery finds it and is skipped), the
// stock row changes, and the answer is written to this service's outbox. The
// relay running in this process publishes the answer after the commit. Kill
// the program at any point: on restart the broker delivers again what was
// not acknowledged, the inbox drops what was already done, and the relay
// publishes what was committed but not yet published. See ../README.md.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/examples/svc"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/outbox"
)

const service = "inventory"

func main() {
	flags := svc.Register(flag.CommandLine, service)
	stock := flag.Int("stock", 100, "units of each product to start with (only when the stock table is empty)")
	svc.Usage(flag.CommandLine, `
inventory: the inventory service of the eventkit examples.

It consumes order.created, reserves stock (compare-and-swap, never below
zero) and writes inventory.reserved or inventory.rejected to its outbox in the
same transaction as the inbox record and the stock change; its outbox relay
publishes them.

Usage: inventory [flags]`)
	flag.Parse()
	log, err := flags.Logger(service)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	svc.Main(log, func(ctx context.Context) error { return run(ctx, flags, *stock, log) })
}

func run(ctx context.Context, flags *svc.Flags, stock int, log *slog.Logger) error {
	defer svc.Tracing(log)(context.Background())
	b, st, err := flags.Open(ctx, service, log)
	if err != nil {
		return err
	}
	defer st.Close()
	defer b.Close(context.Background())

	inv := &shop.Inventory{DB: svc.DB(st), Topics: flags.Topics(), Outbox: st.AddSQL, Reg: shop.NewRegistry()}

	// Schema: the outbox table, the inbox table, the stock tables.
	in, err := sqlinbox.New(st.SQL, st.Dialect, sqlinbox.Options{Table: svc.InboxTable(service)})
	if err != nil {
		return err
	}
	if err := st.Outbox.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate outbox: %w", err)
	}
	if err := in.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate inbox: %w", err)
	}
	if err := inv.Migrate(ctx, stock); err != nil {
		return fmt.Errorf("migrate inventory: %w", err)
	}

	relay := outbox.NewRelay(st.Outbox, b, outbox.RelayConfig{Logger: log.With("component", "relay")})

	c, err := consumer.New(b, consumer.Config{
		Concurrency:    4,
		Inbox:          in, // the handler runs in the inbox's transaction
		AckWait:        flags.AckWait,
		HandlerTimeout: 10 * time.Second,
		Retry:          consumer.RetryPolicy{MaxAttempts: 5, Initial: 100 * time.Millisecond, Max: 2 * time.Second},
		Logger:         log.With("component", "consumer"),
	})
	if err != nil {
		return err
	}
	err = c.HandleFunc(flags.Topics().Orders, service, svc.InTx(func(ctx context.Context, tx *sql.Tx, ev eventkit.Event) error {
		if err := inv.OnOrderCreated(ctx, tx, ev); err != nil {
			return err
		}
		if ev.Type != shop.TypeOrderCreated {
			return nil // order.cancelled also travels on this topic: nothing to do
		}
		// Read back what OnOrderCreated decided, in the same transaction.
		var status, sku string
		var qty, left int
		err := tx.QueryRowContext(ctx, inv.DB.Q(`SELECT r.status, r.sku, r.quantity, s.available FROM demo_reservations r
			JOIN demo_stock s ON s.sku = r.sku WHERE r.order_id = ?`), ev.Subject).Scan(&status, &sku, &qty, &left)
		if err == nil {
			log.Info("stock "+status, "order_id", ev.Subject, "product_sku", sku, "quantity", qty, "available", left, "trace_id", svc.TraceID(ctx))
		}
		return nil
	}))
	if err != nil {
		return err
	}

	log.Info("running", flags.LogAttrs()...)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return c.Run(ctx) })
	return g.Wait()
}
