package redisbroker_test

import (
	"context"
	"testing"
	"time"

	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

func lagOf(t *testing.T, b *redisbroker.Broker, topic, group string) (int64, bool) {
	t.Helper()
	lag, ok, err := b.ConsumerLag(context.Background(), topic, group)
	if err != nil {
		t.Fatal(err)
	}
	return lag, ok
}

// Publish N, settle k: the group's lag (pending plus undelivered) is N-k,
// also when entries deleted from the middle of the stream keep Redis from
// computing the lag itself; a missing stream or group is not known.
func TestConsumerLag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{})
	ctx := context.Background()
	topic := testenv.Name("lag")
	const n, k = 10, 4
	if _, ok := lagOf(t, b, topic, "g"); ok {
		t.Fatal("missing stream: known")
	}
	if err := b.Provision(ctx, topic, "g"); err != nil {
		t.Fatal(err)
	}
	if _, ok := lagOf(t, b, topic, "other"); ok {
		t.Fatal("missing group: known")
	}
	if err := b.Publish(ctx, topic, events(n)...); err != nil {
		t.Fatal(err)
	}
	if lag, ok := lagOf(t, b, topic, "g"); !ok || lag != n {
		t.Fatalf("before consuming: lag %d, %v; want %d", lag, ok, n)
	}
	h, ch := collect()
	sub := subscribe(t, b, topic, "g", h)
	ds := recv(t, ch, n, 10*time.Second)
	if lag, ok := lagOf(t, b, topic, "g"); !ok || lag != n {
		t.Fatalf("all delivered, none settled: lag %d, %v; want %d", lag, ok, n)
	}
	for _, d := range ds[:k] {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Acks are written asynchronously (Options.SyncAck): wait for them.
	var lag int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if lag, _ = lagOf(t, b, topic, "g"); lag == n-k {
			break
		}
	}
	if lag != n-k {
		t.Fatalf("k settled: lag %d; want %d", lag, n-k)
	}
	for _, d := range ds[k:] {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = sub.Close(cctx)

	// A second group that has read nothing, after an entry in the middle
	// was deleted: Redis reports no lag, the adapter counts.
	if err := b.Provision(ctx, topic, "late"); err != nil {
		t.Fatal(err)
	}
	msgs, err := e.raw.XRange(ctx, e.prefix+topic, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.raw.XDel(ctx, e.prefix+topic, msgs[n/2].ID).Err(); err != nil {
		t.Fatal(err)
	}
	if lag, ok := lagOf(t, b, topic, "late"); !ok || lag != n-1 {
		t.Fatalf("after XDEL: lag %d, %v; want %d", lag, ok, n-1)
	}
	if _, _, err := b.ConsumerLag(ctx, topic, ""); err == nil {
		t.Fatal("empty group: no error")
	}
}
