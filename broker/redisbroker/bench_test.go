package redisbroker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

const benchBatch = 100

func benchEvents(n int) []eventkit.Event {
	data := make([]byte, 1024)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("bench.event", "application/octet-stream", data, eventkit.WithSubject(fmt.Sprint("s", i%64)))
	}
	return evs
}

// rawFields is the entry eventkit writes for ev, built once: the raw
// baseline writes the same bytes without eventkit.
func rawFields(ev eventkit.Event) []any {
	var vals []any
	eventkit.RedisBinding.Headers(ev, func(k, v string) { vals = append(vals, k, v) })
	return append(vals, redisbroker.DataField, ev.Data)
}

func report(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkPublish: batches of 100 1 KB events, eventkit's Publish (one
// pipeline per batch) beside a raw go-redis pipeline of the same XADDs.
func BenchmarkPublish(b *testing.B) {
	url, raw, prefix := benchEnv(b)
	evs := benchEvents(benchBatch)
	ctx := context.Background()

	b.Run("eventkit", func(b *testing.B) {
		br := benchBroker(b, url, prefix)
		topic := testenv.Name("pub")
		b.SetBytes(1024)
		b.ResetTimer()
		n := 0
		for n < b.N {
			if err := br.Publish(ctx, topic, evs...); err != nil {
				b.Fatal(err)
			}
			n += len(evs)
		}
		report(b, n)
	})
	b.Run("raw", func(b *testing.B) {
		key := prefix + testenv.Name("pub")
		fields := make([][]any, len(evs))
		for i, ev := range evs {
			fields[i] = rawFields(ev)
		}
		b.SetBytes(1024)
		b.ResetTimer()
		n := 0
		for n < b.N {
			pipe := raw.Pipeline()
			for i := range evs {
				pipe.XAdd(ctx, &goredis.XAddArgs{Stream: key, ID: "*", Values: fields[i]})
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			n += len(evs)
		}
		report(b, n)
	})
}

// fill writes n 1 KB events to key with pipelined XADDs.
func fill(b *testing.B, raw *goredis.Client, key string, n int) {
	ctx := context.Background()
	evs := benchEvents(1)
	fields := rawFields(evs[0])
	for done := 0; done < n; {
		pipe := raw.Pipeline()
		k := min(1000, n-done)
		for range k {
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: key, ID: "*", Values: fields})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		done += k
	}
}

// BenchmarkConsume: b.N 1 KB events already in the stream, consumed and
// acked one by one by a handler, beside raw go-redis reading with
// XREADGROUP COUNT 128 and acking each batch with one XACK pipelined with
// the next read.
func BenchmarkConsume(b *testing.B) {
	url, raw, prefix := benchEnv(b)
	ctx := context.Background()

	b.Run("eventkit", func(b *testing.B) {
		br := benchBroker(b, url, prefix)
		topic := testenv.Name("con")
		fill(b, raw, br.StreamKey(topic), b.N)
		done := make(chan struct{})
		n := 0
		b.SetBytes(1024)
		b.ResetTimer()
		sub, err := br.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
			if d.DecodeErr() != nil {
				b.Error(d.DecodeErr())
			}
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
		key := prefix + testenv.Name("con")
		fill(b, raw, key, b.N)
		if err := raw.XGroupCreate(ctx, key, "g", "0").Err(); err != nil {
			b.Fatal(err)
		}
		// Best raw practice: the XACK of one batch goes in the same
		// pipeline as the XREADGROUP of the next (one round trip each).
		var ids []string
		b.SetBytes(1024)
		b.ResetTimer()
		n := 0
		for n < b.N {
			pipe := raw.Pipeline()
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
		if err := raw.XAck(ctx, key, "g", ids...).Err(); err != nil {
			b.Fatal(err)
		}
		report(b, n)
	})
}

// benchEnv returns the Redis URL, a raw go-redis client on it and a key
// prefix unique to the benchmark; the keys under the prefix are deleted and
// the client closed with b.
func benchEnv(b *testing.B) (url string, raw *goredis.Client, prefix string) {
	url = testenv.Redis.URL(b)
	o, err := goredis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	raw = goredis.NewClient(o)
	b.Cleanup(func() { _ = raw.Close() })
	prefix = testenv.Name("ekt-bench") + ":"
	b.Cleanup(func() { cleanup(raw, prefix) })
	return url, raw, prefix
}

// benchBroker returns an eventkit broker under prefix, closed with b.
func benchBroker(b *testing.B, url, prefix string) *redisbroker.Broker {
	ctx := context.Background()
	br, err := redisbroker.New(ctx, redisbroker.Options{URL: url, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close(ctx) })
	return br
}

func cleanup(raw *goredis.Client, prefix string) {
	ctx := context.Background()
	var keys []string
	iter := raw.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		_ = raw.Del(ctx, keys...).Err()
	}
}

// BenchmarkLatency: one event at a time, published and received by a
// subscriber blocked in XREADGROUP, acked; p50/p99 of publish-to-handler
// time beside raw XADD + XREADGROUP BLOCK + XACK.
func BenchmarkLatency(b *testing.B) {
	url, raw, prefix := benchEnv(b)
	ctx := context.Background()
	ev := benchEvents(1)[0]

	b.Run("eventkit", func(b *testing.B) {
		br := benchBroker(b, url, prefix)
		topic := testenv.Name("lat")
		got := make(chan time.Time, 1)
		sub, err := br.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
			got <- time.Now()
			return d.Ack(ctx)
		})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close(ctx)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if err := br.Publish(ctx, topic, ev); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, (<-got).Sub(start))
		}
		reportLatency(b, lat)
	})
	b.Run("raw", func(b *testing.B) {
		key := prefix + testenv.Name("lat")
		if err := raw.XGroupCreateMkStream(ctx, key, "g", "$").Err(); err != nil {
			b.Fatal(err)
		}
		fields := rawFields(ev)
		got := make(chan time.Time, 1)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{key, ">"}, Count: 1, Block: 100 * time.Millisecond}).Result()
				if err != nil {
					continue
				}
				for _, m := range res[0].Messages {
					got <- time.Now()
					raw.XAck(ctx, key, "g", m.ID)
				}
			}
		}()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if err := raw.XAdd(ctx, &goredis.XAddArgs{Stream: key, ID: "*", Values: fields}).Err(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, (<-got).Sub(start))
		}
		b.StopTimer()
		close(stop)
		<-done
		reportLatency(b, lat)
	})
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	report(b, len(lat))
}
