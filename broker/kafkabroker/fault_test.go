package kafkabroker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// timeline records deliveries from several subscriptions in the order the
// handlers saw them.
type timeline struct {
	mu   sync.Mutex
	seen []eventkit.Event
	ch   chan struct{}
}

func newTimeline() *timeline { return &timeline{ch: make(chan struct{}, 1)} }

func (tl *timeline) add(e eventkit.Event) {
	tl.mu.Lock()
	tl.seen = append(tl.seen, e.Clone())
	tl.mu.Unlock()
	select {
	case tl.ch <- struct{}{}:
	default:
	}
}

// waitDistinct waits until n distinct event ids were seen.
func (tl *timeline) waitDistinct(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		tl.mu.Lock()
		ids := map[string]bool{}
		for _, e := range tl.seen {
			ids[e.ID] = true
		}
		tl.mu.Unlock()
		if len(ids) >= n {
			return
		}
		select {
		case <-tl.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("saw %d distinct events of %d after %v", len(ids), n, timeout)
		}
	}
}

// check verifies that every published event was seen and that, per subject,
// first deliveries follow publish order. It returns the duplicate count.
func (tl *timeline) check(t *testing.T, published []eventkit.Event) int {
	t.Helper()
	pos := map[string]int{}
	for i, e := range published {
		pos[e.ID] = i
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	first := map[string]bool{}
	last := map[string]int{}
	dups := 0
	for _, e := range tl.seen {
		if first[e.ID] {
			dups++
			continue
		}
		first[e.ID] = true
		p, ok := pos[e.ID]
		if !ok {
			t.Fatalf("unexpected event %s", e.ID)
		}
		if l, ok := last[e.Subject]; ok && p < l {
			t.Fatalf("subject %s: event #%d first delivered after #%d", e.Subject, p, l)
		}
		last[e.Subject] = p
	}
	for _, e := range published {
		if !first[e.ID] {
			t.Fatalf("event %s (subject %s) lost", e.ID, e.Subject)
		}
	}
	return dups
}

func mkEvents(n, subjects int) []eventkit.Event {
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("test.event", "application/json", fmt.Appendf(nil, `{"n":%d}`, i),
			eventkit.WithSubject(fmt.Sprintf("agg-%d", i%subjects)), eventkit.WithSource("/kafkatest"))
	}
	return evs
}

// asyncAck acks each delivery from another goroutine after a short random
// delay, as a worker pool would: acks arrive out of order, deliveries stay
// in order.
func asyncAck(tl *timeline, wg *sync.WaitGroup) broker.Handler {
	return func(ctx context.Context, d broker.Delivery) error {
		tl.add(d.Event())
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			_ = d.Ack(context.Background())
		}()
		return nil
	}
}

// A rebalance while deliveries are in flight (a member joins, then the
// first one leaves) loses nothing and keeps per-subject order.
func TestRebalanceInFlight(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	opts := testOptions(c)
	pub, b1, b2 := newBroker(t, opts), newBroker(t, opts), newBroker(t, opts)
	var acks sync.WaitGroup
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b1.Close(ctx)
		_ = b2.Close(ctx)
		_ = pub.Close(ctx)
		acks.Wait()
	}()
	ctx := context.Background()
	topic := testenv.Name("reb")
	tl := newTimeline()
	sub1, err := b1.Subscribe(ctx, topic, "g", asyncAck(tl, &acks), broker.WithMaxInFlight(64))
	if err != nil {
		t.Fatal(err)
	}
	waitAssigned(t, sub1)

	evs := mkEvents(2000, 40)
	published := make(chan int, 1)
	go func() {
		defer close(published)
		for i := 0; i < len(evs); i += 50 {
			if err := pub.Publish(ctx, topic, evs[i:i+50]...); err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	tl.waitDistinct(t, 400, 20*time.Second)
	sub2, err := b2.Subscribe(ctx, topic, "g", asyncAck(tl, &acks), broker.WithMaxInFlight(64))
	if err != nil {
		t.Fatal(err)
	}
	waitAssigned(t, sub2)
	tl.waitDistinct(t, 1000, 20*time.Second)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := sub1.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	cancel()
	<-published
	tl.waitDistinct(t, len(evs), 30*time.Second)
	dups := tl.check(t, evs)
	// Graceful rebalances with fast handlers normally duplicate nothing;
	// under heavy load a member can miss its session and lose partitions
	// without a revoke, which redelivers from the last commit (allowed:
	// at least once).
	t.Logf("%d events, %d duplicates across two rebalances", len(evs), dups)
}

// Losing a broker (the group coordinator and a partition leader) while
// publishing and consuming loses nothing.
func TestBrokerLoss(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	opts := testOptions(c)
	pub, b1 := newBroker(t, opts), newBroker(t, opts)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b1.Close(ctx)
		_ = pub.Close(ctx)
	}()
	ctx := context.Background()
	topic := testenv.Name("loss")
	tl := newTimeline()
	sub, err := b1.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		tl.add(d.Event())
		return d.Ack(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitAssigned(t, sub)
	evs := mkEvents(2000, 20)
	for i := 0; i < 1000; i += 50 {
		if err := pub.Publish(ctx, topic, evs[i:i+50]...); err != nil {
			t.Fatal(err)
		}
	}
	tl.waitDistinct(t, 500, 20*time.Second)
	victim := c.CoordinatorFor(DefaultGroupID(topic, "g"))
	if err := c.RemoveNode(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("removed broker %d (group coordinator)", victim)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i := 1000; i < len(evs); i += 50 {
		if err := pub.Publish(pctx, topic, evs[i:i+50]...); err != nil {
			t.Fatalf("Publish after losing a broker: %v", err)
		}
	}
	tl.waitDistinct(t, len(evs), 30*time.Second)
	dups := tl.check(t, evs)
	t.Logf("%d events, %d duplicates", len(evs), dups)
}
