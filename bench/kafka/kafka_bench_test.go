// Package kafkabench compares eventkit's Kafka adapter with Watermill's
// (watermill-kafka v3, on Sarama) against kfake, franz-go's in-process
// Kafka. kfake runs in the benchmark's process, so these are comparisons on
// one machine, not Kafka figures.
//
//	cd bench/kafka && go test -run '^$' -bench . -benchtime 2s
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

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafka"
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

func newEventkit(b *testing.B, c *kfake.Cluster) *kafka.Broker {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := kafka.New(ctx, kafka.Options{Brokers: c.ListenAddrs()})
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

func report(b *testing.B, n int, ek, wm time.Duration) {
	b.ReportMetric(float64(n)/ek.Seconds(), "events/s")
	b.ReportMetric(float64(n)/wm.Seconds(), "watermill-events/s")
	b.ReportMetric(wm.Seconds()/ek.Seconds(), "x-watermill")
}

// BenchmarkPublish: one op is a batch of 100 1 KB events through each
// library, alternating; the cluster acknowledges and discards records.
func BenchmarkPublish(b *testing.B) {
	c := cluster(b, kfake.BlackholeProduce())
	br := newEventkit(b, c)
	wp := newWatermillPublisher(b, c)
	ctx := context.Background()
	const topic, wtopic = "bench-ek", "bench-wm"
	if err := br.EnsureTopic(ctx, topic); err != nil {
		b.Fatal(err)
	}
	if err := br.EnsureTopic(ctx, wtopic); err != nil {
		b.Fatal(err)
	}
	evs := events(batch)
	var ek, wm time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := br.Publish(ctx, topic, evs...); err != nil {
			b.Fatal(err)
		}
		ek += time.Since(start)
		ms := messages(batch) // Watermill messages are single-use
		start = time.Now()
		if err := wp.Publish(wtopic, ms...); err != nil {
			b.Fatal(err)
		}
		wm += time.Since(start)
	}
	report(b, b.N*batch, ek, wm)
}

// BenchmarkConsume: rounds of up to 2000 1 KB events, each library
// consuming its own pre-filled topic with a consumer group and acking every
// event; each round is timed from its first delivery to its last.
func BenchmarkConsume(b *testing.B) {
	c := cluster(b)
	br := newEventkit(b, c)
	wp := newWatermillPublisher(b, c)
	ctx := context.Background()
	evs := events(batch)
	var ek, wm time.Duration
	round := 0
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(2000, b.N-done)
		done += n
		round++
		b.StopTimer()
		topic, wtopic := fmt.Sprintf("c-ek-%d-%d", b.N, round), fmt.Sprintf("c-wm-%d-%d", b.N, round)
		for i := 0; i < n; i += batch {
			if err := br.Publish(ctx, topic, evs[:min(batch, n-i)]...); err != nil {
				b.Fatal(err)
			}
			if err := br.EnsureTopic(ctx, wtopic); err != nil {
				b.Fatal(err)
			}
			if err := wp.Publish(wtopic, messages(min(batch, n-i))...); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()

		var first time.Time
		fin := make(chan time.Time, 1)
		seen := 0
		sub, err := br.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
			if seen == 0 {
				first = time.Now()
			}
			err := d.Ack(ctx)
			if seen++; seen == n {
				fin <- time.Now()
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		ek += (<-fin).Sub(first)
		_ = sub.Close(ctx)

		scfg := wkafka.DefaultSaramaSubscriberConfig()
		// Version: Watermill's default.
		scfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		ws, err := wkafka.NewSubscriber(wkafka.SubscriberConfig{
			Brokers:               c.ListenAddrs(),
			Unmarshaler:           wkafka.DefaultMarshaler{},
			ConsumerGroup:         "g-" + wtopic,
			OverwriteSaramaConfig: scfg,
		}, wmLogger)
		if err != nil {
			b.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		ch, err := ws.Subscribe(sctx, wtopic)
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			m := <-ch
			if i == 0 {
				first = time.Now()
			}
			m.Ack()
		}
		wm += time.Since(first)
		cancel()
		_ = ws.Close()
	}
	report(b, b.N, ek, wm)
}
