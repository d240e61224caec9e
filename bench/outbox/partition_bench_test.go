package outboxbench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
)

const (
	nPart      = 20000 // events per partitioned drain
	partitions = 16
	partBatch  = 500
)

// drainRelays fills an outbox of parts partitions (1: not split) with
// nPart 1 KB events over 100 subjects, then runs k relays on it (each its
// own Relay, instance and NATS connection, as k processes would) until all
// are delivered, on clock.
func (e *env) drainRelays(b *testing.B, clock *benchkit.Clock, nPart, parts, k int) {
	ctx := context.Background()
	s := e.newStore(b)
	b.Cleanup(func() {
		_, _ = e.pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+s.Table()+`_leases, `+s.Table()+`_relays, `+s.Table()+`_subject_seq`)
	})
	if parts > 1 {
		if err := s.SetPartitions(ctx, parts); err != nil {
			b.Fatal(err)
		}
	}
	topic := testenv.Name("ekpart")
	e.fill(b, s, topic, nPart)
	var brs []*natsbroker.Broker
	for range k {
		br, err := natsbroker.Connect(ctx, e.natsURL, natsbroker.Options{StreamPrefix: "OBENCH_", PublishWindow: partBatch})
		if err != nil {
			b.Fatal(err)
		}
		brs = append(brs, br)
	}
	defer func() {
		_ = brs[0].DeleteTopic(context.Background(), topic)
		for _, br := range brs {
			_ = br.Close(context.Background())
		}
	}()
	// Create the stream before the clock starts.
	if err := brs[0].Publish(ctx, topic, eventkit.New("bench.warm", "text/plain", []byte("w"))); err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var relays []*outbox.Relay
	clock.Start()
	for i := range k {
		r := outbox.NewRelay(s, brs[i], outbox.RelayConfig{BatchSize: partBatch, StatusInterval: -1, Logger: quiet,
			Instance: fmt.Sprintf("bench-%d", i), LeaseTTL: 2 * time.Second})
		relays = append(relays, r)
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(rctx) }()
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var n int64
		for _, r := range relays {
			n += r.Stats().Delivered
		}
		if n >= int64(nPart) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d relays on %d partitions: %d of %d delivered", k, parts, n, nPart)
		}
		time.Sleep(time.Millisecond)
	}
	clock.Stop()
	cancel()
	wg.Wait()
	e.checkStream(b, brs[0].StreamName(topic), uint64(nPart)+1)
}

// BenchmarkPartitionedDrain drains 20,000 events over 100 subjects from an
// outbox of 16 partitions with 1, 2 and 4 relay instances (in this
// process, each with its own NATS connection), next to one relay on an
// unsplit outbox (the baseline), alternated over rounds, each from a
// fresh table filled the same way.
func BenchmarkPartitionedDrain(b *testing.B) {
	e := newEnv(b)
	n := benchtest.Events(nPart)
	c := func(name string, parts, k int) benchkit.Contender {
		return benchkit.Contender{Name: name, Run: func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			e.drainRelays(b, clock, n, parts, k)
			return n, nil, nil
		}}
	}
	benchtest.Compare(b, benchkit.NewMeter(e.natsURL, e.pgURL),
		c("unsplit-1", 1, 1), c("p16-1", partitions, 1), c("p16-2", partitions, 2), c("p16-4", partitions, 4))
}

// ackTimer records, for each confirmed event, the time from its commit.
type ackTimer struct {
	broker.Publisher
	mu        sync.Mutex
	committed map[string]time.Time
	lat       []time.Duration
}

func (a *ackTimer) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	err := a.Publisher.Publish(ctx, topic, events...)
	now := time.Now()
	failed := map[int]bool{}
	if err != nil {
		if pe, ok := err.(*broker.PublishError); ok {
			for _, f := range pe.Failed {
				failed[f.Index] = true
			}
		} else {
			return err
		}
	}
	ids := make([]string, 0, len(events))
	for i, e := range events {
		if !failed[i] {
			ids = append(ids, e.ID)
		}
	}
	a.acked(ids, now)
	return err
}

// committed records the moment id's transaction committed (or, called
// before the commit, a moment the ack cannot precede).
func (a *ackTimer) commit(id string, t time.Time, replaceOnly bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.committed[id]; ok || !replaceOnly {
		a.committed[id] = t
	}
}

// acked records the commit-to-ack latency of the events ids acked at now.
func (a *ackTimer) acked(ids []string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range ids {
		if t, ok := a.committed[id]; ok {
			a.lat = append(a.lat, now.Sub(t))
			delete(a.committed, id)
		}
	}
}
