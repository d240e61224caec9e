package connect_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/connect"
)

// Open a store from its URL, create its outbox table and add an event in a
// transaction of your own.
func ExampleOpenStore() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "connect-example-")
	defer os.RemoveAll(dir)

	st, err := connect.OpenStore(ctx, "sqlite://"+filepath.Join(dir, "orders.db"), connect.WithOutboxTable("orders_outbox"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	if err := st.Outbox.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}
	tx, err := st.SQL.BeginTx(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := eventkit.Event{ID: "ev-1", Source: "orders", Type: "order.created", Time: time.Now(), DataContentType: "application/json", Data: []byte(`{"id":1}`)}
	if err := st.AddSQL(ctx, tx, "orders", ev); err != nil {
		fmt.Println(err)
		return
	}
	if err := tx.Commit(); err != nil {
		fmt.Println(err)
		return
	}
	var n int
	_ = st.SQL.QueryRowContext(ctx, "SELECT COUNT(*) FROM orders_outbox").Scan(&n)
	fmt.Println(st.Dialect, "events in the outbox:", n)
	// Output: sqlite events in the outbox: 1
}

// Open a broker from its URL. TLS and authentication are URL parameters in
// each ecosystem's own names (docs/security.md has the table).
func ExampleBroker() {
	ctx := context.Background()
	b, err := connect.Broker(ctx, "tls://127.0.0.1:4222?tlsca=/etc/eventkit/ca.pem&creds=/etc/eventkit/orders.creds")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close(ctx)
}

func ExampleRedact() {
	fmt.Println(connect.Redact("kafka://orders:s3cret@kafka-1:9093?sasl.mechanism=SCRAM-SHA-512&ssl.ca.location=/etc/ca.pem"))
	fmt.Println(connect.Redact("postgres://app:s3cret@db:5432/orders?sslmode=verify-full&sslrootcert=/etc/ca.pem"))
	// Output:
	// kafka://orders:xxxxx@kafka-1:9093?sasl.mechanism=SCRAM-SHA-512&ssl.ca.location=/etc/ca.pem
	// postgres://app:xxxxx@db:5432/orders?sslmode=verify-full&sslrootcert=/etc/ca.pem
}
