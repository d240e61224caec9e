package consumer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/internal/testenv"
)

// withDeliveryCtx gives every delivery a context of its own (as a Kafka
// partition or a RabbitMQ channel does), cancelled through cancels.
type withDeliveryCtx struct {
	broker.Broker
	mu      sync.Mutex
	cancels map[string]context.CancelFunc // by event id
}

func (b *withDeliveryCtx) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	return b.Broker.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		dctx, cancel := context.WithCancel(context.Background())
		b.mu.Lock()
		b.cancels[d.Event().ID] = cancel
		b.mu.Unlock()
		return h(ctx, ctxDelivery{d, dctx})
	}, opts...)
}

func (b *withDeliveryCtx) cancel(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.cancels[id]
	if ok {
		c()
	}
	return ok
}

type ctxDelivery struct {
	broker.Delivery
	ctx context.Context
}

func (d ctxDelivery) Context() context.Context { return d.ctx }

// The handler's context ends when its delivery's context does (a revoked
// partition, a lost channel), whether the handler waits on Done or only
// looks at Err, and it keeps the consumer's values and deadline.
func TestHandlerContextEndsWithDelivery(t *testing.T) {
	t.Parallel()
	b := &withDeliveryCtx{Broker: newBroker(t), cancels: map[string]context.CancelFunc{}}
	topic := testenv.Name("t")
	const timeout = time.Minute
	c := newConsumer(t, b, consumer.Config{Concurrency: 2, HandlerTimeout: timeout, Retry: consumer.RetryPolicy{MaxAttempts: 1}})
	type result struct {
		how string
		err error
		dl  bool
	}
	results := make(chan result, 2)
	var seen sync.Map
	if err := c.HandleFunc(topic, "g", func(ctx context.Context, e eventkit.Event) error {
		if _, again := seen.LoadOrStore(e.ID, true); again {
			return nil // handed back after its delivery ended, delivered again
		}
		dl, ok := ctx.Deadline()
		hasDL := ok && time.Until(dl) > timeout/2
		if _, ok := consumer.MetaFrom(ctx); !ok {
			hasDL = false
		}
		switch e.Subject {
		case "waits":
			<-ctx.Done()
			results <- result{"Done", ctx.Err(), hasDL}
		case "polls":
			for ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			results <- result{"Err", ctx.Err(), hasDL}
		}
		return ctx.Err()
	}); err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waits, polls := ev("thing.happened", "waits", `{}`), ev("thing.happened", "polls", `{}`)
	publish(t, b, topic, waits, polls)
	for _, e := range []eventkit.Event{waits, polls} {
		eventually(t, 10*time.Second, "delivered", func() bool { return b.cancel(e.ID) })
	}
	for range 2 {
		select {
		case r := <-results:
			if !errors.Is(r.err, context.Canceled) || !r.dl {
				t.Errorf("handler that looks at %s: err %v, deadline and meta kept %v; want context.Canceled, true", r.how, r.err, r.dl)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a handler was not cancelled when its delivery's context ended")
		}
	}
}
