// Command notifications is the notifications service of the eventkit
// examples. It consumes inventory.reserved and order.cancelled and records
// exactly one notification per order (an UPSERT keyed by the order id, in
// the inbox's transaction), then logs the text it would send.
//
// The inbox makes the database effect happen once per event, however often
// the broker delivers it. The log line (standing in for an e-mail) is outside
// the transaction: it can repeat if the program dies between the handler and
// the commit, which is why real senders pass the event id on as an
// idempotency key. See ../README.md.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/examples/svc"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

const service = "notifications"

func main() {
	flags := svc.Register(flag.CommandLine, service)
	svc.Usage(flag.CommandLine, `
notifications: the notifications service of the eventkit examples.

It consumes inventory.reserved and order.cancelled and records one
notification per order (an UPSERT in the inbox's transaction), and logs it.

Usage: notifications [flags]`)
	flag.Parse()
	log, err := flags.Logger(service)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	svc.Main(log, func(ctx context.Context) error { return run(ctx, flags, log) })
}

func run(ctx context.Context, flags *svc.Flags, log *slog.Logger) error {
	defer svc.Tracing(log)(context.Background())
	b, st, err := flags.Open(ctx, service, log)
	if err != nil {
		return err
	}
	defer st.Close()
	defer b.Close(context.Background())

	notes := &shop.Notifications{DB: svc.DB(st), Reg: shop.NewRegistry()}

	// Schema: the inbox table and the notifications table (no outbox: this
	// service emits nothing).
	in, err := sqlinbox.New(st.SQL, st.Dialect, sqlinbox.Options{Table: svc.InboxTable(service)})
	if err != nil {
		return err
	}
	if err := in.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate inbox: %w", err)
	}
	if err := notes.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate notifications: %w", err)
	}

	c, err := consumer.New(b, consumer.Config{
		Concurrency:    4,
		Inbox:          in,
		AckWait:        flags.AckWait,
		HandlerTimeout: 10 * time.Second,
		Retry:          consumer.RetryPolicy{MaxAttempts: 5, Initial: 100 * time.Millisecond, Max: 2 * time.Second},
		Logger:         log.With("component", "consumer"),
	})
	if err != nil {
		return err
	}
	handle := svc.InTx(func(ctx context.Context, tx *sql.Tx, ev eventkit.Event) error {
		if ev.Type != shop.TypeInventoryReserved && ev.Type != shop.TypeOrderCancelled {
			return nil // order.created, inventory.rejected: not for us
		}
		if err := notes.OnEvent(ctx, tx, ev); err != nil {
			return err
		}
		var kind, msg string
		err := tx.QueryRowContext(ctx, notes.DB.Q(`SELECT kind, message FROM demo_notifications WHERE order_id = ?`), ev.Subject).Scan(&kind, &msg)
		if err == nil {
			log.Info("notify customer: "+msg, "order_id", ev.Subject, "kind", kind, "trace_id", svc.TraceID(ctx))
		}
		return nil
	})
	// One group ("notifications") on both topics.
	for _, topic := range []string{flags.Topics().Inventory, flags.Topics().Orders} {
		if err := c.HandleFunc(topic, service, handle); err != nil {
			return err
		}
	}
	log.Info("running", flags.LogAttrs()...)
	return c.Run(ctx)
}
