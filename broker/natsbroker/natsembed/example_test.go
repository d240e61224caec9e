package natsembed_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/natsbroker/natsembed"
)

// Start runs a NATS server with JetStream inside the process: no
// setup, streams kept in a directory.
func ExampleStart() {
	dir, _ := os.MkdirTemp("", "eventkit-nats")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	srv, err := natsembed.Start(ctx, dir, natsembed.Options{InProcessOnly: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close(context.Background())
	b := srv.Broker

	got := make(chan eventkit.Event, 1)
	sub, err := b.Subscribe(ctx, "orders", "billing", broker.AutoAck(func(ctx context.Context, e eventkit.Event, attempt int) error {
		got <- e
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close(context.Background())

	ev := eventkit.New("order.created", "application/json", []byte(`{"id":"o-1"}`), eventkit.WithSubject("o-1"))
	if err := b.Publish(ctx, "orders", ev); err != nil {
		fmt.Println(err)
		return
	}
	e := <-got
	fmt.Println(e.Type, e.Subject, string(e.Data))
	fmt.Println("stream:", b.StreamName("orders"), "consumer:", natsbroker.ConsumerName("billing"))
	// Output:
	// order.created o-1 {"id":"o-1"}
	// stream: orders consumer: billing
}
