package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox/lruinbox"
)

type OrderCreated struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount"`
}

// A typed handler through a registry, an inbox, retries and a dead letter.
func Example() {
	reg := eventkit.NewRegistry()
	eventkit.MustRegister[OrderCreated](reg, "order.created", "1", eventkit.JSON)

	b := memorybroker.New(memorybroker.Options{})
	defer b.Close(context.Background())

	handled := make(chan string, 10)
	r := consumer.NewRouter(reg)
	consumer.On(r, "order.created", func(ctx context.Context, o OrderCreated, ev eventkit.Event) error {
		if o.Amount < 0 {
			return eventkit.Permanent(errors.New("negative amount"))
		}
		handled <- fmt.Sprintf("order %s: %d", o.OrderID, o.Amount)
		return nil
	})

	c, err := consumer.New(b, consumer.Config{
		Concurrency: 4,
		Mode:        consumer.PerSubject(),
		Inbox:       lruinbox.New(lruinbox.Options{}),
		Retry:       consumer.RetryPolicy{MaxAttempts: 3, Initial: 10 * time.Millisecond},
		Logger:      quietLogger(),
	})
	if err != nil {
		panic(err)
	}
	_ = c.Handle("orders", "billing", r)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()

	good, _ := eventkit.NewTyped(reg, OrderCreated{OrderID: "o-1", Amount: 42}, eventkit.WithSubject("o-1"))
	bad, _ := eventkit.NewTyped(reg, OrderCreated{OrderID: "o-2", Amount: -1}, eventkit.WithSubject("o-2"))
	_ = b.Publish(ctx, "orders", good, good, bad) // good twice: the inbox drops the copy

	fmt.Println(<-handled)
	for c.Stats().DeadLettered == 0 || c.Stats().Duplicates == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	s := c.Stats()
	fmt.Printf("handled=%d duplicates=%d dead-lettered=%d\n", s.Handled, s.Duplicates, s.DeadLettered)
	// Output:
	// order o-1: 42
	// handled=1 duplicates=1 dead-lettered=1
}

// Reading a dead letter back, and replaying it to its original topic.
func Example_deadLetter() {
	b := memorybroker.New(memorybroker.Options{})
	defer b.Close(context.Background())
	ctx := context.Background()

	dlqEvents := make(chan eventkit.Event, 1)
	c, _ := consumer.New(b, consumer.Config{Retry: consumer.RetryPolicy{MaxAttempts: 2, Initial: time.Millisecond}, Logger: quietLogger()})
	_ = c.Handle("payments", "ledger", consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
		return errors.New("ledger unavailable")
	}))
	_ = c.Handle("payments.dlq", "inspector", consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
		dlqEvents <- ev
		return nil
	}))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- c.Run(rctx) }()

	_ = b.Publish(ctx, "payments", eventkit.New("payment.received", "application/json", []byte(`{}`)))
	dl := <-dlqEvents
	cancel()
	<-done

	info, _ := deadletter.InfoOf(dl)
	fmt.Println(info.Topic, info.Group, info.Attempts, info.Reason, info.Error)
	orig := deadletter.Original(dl) // the original id, type and data, no dlq* extensions
	fmt.Println(orig.Type, orig.ID == info.EventID, len(orig.Extensions))
	replay := deadletter.Replay(dl) // an id of its own, for the ledger group only
	fmt.Println(replay.Extension(deadletter.ExtReplayOf) == info.EventID, replay.Extension(deadletter.ExtReplayGroup))
	_ = b.Publish(ctx, info.Topic, replay)
	// Output:
	// payments ledger 2 max-attempts ledger unavailable
	// payment.received true 0
	// true ledger
}
