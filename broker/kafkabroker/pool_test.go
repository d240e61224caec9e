package kafkabroker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// Behind a worker pool (deliveries acked out of order from other
// goroutines) everything is delivered once and offset commits (including
// the delivered-marker commits) stay batched, not one per record.
func TestWorkerPoolCommitsBatched(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	br := newBroker(t, testOptions(c))
	closeAll(t, br)
	ctx := context.Background()
	topic := testenv.Name("pool")
	const n = 2000
	evs := mkEvents(n, 50)
	for i := 0; i < n; i += 100 {
		if err := br.Publish(ctx, topic, evs[i:i+100]...); err != nil {
			t.Fatal(err)
		}
	}
	work := make(chan broker.Delivery, 64)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				_ = d.Ack(ctx)
			}
		}()
	}
	tl := newTimeline()
	sub, err := br.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		tl.add(d.Event())
		work <- d
		return nil
	}, broker.WithMaxInFlight(64))
	if err != nil {
		t.Fatal(err)
	}
	tl.waitDistinct(t, n, 30*time.Second)
	s := sub.(*Subscription)
	waitCommitted(t, s)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sub.Close(cctx); err != nil {
		t.Fatal(err)
	}
	close(work)
	wg.Wait()
	if dups := tl.check(t, evs); dups > 0 {
		t.Errorf("%d duplicates without any failure", dups)
	}
	s.mu.Lock()
	commits := s.commits
	s.mu.Unlock()
	t.Logf("%d events, %d offset commits", n, commits)
	if commits > n/10 {
		t.Errorf("%d commits for %d events: commits are not batched", commits, n)
	}
}
