package memorybroker_test

import (
	"context"
	"fmt"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
)

// Publish, then subscribe: a new group still receives what was published
// before it existed. A nack with a delay brings the event back with the next
// attempt number.
func Example() {
	ctx := context.Background()
	b := memorybroker.New(memorybroker.Options{})
	defer b.Close(ctx)

	ev := eventkit.New("order.created", "application/json", []byte(`{"id":"o-1"}`),
		eventkit.WithSubject("o-1"), eventkit.WithSource("/orders"))
	if err := b.Publish(ctx, "orders", ev); err != nil {
		panic(err)
	}

	got := make(chan string, 2)
	sub, err := b.Subscribe(ctx, "orders", "billing", func(ctx context.Context, d broker.Delivery) error {
		e := d.Event()
		if d.Attempt() == 1 {
			got <- fmt.Sprintf("attempt %d: %s %s %s: nack, retry in 10ms", d.Attempt(), e.Type, e.Subject, e.Data)
			return d.Nack(ctx, 10*time.Millisecond)
		}
		got <- fmt.Sprintf("attempt %d: %s %s: ack", d.Attempt(), e.Type, e.Subject)
		return d.Ack(ctx)
	})
	if err != nil {
		panic(err)
	}
	defer sub.Close(ctx)
	fmt.Println(<-got)
	fmt.Println(<-got)
	// Output:
	// attempt 1: order.created o-1 {"id":"o-1"}: nack, retry in 10ms
	// attempt 2: order.created o-1: ack
}

// Every group gets every event; the subscribers of one group share them.
// broker.AutoAck turns a plain function into a handler that acks on nil.
func ExampleBroker_Subscribe_groups() {
	ctx := context.Background()
	b := memorybroker.New(memorybroker.Options{})
	defer b.Close(ctx)

	got := make(chan string, 4)
	for _, group := range []string{"billing", "shipping"} {
		sub, err := b.Subscribe(ctx, "orders", group, broker.AutoAck(func(_ context.Context, e eventkit.Event, _ int) error {
			got <- group + " got " + e.Subject
			return nil
		}))
		if err != nil {
			panic(err)
		}
		defer sub.Close(ctx)
	}
	for _, id := range []string{"o-1", "o-2"} {
		_ = b.Publish(ctx, "orders", eventkit.New("order.created", "application/json", []byte(`{}`), eventkit.WithSubject(id)))
	}
	seen := map[string]bool{}
	for range 4 {
		seen[<-got] = true
	}
	fmt.Println(seen["billing got o-1"], seen["billing got o-2"], seen["shipping got o-1"], seen["shipping got o-2"])
	// Output:
	// true true true true
}

// Client gives each simulated process its own connection: closing one
// closes its subscriptions only, as when a process dies, and its
// unacknowledged deliveries go to the group's other subscribers.
func ExampleClient() {
	ctx := context.Background()
	b := memorybroker.New(memorybroker.Options{})
	defer b.Close(ctx)

	crashing, healthy := memorybroker.Client(b), memorybroker.Client(b)
	held := make(chan struct{})
	_, _ = crashing.Subscribe(ctx, "orders", "billing", func(ctx context.Context, d broker.Delivery) error {
		close(held) // takes the delivery and never settles it
		return nil
	})
	_ = b.Publish(ctx, "orders", eventkit.New("order.created", "application/json", []byte(`{}`), eventkit.WithSubject("o-1")))
	<-held
	// The "process" dies: Close waits for unsettled deliveries only until
	// its ctx ends, then hands them back to the group.
	dead, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	_ = crashing.Close(dead)
	cancel()

	got := make(chan string, 1)
	sub, _ := healthy.Subscribe(ctx, "orders", "billing", func(ctx context.Context, d broker.Delivery) error {
		got <- fmt.Sprintf("%s again, attempt %d", d.Event().Subject, d.Attempt())
		return d.Ack(ctx)
	})
	defer sub.Close(ctx)
	fmt.Println(<-got)
	// Output:
	// o-1 again, attempt 2
}
