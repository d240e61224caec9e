package kafkabroker_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
)

func Example() {
	// An in-process Kafka for the example; use your brokers' addresses.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := kafkabroker.New(ctx, kafkabroker.Options{Brokers: cluster.ListenAddrs()})
	if err != nil {
		panic(err)
	}
	defer b.Close(ctx)

	got := make(chan string, 1)
	sub, err := b.Subscribe(ctx, "orders", "billing", broker.AutoAck(func(ctx context.Context, e eventkit.Event, attempt int) error {
		got <- fmt.Sprintf("%s for %s (attempt %d)", e.Type, e.Subject, attempt)
		return nil
	}))
	if err != nil {
		panic(err)
	}
	defer sub.Close(ctx)

	ev := eventkit.New("order.created", "application/json", []byte(`{"total":42}`),
		eventkit.WithSubject("order-1"), eventkit.WithSource("/orders"))
	if err := b.Publish(ctx, "orders", ev); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output: order.created for order-1 (attempt 1)
}
