package consumer_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// BenchmarkConsume measures consume throughput through the memory broker
// and NATS JetStream: the raw nats.go JetStream consumer (NATS only) and the
// raw adapter subscription (AutoAck, one call at a time) as baselines,
// then the runtime with no inbox, the Redis inbox and the Postgres inbox,
// at concurrency 1, 8 and 64. Events are published before the timer starts;
// the timer stops when every one has been acked.
//
//	go test -run '^$' -bench . ./consumer
func BenchmarkConsume(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		benchConsume(b, func(b *testing.B) (broker.Broker, string) {
			br := newBroker(b)
			return br, testenv.Name("bench")
		})
	})
	b.Run("nats", func(b *testing.B) {
		b.Run("raw-nats.go", func(b *testing.B) {
			nb, newTopic := natsBroker(b)
			topic := newTopic()
			prepublish(b, nb, topic)
			ctx := context.Background()
			cons, err := nb.JetStream().CreateOrUpdateConsumer(ctx, nb.StreamName(topic), jetstream.ConsumerConfig{
				Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 256})
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			done := make(chan struct{})
			b.ResetTimer()
			cc, err := cons.Consume(func(msg jetstream.Msg) {
				_ = msg.Ack()
				if n.Add(1) == int64(b.N) {
					close(done)
				}
			}, jetstream.PullMaxMessages(256))
			if err != nil {
				b.Fatal(err)
			}
			<-done
			b.StopTimer()
			report(b)
			cc.Stop()
		})
		benchConsume(b, func(b *testing.B) (broker.Broker, string) {
			nb, newTopic := natsBroker(b)
			return nb, newTopic()
		})
	})
}

// benchConsume runs the raw adapter subscription and the runtime (no inbox,
// Redis inbox, Postgres inbox; concurrency 1, 8, 64) on brokers from newB.
func benchConsume(b *testing.B, newB func(b *testing.B) (broker.Broker, string)) {
	b.Run("raw-broker", func(b *testing.B) {
		br, topic := newB(b)
		prepublish(b, br, topic)
		b.ResetTimer()
		rawConsume(b, br, topic)
		report(b)
	})
	for _, kind := range []string{"none", "redis", "postgres", "postgres-batch64"} {
		for _, conc := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("inbox=%s/concurrency=%d", kind, conc), func(b *testing.B) {
				cfg := consumer.Config{Concurrency: conc, Logger: quietLogger()}
				switch kind {
				case "redis":
					cfg.Inbox = redisStore(b).in
				case "postgres", "postgres-batch64":
					st := sqlStore(b, "postgres", "pgx", testenv.Postgres.URL(b), sqlinbox.Postgres)
					cfg.Inbox = st.in
					if kind == "postgres-batch64" {
						cfg.InboxBatch = 64
					}
				}
				benchRuntime(b, cfg, newB)
			})
		}
	}
}

// BenchmarkPostgresInbox compares the Postgres inbox (database/sql over
// pgx's stdlib driver, and pgx directly) without batching (one commit per
// event, batch=1) and in batch mode (InboxBatch 64), at concurrency 1, 8
// and 64, through the memory broker. Each handler writes one row through
// the inbox transaction (its own row: no contention between events).
//
//	go test -run '^$' -bench 'Postgres' -benchtime=3000x ./consumer
func BenchmarkPostgresInbox(b *testing.B) {
	for _, driver := range []string{"sql", "pgx"} {
		for _, batch := range []int{1, 64} {
			for _, conc := range []int{1, 8, 64} {
				b.Run(fmt.Sprintf("driver=%s/batch=%d/concurrency=%d", driver, batch, conc), func(b *testing.B) {
					var st *store
					if driver == "pgx" {
						st = pgxStore(b)
					} else {
						st = sqlStore(b, "postgres", "pgx", testenv.Postgres.URL(b), sqlinbox.Postgres)
					}
					cfg := consumer.Config{Concurrency: conc, Logger: quietLogger(), Inbox: st.in, InboxBatch: batch}
					benchRuntimeWith(b, cfg, func(b *testing.B) (broker.Broker, string) {
						return newBroker(b), testenv.Name("bench")
					}, func(ctx context.Context, e eventkit.Event) error { return st.bump(ctx, e.ID) })
				})
			}
		}
	}
}

// rawConsume consumes b.N events of topic with a plain adapter subscription
// (AutoAck, one call at a time) and stops the timer after the last one.
func rawConsume(b *testing.B, br broker.Subscriber, topic string) {
	var n atomic.Int64
	done := make(chan struct{})
	sub, err := br.Subscribe(context.Background(), topic, "raw", broker.AutoAck(
		func(ctx context.Context, e eventkit.Event, attempt int) error {
			if n.Add(1) == int64(b.N) {
				close(done)
			}
			return nil
		}))
	if err != nil {
		b.Fatal(err)
	}
	<-done
	b.StopTimer()
	_ = sub.Close(context.Background())
}

// benchRuntime runs the runtime with cfg over b.N prepublished events and
// reports events/s; the timer stops when the last one is acked.
func benchRuntime(b *testing.B, cfg consumer.Config, newB func(b *testing.B) (broker.Broker, string)) {
	benchRuntimeWith(b, cfg, newB, nil)
}

func benchRuntimeWith(b *testing.B, cfg consumer.Config, newB func(b *testing.B) (broker.Broker, string), work func(ctx context.Context, e eventkit.Event) error) {
	br, topic := newB(b)
	prepublish(b, br, topic)
	c, err := consumer.New(br, cfg)
	if err != nil {
		b.Fatal(err)
	}
	_ = c.Handle(topic, "bench", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		if work != nil {
			return work(ctx, e)
		}
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	b.ResetTimer()
	go func() { runDone <- c.Run(ctx) }()
	for c.Stats().Handled < uint64(b.N) { // the last ack
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	report(b)
	cancel()
	if err := <-runDone; err != nil {
		b.Fatal(err)
	}
}

func prepublish(b *testing.B, p broker.Publisher, topic string) {
	b.Helper()
	const batch = 1000
	evs := make([]eventkit.Event, 0, batch)
	for i := range b.N {
		evs = append(evs, eventkit.New("bench.event", "application/json", []byte(`{"n":1}`), eventkit.WithSubject(fmt.Sprint("s", i%256))))
		if len(evs) == batch || i == b.N-1 {
			publish(b, p, topic, evs...)
			evs = evs[:0]
		}
	}
}

func report(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "events/s")
	}
}
