package rabbitmqbroker_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

func Example() {
	url := os.Getenv(testenv.RabbitMQ.EnvVar)
	if url == "" {
		url = testenv.RabbitMQ.Default
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := rabbitmqbroker.New(ctx, rabbitmqbroker.Options{URL: url})
	if err != nil {
		fmt.Println("no RabbitMQ:", err)
		return
	}
	defer b.Close(ctx)
	topic := testenv.Name("orders")
	defer b.DeleteTopology(ctx, topic, "billing")

	// Create the group before publishing: RabbitMQ drops a message no queue
	// is bound to, so Publish reports it as ErrUnroutable instead.
	if err := b.Provision(ctx, topic, "billing"); err != nil {
		fmt.Println(err)
		return
	}
	ev := eventkit.New("order.created", "application/json", []byte(`{"id":"o-1"}`), eventkit.WithSubject("o-1"))
	if err := b.Publish(ctx, topic, ev); err != nil { // returns once confirmed
		fmt.Println(err)
		return
	}

	got := make(chan eventkit.Event, 1)
	sub, err := b.Subscribe(ctx, topic, "billing", broker.AutoAck(func(ctx context.Context, e eventkit.Event, attempt int) error {
		got <- e.Clone()
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close(ctx)
	e := <-got
	fmt.Println(e.Type, e.Subject, string(e.Data))
	// Output: order.created o-1 {"id":"o-1"}
}
