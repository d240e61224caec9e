package kafkabroker

import (
	"context"
	"testing"
	"time"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// waitLag polls ConsumerLag until it reports want (commits are
// asynchronous) and fails with the last figure otherwise.
func waitLag(t *testing.T, b *Broker, topic, group string, want int64) {
	t.Helper()
	var lag int64
	var ok bool
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		lag, ok, err = b.ConsumerLag(context.Background(), topic, group)
		if err == nil && ok && lag == want {
			return
		}
	}
	t.Fatalf("ConsumerLag(%s, %s) = %d, %v, %v; want %d, true", topic, group, lag, ok, err, want)
}

// Publish N, settle the first k in order: the group's lag is N-k; a group
// that never subscribed and a topic that does not exist are not known.
func TestConsumerLag(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	opts := testOptions(c)
	opts.Partitions = 1 // one partition: settling the first k commits offset k
	b := newBroker(t, opts)
	closeAll(t, b)
	ctx := context.Background()
	topic := testenv.Name("lag")
	const n, k = 10, 4
	if err := b.Provision(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.ConsumerLag(ctx, topic, "g"); err != nil || ok {
		t.Fatalf("group that never subscribed: ok=%v err=%v, want not known", ok, err)
	}
	if _, ok, err := b.ConsumerLag(ctx, testenv.Name("nosuch"), "g"); err != nil || ok {
		t.Fatalf("missing topic: ok=%v err=%v, want not known", ok, err)
	}
	if err := b.Publish(ctx, topic, mkEvents(n, 1)...); err != nil {
		t.Fatal(err)
	}
	ch := make(chan got, n)
	sub, err := b.Subscribe(ctx, topic, "g", collect(ch, func(broker.Delivery) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sub.Close(cctx)
	}()
	waitAssigned(t, sub)
	var ds []broker.Delivery
	for range n {
		ds = append(ds, next(t, ch).d)
	}
	waitLag(t, b, topic, "g", n) // a member, nothing committed: everything
	for _, d := range ds[:k] {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitLag(t, b, topic, "g", n-k)
	for _, d := range ds[k:] {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitLag(t, b, topic, "g", 0)
	if _, _, err := b.ConsumerLag(ctx, topic, "bad:group"); err == nil {
		t.Fatal("invalid group name: no error")
	}
}
