package pgcdc_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// The writer side is the plain outbox/pgoutbox store; the CDC relay reads
// its inserts from a replication slot. (Compiled, not run: it needs a
// PostgreSQL server with wal_level=logical; TestRoundTripAndCleanup runs
// the same flow.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, _ := pgoutbox.New(pool, pgoutbox.Config{Table: "orders_outbox"})
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	mem := memorybroker.New(memorybroker.Options{})
	defer mem.Close(ctx)
	relay, _ := pgcdc.New(pool, mem, pgcdc.Config{Table: "orders_outbox"})
	// Once (`eventkit relay --mode cdc` does it at start): the publication
	// and the durable slot. From now on the slot keeps WAL until the relay
	// confirms it: drop it with Teardown when CDC is no longer used.
	if err := relay.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()

	got := make(chan eventkit.Event, 1)
	sub, _ := mem.Subscribe(ctx, "orders", "billing", broker.AutoAck(func(_ context.Context, e eventkit.Event, _ int) error {
		got <- e
		return nil
	}))
	defer sub.Close(ctx)

	tx, _ := pool.Begin(ctx)
	// ... the business change in tx, then the event, atomically:
	_ = store.Add(ctx, tx, "orders", eventkit.New("order.created", "application/json", []byte(`{"id":"o-1"}`), eventkit.WithSubject("o-1")))
	_ = tx.Commit(ctx)

	select {
	case e := <-got:
		fmt.Println(e.Type, e.Subject)
	case <-time.After(10 * time.Second):
		fmt.Println("timeout")
	}
	stop()
	<-done
	st, _ := relay.Status(ctx)
	fmt.Println("slot lag bytes:", st.LagBytes, "rows left:", st.Outbox.Backlog)
}
