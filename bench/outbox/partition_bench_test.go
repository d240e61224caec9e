package outboxbench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"


	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/nats"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
)

const (
	nPart      = 20000 // events per partitioned drain
	partitions = 16
	partBatch  = 500
)

// cpuTime is this process's user+system CPU time so far (the relays run in
// it; the database and NATS server do not).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// drainRelays fills an outbox of parts partitions (1: not split) with
// nPart 1 KB events over 100 subjects, then runs k relays on it (each its
// own Relay, instance and NATS connection, as k processes would) until all
// are delivered. It returns the drain time and the relays' CPU time.
func (e *env) drainRelays(b *testing.B, parts, k int) (time.Duration, time.Duration) {
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
	c0, t0 := cpuTime(), time.Now()
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
		if n >= nPart {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d relays on %d partitions: %d of %d delivered", k, parts, n, nPart)
		}
		time.Sleep(time.Millisecond)
	}
	d, cpu := time.Since(t0), cpuTime()-c0
	cancel()
	wg.Wait()
	e.checkStream(b, brs[0].StreamName(topic), nPart+1)
	return d, cpu
}

// BenchmarkPartitionedDrain drains 20,000 events over 100 subjects from an
// outbox of 16 partitions with 1, 2 and 4 relay instances (in this
// process, each with its own NATS connection), next to one relay on an
// unsplit outbox, in the same run, the order of the contenders reversed
// every other round. It reports events/s and the relays' CPU per event
// (this process only: PostgreSQL's and NATS's CPU are not in it).
func BenchmarkPartitionedDrain(b *testing.B) {
	e := newEnv(b)
	type contender struct {
		name     string
		parts, k int
	}
	cs := []contender{{"unsplit-1", 1, 1}, {"p16-1", partitions, 1}, {"p16-2", partitions, 2}, {"p16-4", partitions, 4}}
	dur := map[string]time.Duration{}
	cpu := map[string]time.Duration{}
	runs := map[string]int{}
	var drains []string
	for i := range b.N {
		order := slices.Clone(cs)
		if (i+round)%2 == 1 {
			slices.Reverse(order)
		}
		for _, c := range order {
			d, u := e.drainRelays(b, c.parts, c.k)
			dur[c.name] += d
			cpu[c.name] += u
			runs[c.name]++
			drains = append(drains, fmt.Sprintf("%s %.0f/s", c.name, nPart/d.Seconds()))
		}
	}
	round++
	b.ReportMetric(0, "ns/op")
	var lines []string
	base := float64(nPart*runs["unsplit-1"]) / dur["unsplit-1"].Seconds()
	for _, c := range cs {
		rate := float64(nPart*runs[c.name]) / dur[c.name].Seconds()
		perEv := cpu[c.name] / time.Duration(nPart*runs[c.name])
		b.ReportMetric(rate, c.name+"-events/s")
		b.ReportMetric(float64(perEv.Nanoseconds())/1000, c.name+"-cpu-µs/event")
		lines = append(lines, fmt.Sprintf("%-10s %10.0f %8.2fx %10.1f", c.name, rate, rate/base, float64(perEv.Nanoseconds())/1000))
	}
	b.Logf("\n%-10s %10s %9s %10s\n%s\ndrains: %s", "relays", "events/s", "vs unsplit", "cpu µs/ev", strings.Join(lines, "\n"), strings.Join(drains, ", "))
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
