package kafkabroker

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// The benchmarks run against kfake, franz-go's in-process Kafka, in the same
// process as the clients: they compare the adapter with raw franz-go doing
// the same work on the same machine; they are not Kafka figures. The two
// sides alternate within one benchmark (round by round) so that both see the
// same machine load; each reports its own events/s:
//
//	events/s       the eventkit adapter
//	raw-events/s   raw franz-go (kgo) doing the same work
//	pct-of-raw     the adapter's throughput as a percentage of raw

const benchBatch = 100

func benchEvents(n int) []eventkit.Event {
	data := make([]byte, 1024)
	_, _ = rand.Read(data)
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("bench.event", "application/octet-stream", data,
			eventkit.WithSubject(fmt.Sprintf("agg-%d", i%64)), eventkit.WithSource("/bench"))
	}
	return evs
}

func benchCluster(b *testing.B, opts ...kfake.Opt) *kfake.Cluster {
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}

func reportPair(b *testing.B, n int, ek, raw time.Duration) {
	b.ReportMetric(float64(n)/ek.Seconds(), "events/s")
	b.ReportMetric(float64(n)/raw.Seconds(), "raw-events/s")
	b.ReportMetric(100*raw.Seconds()/ek.Seconds(), "pct-of-raw")
}

// BenchmarkPublish: batches of 100 1 KB events, acks=all, idempotent
// producer. The cluster acknowledges and discards records
// (kfake.BlackholeProduce) so that its storage does not skew the figures.
// One op is one batch through the adapter and one through raw kgo.
func BenchmarkPublish(b *testing.B) {
	c := benchCluster(b, kfake.BlackholeProduce())
	evs := benchEvents(benchBatch)
	br := newBroker(b, Options{Brokers: c.ListenAddrs()})
	defer br.Close(context.Background())
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	topic, rawTopic := testenv.Name("bp"), testenv.Name("bpraw")
	for _, t := range []string{topic, rawTopic} {
		if err := br.EnsureTopic(ctx, t); err != nil {
			b.Fatal(err)
		}
	}
	var ek, raw time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := br.Publish(ctx, topic, evs...); err != nil {
			b.Fatal(err)
		}
		ek += time.Since(start)
		start = time.Now()
		// Raw franz-go still has to carry the event's attributes: the
		// same key, value and headers, built per call.
		recs := make([]*kgo.Record, len(evs))
		for i, e := range evs {
			recs[i] = Record(rawTopic, e)
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		raw += time.Since(start)
	}
	reportPair(b, b.N*benchBatch, ek, raw)
}

// BenchmarkConsume: 1 KB events consumed by a group, every one acknowledged
// (offsets committed). Rounds of up to 5000 events alternate between the
// adapter (a subscription whose handler acks) and raw kgo (poll, decode,
// commit per poll), each on its own pre-filled topic; each round is timed
// from its first record to its last, so group joins are not counted.
func BenchmarkConsume(b *testing.B) {
	c := benchCluster(b)
	br := newBroker(b, Options{Brokers: c.ListenAddrs()})
	defer br.Close(context.Background())
	ctx := context.Background()
	evs := benchEvents(benchBatch)
	fill := func(topic string, n int) {
		for i := 0; i < n; i += benchBatch {
			if err := br.Publish(ctx, topic, evs[:min(benchBatch, n-i)]...); err != nil {
				b.Fatal(err)
			}
		}
	}
	var ek, raw time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(5000, b.N-done)
		done += n
		b.StopTimer()
		topic, rawTopic := testenv.Name("bc"), testenv.Name("bcraw")
		fill(topic, n)
		fill(rawTopic, n)
		b.StartTimer()

		// eventkit
		var first time.Time
		fin := make(chan time.Time, 1)
		seen := 0
		sub, err := br.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
			if seen == 0 {
				first = time.Now()
			}
			if d.DecodeErr() != nil {
				b.Error(d.DecodeErr())
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

		// raw kgo
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup("g@"+rawTopic),
			kgo.ConsumeTopics(rawTopic), kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for got < n {
			fs := cl.PollRecords(ctx, 256)
			if got == 0 && len(fs.Records()) > 0 {
				first = time.Now()
			}
			for _, r := range fs.Records() {
				if _, err := DecodeRecord(r); err != nil { // the same per-record work
					b.Fatal(err)
				}
				got++
			}
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				b.Fatal(err)
			}
		}
		raw += time.Since(first)
		cl.Close()
	}
	reportPair(b, b.N, ek, raw)
}
