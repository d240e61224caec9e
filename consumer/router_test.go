package consumer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/internal/testenv"
)

type Shipped struct {
	OrderID string `json:"order_id"`
}

// The router decodes registered types, dead-letters types without a route
// (reason no-route) unless Unhandled is set or IgnoreUnrouted called, and
// dead-letters payloads it cannot decode at once.
func TestRouter(t *testing.T) {
	t.Parallel()
	reg := eventkit.NewRegistry()
	eventkit.MustRegister[Shipped](reg, "order.shipped", "1", eventkit.JSON)
	b := newBroker(t)
	topic := testenv.Name("t")
	dlq := collect(t, b, topic+".dlq")
	got := make(chan Shipped, 1)
	var unhandled atomic.Int32
	r := consumer.NewRouter(reg)
	consumer.On(r, "order.shipped", func(ctx context.Context, s Shipped, ev eventkit.Event) error {
		got <- s
		return nil
	})
	defer func() {
		if recover() == nil {
			t.Error("duplicate route did not panic")
		}
	}()
	c := newConsumer(t, b, consumer.Config{Retry: fastRetry(5)})
	_ = c.Handle(topic, "g", r)
	start(t, c)

	ok, _ := eventkit.NewTyped(reg, Shipped{OrderID: "o-9"})
	other := ev("order.cancelled", "o-9", `{}`)
	badVersion := ok.Clone()
	badVersion.ID = eventkit.NewID()
	badVersion.DataVersion = "7"
	publish(t, b, topic, ok, other, badVersion)
	if s := <-got; s.OrderID != "o-9" {
		t.Fatalf("got %+v", s)
	}
	reasons := map[string]deadletter.Info{}
	for range 2 {
		info, _ := deadletter.InfoOf(receive(t, dlq, 5*time.Second))
		reasons[info.EventID] = info
	}
	if info := reasons[badVersion.ID]; info.Reason != deadletter.ReasonPermanent || info.Attempts != 1 {
		t.Fatalf("dead letter of the bad version %+v", info)
	}
	if info := reasons[other.ID]; info.Reason != deadletter.ReasonNoRoute || info.Attempts != 1 {
		t.Fatalf("dead letter of the unknown type %+v", info)
	}
	eventually(t, 5*time.Second, "two dead letters", func() bool { return c.Stats().DeadLettered == 2 })
	if s := c.Stats(); s.Handled != 1 {
		t.Fatalf("stats %+v: the unknown type counted as handled", s)
	}

	r.IgnoreUnrouted()
	publish(t, b, topic, ev("order.cancelled", "o-11", `{}`))
	eventually(t, 5*time.Second, "the ignored type acked", func() bool { return c.Stats().Handled == 2 })

	r.Unhandled(consumer.HandlerFunc(func(context.Context, eventkit.Event) error { unhandled.Add(1); return nil }))
	publish(t, b, topic, ev("order.cancelled", "o-10", `{}`))
	eventually(t, 5*time.Second, "Unhandled called", func() bool { return unhandled.Load() == 1 })
	r.Route("order.shipped", consumer.HandlerFunc(func(context.Context, eventkit.Event) error { return nil }))
}
