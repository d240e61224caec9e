// Package redisbench compares eventkit's Redis Streams adapter with raw
// go-redis and with Watermill's Redis Streams pub/sub (watermill-redisstream),
// on the same server, in the same run. It is a separate module so that the
// main module never depends on Watermill.
//
//	cd bench/redis && go test -run '^$' -bench . -benchtime 1x
//
// Every contender publishes 1 KB messages in calls of 100 (eventkit and raw:
// one pipeline per call; Watermill: one XADD round trip per message, which
// is what its Publisher does) and consumes a stream filled beforehand in a
// consumer group, acking every message (eventkit: Ack per delivery, batched
// into XACKs by the adapter; raw: XREADGROUP COUNT 128, the batch acked by
// one XACK pipelined with the next read; Watermill: its subscriber, which reads and acks one entry at a time). The contenders run one at a time, alternated over
// rounds (internal/benchkit), each on a fresh stream or group.
package redisbench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/testenv"
)

const batch = 100

var (
	url     = testenv.Redis.Lookup
	name    = testenv.Name
	payload = benchkit.Payload(1024)
)

func events(n int) []eventkit.Event {
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("bench.event", "application/octet-stream", payload, eventkit.WithSubject(fmt.Sprint("s", i%64)))
	}
	return evs
}

func wmMessages(n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
		msgs[i].Metadata.Set("type", "bench.event")
		msgs[i].Metadata.Set("source", "eventkit")
		msgs[i].Metadata.Set("subject", fmt.Sprint("s", i%64))
	}
	return msgs
}

// rawFields is the entry eventkit writes for ev.
func rawFields(ev eventkit.Event) []any {
	var vals []any
	eventkit.RedisBinding.Headers(ev, func(k, v string) { vals = append(vals, k, v) })
	return append(vals, redisbroker.DataField, ev.Data)
}

// setup connects a client and an eventkit broker on it with a fresh key
// prefix (keys are prefix+name); when the benchmark ends, it closes the
// broker, deletes every key under the prefix and closes the client.
func setup(b *testing.B) (c *goredis.Client, br *redisbroker.Broker, prefix string) {
	o, err := goredis.ParseURL(url())
	if err != nil {
		b.Fatal(err)
	}
	c = goredis.NewClient(o)
	if err := c.Ping(context.Background()).Err(); err != nil {
		testenv.Unavailable(b, fmt.Sprintf("no Redis at %s: %v", url(), err))
	}
	prefix = name("ekt-wmbench") + ":"
	br, err = redisbroker.New(context.Background(), redisbroker.Options{Client: c, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	b.Cleanup(func() { // runs first: deletes the keys, then closes c
		ctx := context.Background()
		var keys []string
		it := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for it.Next(ctx) {
			keys = append(keys, it.Val())
		}
		if len(keys) > 0 {
			_ = c.Del(ctx, keys...).Err()
		}
		_ = c.Close()
	})
	return c, br, prefix
}

// Events per contender and run.
const (
	publishEvents = 20_000
	consumeEvents = 50_000
)

// BenchmarkPublish: each contender publishes the same 1 KB events in calls
// of 100 to a fresh stream: raw go-redis (one pipeline of XADDs per call,
// the entry eventkit writes: the baseline), eventkit's adapter and
// Watermill's publisher (one XADD round trip per message). Latencies are
// per call.
func BenchmarkPublish(b *testing.B) {
	c, br, prefix := setup(b)
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: c}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	n := benchtest.Events(publishEvents)
	evs := events(n)
	fields := make([][]any, n)
	for i, ev := range evs {
		fields[i] = rawFields(ev)
	}
	var key string
	fresh := func(context.Context) error { key = name("pub"); return nil }
	drop := func(ctx context.Context) error { return c.Del(ctx, prefix+key, br.StreamKey(key)).Err() }
	batches := func(clock *benchkit.Clock, call func(i, end int) error) (int, []time.Duration, error) {
		return benchtest.Batches(clock, n, batch, call)
	}
	benchtest.Compare(b, benchkit.NewMeter(url()),
		benchkit.Contender{Name: "raw", Prepare: fresh, Cleanup: drop, Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return batches(clock, func(i, end int) error {
				pipe := c.Pipeline()
				for j := i; j < end; j++ {
					pipe.XAdd(ctx, &goredis.XAddArgs{Stream: prefix + key, ID: "*", Values: fields[j]})
				}
				_, err := pipe.Exec(ctx)
				return err
			})
		}},
		benchkit.Contender{Name: "eventkit", Prepare: fresh, Cleanup: drop, Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return batches(clock, func(i, end int) error { return br.Publish(ctx, key, evs[i:end]...) })
		}},
		benchkit.Contender{Name: "watermill", Prepare: fresh, Cleanup: drop, Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return batches(clock, func(i, end int) error { return pub.Publish(prefix+key, wmMessages(end-i)...) })
		}},
	)
}

// fill writes n entries to key with pipelined XADDs.
func fill(b *testing.B, c *goredis.Client, key string, n int, fields func() any) {
	ctx := context.Background()
	for done := 0; done < n; {
		pipe := c.Pipeline()
		k := min(1000, n-done)
		for range k {
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: key, ID: "*", Values: fields()})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		done += k
	}
}

// BenchmarkConsume: each contender reads every entry of a pre-filled
// stream as a fresh consumer group and acks it: raw go-redis (XREADGROUP
// COUNT 128, the batch's XACK pipelined with the next read: the
// baseline), eventkit's Subscribe (Ack per delivery) on the same stream,
// and Watermill's subscriber on a stream of its own encoding.
func BenchmarkConsume(b *testing.B) {
	c, br, prefix := setup(b)
	n := benchtest.Events(consumeEvents)
	topic := name("con")
	key := br.StreamKey(topic)
	f := rawFields(events(1)[0])
	fill(b, c, key, n, func() any { return f })
	wmKey := prefix + name("conwm")
	m := redisstream.DefaultMarshallerUnmarshaller{}
	msgs := wmMessages(64)
	i := 0
	fill(b, c, wmKey, n, func() any {
		v, err := m.Marshal(wmKey, msgs[i%len(msgs)])
		if err != nil {
			b.Fatal(err)
		}
		i++
		return v
	})
	benchtest.Compare(b, benchkit.NewMeter(url()),
		benchkit.Contender{Name: "raw", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			g := name("g")
			clock.Start()
			if err := c.XGroupCreate(ctx, key, g, "0").Err(); err != nil {
				return 0, nil, err
			}
			defer c.XGroupDestroy(context.Background(), key, g)
			var ids []string
			got := 0
			for got < n {
				pipe := c.Pipeline()
				if len(ids) > 0 {
					pipe.XAck(ctx, key, g, ids...)
				}
				read := pipe.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: g, Consumer: "c", Streams: []string{key, ">"}, Count: 128, Block: 100 * time.Millisecond})
				if _, err := pipe.Exec(ctx); err != nil {
					return 0, nil, err
				}
				ids = ids[:0]
				for _, m := range read.Val()[0].Messages {
					ids = append(ids, m.ID)
				}
				got += len(ids)
			}
			if err := c.XAck(ctx, key, g, ids...).Err(); err != nil {
				return 0, nil, err
			}
			clock.Stop()
			return n, nil, nil
		}},
		benchkit.Contender{Name: "eventkit", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			g := name("g")
			clock.Start()
			got := benchtest.NewCounter(clock, n)
			sub, err := br.Subscribe(ctx, topic, g, func(ctx context.Context, d broker.Delivery) error {
				if err := d.Ack(ctx); err != nil {
					return err
				}
				got.Add()
				return nil
			})
			if err != nil {
				return 0, nil, err
			}
			defer c.XGroupDestroy(context.Background(), key, g)
			defer func() {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = sub.Close(cctx)
			}()
			if err := got.Wait("eventkit", 5*time.Minute); err != nil {
				return 0, nil, err
			}
			return n, nil, nil
		}},
		benchkit.Contender{Name: "eventkit-runtime", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			g := name("g")
			defer c.XGroupDestroy(context.Background(), key, g)
			return benchtest.Runtime(ctx, clock, br, topic, g, n)
		}},
		benchkit.Contender{Name: "watermill", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			g := name("g")
			clock.Start()
			o, err := goredis.ParseURL(url())
			if err != nil {
				return 0, nil, err
			}
			wc := goredis.NewClient(o) // the subscriber's Close closes its client
			defer wc.Close()
			sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
				Client: wc, ConsumerGroup: g, BlockTime: 100 * time.Millisecond, DisableIndefiniteInitialBlock: true,
			}, watermill.NopLogger{})
			if err != nil {
				return 0, nil, err
			}
			defer c.XGroupDestroy(context.Background(), wmKey, g)
			defer sub.Close()
			return benchtest.Drain(ctx, clock, sub.Subscribe, wmKey, n, "watermill")
		}},
	)
}
