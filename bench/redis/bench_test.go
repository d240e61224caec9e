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
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
)

const batch = 100

func url() string {
	if u := os.Getenv("EVENTKIT_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func name(prefix string) string {
	var x [6]byte
	_, _ = rand.Read(x[:])
	return prefix + "_" + hex.EncodeToString(x[:])
}

var payload = func() []byte {
	p := make([]byte, 1024)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}()

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

func client(b *testing.B) *goredis.Client {
	o, err := goredis.ParseURL(url())
	if err != nil {
		b.Fatal(err)
	}
	c := goredis.NewClient(o)
	if err := c.Ping(context.Background()).Err(); err != nil {
		b.Skipf("no Redis at %s: %v", url(), err)
	}
	return c
}

// keys deletes every key under prefix when the benchmark ends.
func cleanup(b *testing.B, c *goredis.Client, prefix string) {
	b.Cleanup(func() {
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
	ctx := context.Background()
	prefix := name("ekt-wmbench") + ":"
	c := client(b)
	br, err := redisbroker.New(ctx, redisbroker.Options{Client: c, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	cleanup(b, c, prefix) // runs first: deletes the keys, then closes c
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
	ctx := context.Background()
	prefix := name("ekt-wmbench") + ":"
	c := client(b)
	br, err := redisbroker.New(ctx, redisbroker.Options{Client: c, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	cleanup(b, c, prefix) // runs first: deletes the keys, then closes c
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
			var got atomic.Int64
			done := make(chan struct{})
			clock.Start()
			sub, err := br.Subscribe(ctx, topic, g, func(ctx context.Context, d broker.Delivery) error {
				if err := d.Ack(ctx); err != nil {
					return err
				}
				if got.Add(1) == int64(n) {
					clock.Stop()
					close(done)
				}
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
			select {
			case <-done:
				return n, nil, nil
			case <-time.After(5 * time.Minute):
				return 0, nil, fmt.Errorf("eventkit: %d of %d", got.Load(), n)
			}
		}},
		benchkit.Contender{Name: "eventkit-runtime", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			g := name("g")
			defer c.XGroupDestroy(context.Background(), key, g)
			return runtimeRun(ctx, clock, br, topic, g, n)
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
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := sub.Subscribe(sctx, wmKey)
			if err != nil {
				return 0, nil, err
			}
			stall := time.NewTimer(5 * time.Minute)
			defer stall.Stop()
			for i := range n {
				select {
				case msg := <-ch:
					msg.Ack()
				case <-stall.C:
					return 0, nil, fmt.Errorf("watermill: %d of %d", i, n)
				}
			}
			clock.Stop()
			return n, nil, nil
		}},
	)
}

// runtimeRun runs the eventkit consumer runtime (concurrency 8, no inbox,
// a handler that does nothing) on topic as group until it has handled and
// acked n events; the clock runs from consumer.New to the n-th ack
// (Stats().Handled counts after the ack, polled every millisecond).
func runtimeRun(ctx context.Context, clock *benchkit.Clock, sub broker.Subscriber, topic, group string, n int) (int, []time.Duration, error) {
	clock.Start()
	c, err := consumer.New(sub, consumer.Config{Concurrency: 8, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return 0, nil, err
	}
	if err := c.HandleFunc(topic, group, func(context.Context, eventkit.Event) error { return nil }); err != nil {
		return 0, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(rctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for c.Stats().Handled < uint64(n) {
		select {
		case err := <-runDone:
			return 0, nil, fmt.Errorf("eventkit-runtime: Run returned early: %v", err)
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, nil, fmt.Errorf("eventkit-runtime: handled %d of %d", c.Stats().Handled, n)
		}
	}
	clock.Stop()
	cancel()
	if err := <-runDone; err != nil {
		return 0, nil, err
	}
	return n, nil, nil
}
