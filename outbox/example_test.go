package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/sqliteoutbox"
)

// An order service writes its order and the event about it in one
// transaction; the relay publishes the event once the transaction commits.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", sqliteoutbox.DSN(filepath.Join(dir, "orders.db")))
	defer db.Close()
	_, _ = db.Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)`)

	store, _ := sqliteoutbox.New(db, sqliteoutbox.Config{}) // table "eventkit_outbox"
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}

	// The business change and the event, atomically.
	tx, _ := db.BeginTx(ctx, nil)
	_, _ = tx.ExecContext(ctx, `INSERT INTO orders VALUES ('o-1', 4200)`)
	ev := eventkit.New("order.created", "application/json", []byte(`{"id":"o-1","total":4200}`),
		eventkit.WithSubject("o-1"), eventkit.WithSource("/orders"))
	if err := store.Add(ctx, tx, "orders", ev); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	// The relay publishes to a broker (here the in-memory one).
	mem := memorybroker.New(memorybroker.Options{})
	defer mem.Close(ctx)
	got := make(chan eventkit.Event, 1)
	sub, _ := mem.Subscribe(ctx, "orders", "billing", broker.AutoAck(func(_ context.Context, e eventkit.Event, _ int) error {
		got <- e
		return nil
	}))
	defer sub.Close(ctx)

	relay := outbox.NewRelay(store, mem, outbox.RelayConfig{})
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()

	select {
	case e := <-got:
		fmt.Println(e.Type, e.Subject, string(e.Data))
	case <-time.After(10 * time.Second):
		fmt.Println("timeout")
	}
	// The relay deletes the row once the broker has confirmed it, which
	// can be just after the consumer saw the event.
	var st outbox.Status
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st, _ = store.Status(ctx); st.Backlog == 0 {
			break
		}
	}
	stop()
	<-done
	fmt.Println("backlog:", st.Backlog)
	// Output:
	// order.created o-1 {"id":"o-1","total":4200}
	// backlog: 0
}
