// Package redisbench compares eventkit's Redis Streams adapter with raw
// go-redis and with Watermill's Redis Streams pub/sub (watermill-redisstream),
// on the same server, in the same run. It is a separate module so that the
// main module never depends on Watermill.
//
//	cd bench/redis && go test -run '^$' -bench . -benchtime 20000x
//
// Every contender publishes 1 KB messages in calls of 100 (eventkit and raw:
// one pipeline per call; Watermill: one XADD round trip per message, which
// is what its Publisher does) and consumes a stream filled beforehand in a
// consumer group, acking every message (eventkit: Ack per delivery, batched
// into XACKs by the adapter; raw: XREADGROUP COUNT 128, the batch acked by
// one XACK pipelined with the next read; Watermill: its subscriber, which reads and acks one entry at a time).
package redisbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	redisbroker "github.com/eventkit/eventkit/broker/redis"
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

func report(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	prefix := name("ekt-wmbench") + ":"
	b.Run("eventkit", func(b *testing.B) {
		c := client(b)
		cleanup(b, c, prefix)
		br, err := redisbroker.New(ctx, redisbroker.Options{Client: c, Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		defer br.Close(ctx)
		topic, evs := name("pub"), events(batch)
		b.SetBytes(1024)
		b.ResetTimer()
		n := 0
		for n < b.N {
			if err := br.Publish(ctx, topic, evs...); err != nil {
				b.Fatal(err)
			}
			n += batch
		}
		report(b, n)
	})
	b.Run("raw", func(b *testing.B) {
		c := client(b)
		cleanup(b, c, prefix)
		key := prefix + name("pub")
		evs := events(batch)
		fields := make([][]any, batch)
		for i, ev := range evs {
			fields[i] = rawFields(ev)
		}
		b.SetBytes(1024)
		b.ResetTimer()
		n := 0
		for n < b.N {
			pipe := c.Pipeline()
			for i := range fields {
				pipe.XAdd(ctx, &goredis.XAddArgs{Stream: key, ID: "*", Values: fields[i]})
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			n += batch
		}
		report(b, n)
	})
	b.Run("watermill", func(b *testing.B) {
		c := client(b)
		cleanup(b, c, prefix)
		pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: c}, watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		topic := prefix + name("pub")
		b.SetBytes(1024)
		b.ResetTimer()
		n := 0
		for n < b.N {
			if err := pub.Publish(topic, wmMessages(batch)...); err != nil {
				b.Fatal(err)
			}
			n += batch
		}
		report(b, n)
	})
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

func BenchmarkConsume(b *testing.B) {
	ctx := context.Background()
	prefix := name("ekt-wmbench") + ":"
	b.Run("eventkit", func(b *testing.B) {
		c := client(b)
		cleanup(b, c, prefix)
		br, err := redisbroker.New(ctx, redisbroker.Options{Client: c, Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		defer br.Close(ctx)
		topic := name("con")
		f := rawFields(events(1)[0])
		fill(b, c, br.StreamKey(topic), b.N, func() any { return f })
		done := make(chan struct{})
		n := 0
		b.SetBytes(1024)
		b.ResetTimer()
		sub, err := br.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
			if err := d.Ack(ctx); err != nil {
				return err
			}
			if n++; n == b.N {
				close(done)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		<-done
		b.StopTimer()
		report(b, n)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = sub.Close(cctx)
	})
	b.Run("raw", func(b *testing.B) {
		c := client(b)
		cleanup(b, c, prefix)
		key := prefix + name("con")
		f := rawFields(events(1)[0])
		fill(b, c, key, b.N, func() any { return f })
		if err := c.XGroupCreate(ctx, key, "g", "0").Err(); err != nil {
			b.Fatal(err)
		}
		// Best raw practice: the XACK of one batch goes in the same
		// pipeline as the XREADGROUP of the next (one round trip each).
		var ids []string
		b.SetBytes(1024)
		b.ResetTimer()
		n := 0
		for n < b.N {
			pipe := c.Pipeline()
			if len(ids) > 0 {
				pipe.XAck(ctx, key, "g", ids...)
			}
			read := pipe.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{key, ">"}, Count: 128, Block: 100 * time.Millisecond})
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			res := read.Val()
			ids = make([]string, 0, 128)
			for _, m := range res[0].Messages {
				ids = append(ids, m.ID)
			}
			n += len(ids)
		}
		if err := c.XAck(ctx, key, "g", ids...).Err(); err != nil {
			b.Fatal(err)
		}
		report(b, n)
	})
	b.Run("watermill", func(b *testing.B) {
		c := client(b)
		cleanup(b, c, prefix)
		topic := prefix + name("con")
		m := redisstream.DefaultMarshallerUnmarshaller{}
		msgs := wmMessages(64)
		i := 0
		fill(b, c, topic, b.N, func() any {
			v, err := m.Marshal(topic, msgs[i%len(msgs)])
			if err != nil {
				b.Fatal(err)
			}
			i++
			return v
		})
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
			Client: c, ConsumerGroup: "g", BlockTime: 100 * time.Millisecond, DisableIndefiniteInitialBlock: true,
		}, watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		b.SetBytes(1024)
		b.ResetTimer()
		ch, err := sub.Subscribe(sctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for n < b.N {
			msg := <-ch
			msg.Ack()
			n++
		}
		b.StopTimer()
		report(b, n)
		cancel()
		_ = sub.Close()
	})
}
