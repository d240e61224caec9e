package rabbitmqbroker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// Publish N, consume k: the group's queue depth is N-k once the
// subscription has handed back what it held unsettled; a group with a '.'
// (queue "<topic>:<group>") is found; a group without a queue is not known.
func TestConsumerLag(t *testing.T) {
	t.Parallel()
	for _, group := range []string{"g", "a.b"} {
		t.Run(group, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, rabbitmqbroker.Options{})
			ctx := ctxT(t, 30*time.Second)
			topic := testenv.Name("ekt-lag")
			if err := b.Provision(ctx, topic, group); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = b.DeleteTopology(cctx, topic, group)
			})
			const n, k = 10, 4
			if _, ok, err := b.ConsumerLag(ctx, topic, "nosuch"); err != nil || ok {
				t.Fatalf("group without a queue: ok=%v err=%v, want not known", ok, err)
			}
			if err := b.Publish(ctx, topic, mk(n)...); err != nil {
				t.Fatal(err)
			}
			waitLag(t, b, topic, group, n)
			var seen atomic.Int32
			ch, h := collect(func(d broker.Delivery) error {
				if seen.Add(1) <= k {
					return d.Ack(context.Background())
				}
				return nil // held unsettled: handed back on Close
			})
			sub, err := b.Subscribe(ctx, topic, group, h)
			if err != nil {
				t.Fatal(err)
			}
			for range k {
				next(t, ch, 10*time.Second)
			}
			for seen.Load() < k {
				time.Sleep(10 * time.Millisecond)
			}
			if err := sub.Close(ctx); err != nil {
				t.Fatal(err)
			}
			waitLag(t, b, topic, group, n-k)
			// The same connection still works after the failed passive
			// declaration of a missing queue.
			if _, ok, err := b.ConsumerLag(ctx, topic, "nosuch"); err != nil || ok {
				t.Fatalf("group without a queue: ok=%v err=%v", ok, err)
			}
			waitLag(t, b, topic, group, n-k)
		})
	}
}

func waitLag(t *testing.T, b *rabbitmqbroker.Broker, topic, group string, want int64) {
	t.Helper()
	var lag int64
	var ok bool
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if lag, ok, err = b.ConsumerLag(context.Background(), topic, group); err == nil && ok && lag == want {
			return
		}
	}
	t.Fatalf("ConsumerLag(%s, %s) = %d, %v, %v; want %d", topic, group, lag, ok, err, want)
}
