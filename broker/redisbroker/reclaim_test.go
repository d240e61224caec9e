package redisbroker_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// Entries a crashed consumer left pending are reclaimed even while this
// consumer's window is kept full by its own nacked entries, as a strict
// order consumer's is by early events it gives back: the crashed
// consumer's entries are the ones the subjects wait for. The reader used to
// redeliver its own due nacks into every slot that freed, so XAUTOCLAIM
// never found room and the abandoned entries stayed pending for good (the
// 20,000-event Redis fault run applied 1-1.6 events/s after its faults).
func TestReclaimNotStarvedByOwnNacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	topic := testenv.Name("starve")
	ctx := context.Background()

	// B reads 4 entries and crashes: its connection goes, nothing settled.
	o, _ := goredis.ParseURL(e.url)
	client := goredis.NewClient(o)
	bb := e.broker(t, redisbroker.Options{Client: client})
	abandoned := events(4)
	if err := bb.Publish(ctx, topic, abandoned...); err != nil {
		t.Fatal(err)
	}
	h, ch := collect()
	subscribe(t, bb, topic, "g", h, broker.WithMaxInFlight(4))
	recv(t, ch, len(abandoned), 10*time.Second)
	_ = client.Close()

	// A: its own 16 entries are held for a while and given back with a
	// short delay, so its window of 4 is nearly always full; the abandoned
	// ones are acked.
	b := e.broker(t, redisbroker.Options{})
	if err := b.Publish(ctx, topic, events(16)...); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, ev := range abandoned {
		want[ev.ID] = true
	}
	var mu sync.Mutex
	got := map[string]bool{}
	var nacks atomic.Int64
	subscribe(t, b, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		if want[d.Event().ID] {
			mu.Lock()
			got[d.Event().ID] = true
			mu.Unlock()
			return d.Ack(ctx)
		}
		// Held a while, as the runtime holds an early event, then given
		// back from another goroutine.
		nacks.Add(1)
		go func() {
			time.Sleep(20 * time.Millisecond)
			_ = d.Nack(context.Background(), 5*time.Millisecond)
		}()
		return nil
	}, broker.WithAckWait(200*time.Millisecond), broker.WithMaxInFlight(4))

	const limit = 150
	testenv.WaitFor(t, 60*time.Second, "the crashed consumer's entries", func() bool {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == len(abandoned) {
			return true
		}
		if k := nacks.Load(); k >= limit {
			t.Fatalf("%d of the crashed consumer's %d entries reclaimed after %d redeliveries of our own nacked entries", n, len(abandoned), k)
		}
		return false
	})
	t.Logf("reclaimed all %d after %d own redeliveries", len(abandoned), nacks.Load())
}
