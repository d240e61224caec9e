package sqldeadletter_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// A handler rejects an event for good; the consumer runtime publishes it to
// "orders.dlq"; the collector stores it in a table; an operator lists it and,
// once the bug is fixed, replays it to its original topic.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "deadletter-example")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", "file:"+filepath.Join(dir, "ops.db")+"?_pragma=busy_timeout(5000)")
	defer db.Close()
	store, _ := sqldeadletter.New(db, sqlinbox.SQLite, "") // table eventkit_dead_letters
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}

	b := memorybroker.New(memorybroker.Options{})
	defer b.Close(ctx)
	subs, err := deadletter.Collect(ctx, b, store, "", "orders.dlq")
	if err != nil {
		panic(err)
	}
	defer func() {
		for _, s := range subs {
			_ = s.Close(ctx)
		}
	}()

	// An auditor sees everything published on "orders".
	seen := make(chan eventkit.Event, 4)
	audit, _ := b.Subscribe(ctx, "orders", "audit", broker.AutoAck(func(_ context.Context, e eventkit.Event, _ int) error {
		seen <- e
		return nil
	}))
	defer audit.Close(ctx)

	// A consumer whose handler refuses the event permanently.
	c, _ := consumer.New(b, consumer.Config{Logger: slog.New(slog.DiscardHandler)})
	_ = c.HandleFunc("orders", "billing", func(ctx context.Context, ev eventkit.Event) error {
		return eventkit.Permanent(errors.New("no price for SKU-X"))
	})
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	ev := eventkit.New("order.created", "application/json", []byte(`{"sku":"SKU-X"}`), eventkit.WithID("evt-1"), eventkit.WithSubject("o-1"))
	_ = b.Publish(ctx, "orders", ev)

	for n, _ := store.Count(ctx, sqldeadletter.Filter{}); n == 0; n, _ = store.Count(ctx, sqldeadletter.Filter{}) {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	<-done

	entries, _ := store.List(ctx, sqldeadletter.Filter{Topic: "orders"})
	for _, e := range entries {
		fmt.Printf("%s %s %s group=%s reason=%s error=%q\n", e.Topic, e.EventID, e.EventType, e.Group, e.Reason, e.Error)
	}

	<-seen // the original

	// Replay puts the original event back on "orders", with an id of its
	// own and addressed to billing: a consumer runtime of another group
	// skips it, billing's handler sees the original id "evt-1". A raw
	// subscriber such as the auditor sees the replay's attributes.
	res, err := store.Replay(ctx, b, sqldeadletter.Filter{EventID: "evt-1"})
	fmt.Println("replayed:", res.Replayed, err)
	e := <-seen
	fmt.Println("audit saw the replay of:", e.Extension(deadletter.ExtReplayOf), "for", e.Extension(deadletter.ExtReplayGroup), e.Type, string(e.Data))
	// Output:
	// orders evt-1 order.created group=billing reason=permanent error="permanent: no price for SKU-X"
	// replayed: 1 <nil>
	// audit saw the replay of: evt-1 for billing order.created {"sku":"SKU-X"}
}
