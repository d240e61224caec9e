// Package kafkabench compares eventkit's Kafka adapter with Watermill's
// (watermill-kafka v3, on Sarama) against kfake, franz-go's in-process
// Kafka. kfake runs in the benchmark's process, so these are comparisons on
// one machine, not Kafka figures.
//
//	cd bench/kafka && go test -run '^$' -bench . -benchtime 1x
//
// The contenders run one at a time, alternated over rounds
// (internal/benchkit). kfake's CPU is in the client's figure.
package kafkabench

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
)

const batch = 100

var wmLogger watermill.LoggerAdapter // nil: quiet

var payload = func() []byte {
	b := make([]byte, 1024)
	_, _ = rand.Read(b)
	return b
}()

func events(n int) []eventkit.Event {
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("bench.event", "application/octet-stream", payload,
			eventkit.WithSubject(fmt.Sprintf("agg-%d", i%64)), eventkit.WithSource("/bench"))
	}
	return evs
}

// messages are the Watermill equivalent: the payload plus the same
// attributes as metadata, keyed by subject.
func messages(n int) []*message.Message {
	ms := make([]*message.Message, n)
	for i := range ms {
		m := message.NewMessage(watermill.NewUUID(), payload)
		m.Metadata.Set("type", "bench.event")
		m.Metadata.Set("source", "/bench")
		m.Metadata.Set("subject", fmt.Sprintf("agg-%d", i%64))
		m.Metadata.Set("time", time.Now().UTC().Format(time.RFC3339Nano))
		ms[i] = m
	}
	return ms
}

func cluster(b *testing.B, opts ...kfake.Opt) *kfake.Cluster {
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3), kfake.SeedTopics(6)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}

func newEventkit(b *testing.B, c *kfake.Cluster) *kafkabroker.Broker {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := kafkabroker.New(ctx, kafkabroker.Options{Brokers: c.ListenAddrs()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	return br
}

func saramaConfig() *sarama.Config {
	cfg := wkafka.DefaultSaramaSyncPublisherConfig()
	// Version: Watermill's default (V1_0_0_0); Sarama's V2_8 consumer cannot decode some kfake responses.
	cfg.Producer.RequiredAcks = sarama.WaitForAll // the same durability as eventkit (acks=all)
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	return cfg
}

func newWatermillPublisher(b *testing.B, c *kfake.Cluster) *wkafka.Publisher {
	p, err := wkafka.NewPublisher(wkafka.PublisherConfig{
		Brokers:               c.ListenAddrs(),
		Marshaler:             wkafka.NewWithPartitioningMarshaler(func(topic string, m *message.Message) (string, error) { return m.Metadata.Get("subject"), nil }),
		OverwriteSaramaConfig: saramaConfig(),
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

// Events per contender and run.
const (
	publishEvents = 20_000
	consumeEvents = 20_000
)

func rawClient(c *kfake.Cluster, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks())}, opts...)...)
}

// BenchmarkPublish: each contender publishes the same 1 KB events in calls
// of 100 (each returning when all are acknowledged, acks=all) to a topic
// of its own; the cluster acknowledges and discards records. Contenders:
// raw franz-go ProduceSync keyed by subject (the baseline), eventkit's
// adapter and Watermill's (Sarama sync producer).
func BenchmarkPublish(b *testing.B) {
	c := cluster(b, kfake.BlackholeProduce())
	br := newEventkit(b, c)
	wp := newWatermillPublisher(b, c)
	raw, err := rawClient(c, kgo.ProducerLinger(0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(raw.Close)
	ctx := context.Background()
	const topic, wtopic, rtopic = "bench-ek", "bench-wm", "bench-raw"
	for _, t := range []string{topic, wtopic, rtopic} {
		if err := br.EnsureTopic(ctx, t); err != nil {
			b.Fatal(err)
		}
	}
	n := benchtest.Events(publishEvents)
	evs := events(n)
	batches := func(clock *benchkit.Clock, call func(i, end int) error) (int, []time.Duration, error) {
		return benchtest.Batches(clock, n, batch, call)
	}
	benchtest.Compare(b, nil,
		benchkit.Contender{Name: "raw-franz-go", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return batches(clock, func(i, end int) error {
				recs := make([]*kgo.Record, 0, end-i)
				for _, e := range evs[i:end] {
					recs = append(recs, &kgo.Record{Topic: rtopic, Key: []byte(e.Subject), Value: e.Data, Headers: []kgo.RecordHeader{
						{Key: "ce_id", Value: []byte(e.ID)}, {Key: "ce_type", Value: []byte(e.Type)}, {Key: "ce_source", Value: []byte(e.Source)}}})
				}
				return raw.ProduceSync(ctx, recs...).FirstErr()
			})
		}},
		benchkit.Contender{Name: "eventkit", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return batches(clock, func(i, end int) error { return br.Publish(ctx, topic, evs[i:end]...) })
		}},
		benchkit.Contender{Name: "watermill", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return batches(clock, func(i, end int) error { return wp.Publish(wtopic, messages(end-i)...) })
		}},
	)
}

// BenchmarkConsume: each contender consumes every event of a pre-filled
// topic as a fresh consumer group, acking (committing) every event, timed
// from creating its consumer to the last event: a raw franz-go group
// consumer (PollFetches, MarkCommitRecords, autocommit: the baseline),
// eventkit's Subscribe, and Watermill's Sarama subscriber (on its own
// topic of the same events, with its own headers).
func BenchmarkConsume(b *testing.B) {
	c := cluster(b)
	br := newEventkit(b, c)
	wp := newWatermillPublisher(b, c)
	ctx := context.Background()
	n := benchtest.Events(consumeEvents)
	const topic, wtopic = "c-ek", "c-wm"
	evs := events(n)
	if err := br.EnsureTopic(ctx, wtopic); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += batch {
		if err := br.Publish(ctx, topic, evs[i:min(i+batch, n)]...); err != nil {
			b.Fatal(err)
		}
		if err := wp.Publish(wtopic, messages(min(batch, n-i))...); err != nil {
			b.Fatal(err)
		}
	}
	group := 0
	fresh := func() string { group++; return fmt.Sprint("g", group) }
	benchtest.Compare(b, nil,
		benchkit.Contender{Name: "raw-franz-go", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			clock.Start()
			cl, err := rawClient(c, kgo.ConsumerGroup(fresh()), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitMarks())
			if err != nil {
				return 0, nil, err
			}
			defer cl.Close()
			got := 0
			for got < n {
				fs := cl.PollFetches(ctx)
				if err := fs.Err0(); err != nil {
					return 0, nil, err
				}
				fs.EachRecord(func(r *kgo.Record) { cl.MarkCommitRecords(r); got++ })
			}
			clock.Stop()
			return n, nil, cl.CommitMarkedOffsets(ctx)
		}},
		benchkit.Contender{Name: "eventkit", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			clock.Start()
			got := benchtest.NewCounter(clock, n)
			sub, err := br.Subscribe(ctx, topic, fresh(), func(ctx context.Context, d broker.Delivery) error {
				err := d.Ack(ctx)
				got.Add()
				return err
			})
			if err != nil {
				return 0, nil, err
			}
			defer sub.Close(ctx)
			if err := got.Wait("eventkit", 5*time.Minute); err != nil {
				return 0, nil, err
			}
			return n, nil, nil
		}},
		benchkit.Contender{Name: "eventkit-runtime", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return benchtest.Runtime(ctx, clock, br, topic, fresh(), n)
		}},
		benchkit.Contender{Name: "watermill", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			clock.Start()
			scfg := wkafka.DefaultSaramaSubscriberConfig()
			// Version: Watermill's default.
			scfg.Consumer.Offsets.Initial = sarama.OffsetOldest
			ws, err := wkafka.NewSubscriber(wkafka.SubscriberConfig{
				Brokers:               c.ListenAddrs(),
				Unmarshaler:           wkafka.DefaultMarshaler{},
				ConsumerGroup:         fresh(),
				OverwriteSaramaConfig: scfg,
			}, wmLogger)
			if err != nil {
				return 0, nil, err
			}
			defer ws.Close()
			return benchtest.Drain(ctx, clock, ws.Subscribe, wtopic, n, "watermill")
		}},
	)
}
