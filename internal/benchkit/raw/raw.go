// Package raw publishes and consumes with the brokers' own client libraries,
// bypassing eventkit: the baseline of `eventkit bench --compare raw`.
package raw

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/benchkit"
)

// ErrNoBaseline: there is no raw-client baseline for this broker (and
// measurement) yet.
var ErrNoBaseline = errors.New("no raw-client baseline for this broker")

// Publish publishes evs to topic in batches of batch with the broker's
// own client library, bypassing eventkit, waiting for every batch's
// confirms, and writing what eventkit writes (the same headers or fields),
// into the same layout (NATS: the stream eventkit would create for topic;
// Redis: its stream key; Kafka: the topic), so that deleting topic through
// eventkit removes it. NATS, Redis and Kafka only (ErrNoBaseline).
func Publish(ctx context.Context, b broker.Broker, topic string, evs []eventkit.Event, batch int, p *benchkit.Progress) (benchkit.Result, error) {
	res := benchkit.Result{Name: "raw publish", Events: len(evs)}
	var call func(evs []eventkit.Event) error
	switch br := b.(type) {
	case *natsbroker.Broker:
		js, name := br.JetStream(), br.StreamName(topic)
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, MaxBytes: -1}); err != nil {
			return res, err
		}
		call = func(evs []eventkit.Event) error {
			for _, e := range evs {
				m := nats.NewMsg(name + "." + e.Type)
				eventkit.NATSBinding.Headers(e, func(k, v string) { m.Header[k] = []string{v} })
				m.Header["Nats-Msg-Id"] = []string{e.ID}
				m.Data = e.Data
				if _, err := js.PublishMsgAsync(m); err != nil {
					return err
				}
			}
			select {
			case <-js.PublishAsyncComplete():
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	case *redisbroker.Broker:
		c, key := br.Client(), br.StreamKey(topic)
		call = func(evs []eventkit.Event) error {
			pipe := c.Pipeline()
			for _, e := range evs {
				var vals []any
				eventkit.RedisBinding.Headers(e, func(k, v string) { vals = append(vals, k, v) })
				pipe.XAdd(ctx, &goredis.XAddArgs{Stream: key, ID: "*", Values: append(vals, redisbroker.DataField, e.Data)})
			}
			_, err := pipe.Exec(ctx)
			return err
		}
	case *kafkabroker.Broker:
		if err := br.EnsureTopic(ctx, topic); err != nil {
			return res, err
		}
		cl := br.Client()
		call = func(evs []eventkit.Event) error {
			recs := make([]*kgo.Record, len(evs))
			for i, e := range evs {
				r := &kgo.Record{Topic: topic, Key: []byte(e.Subject), Value: e.Data}
				eventkit.KafkaBinding.Headers(e, func(k, v string) { r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) })
				recs[i] = r
			}
			return cl.ProduceSync(ctx, recs...).FirstErr()
		}
	default:
		return res, fmt.Errorf("%w (%T)", ErrNoBaseline, b)
	}
	lat := make([]time.Duration, 0, len(evs)/batch+1)
	start := time.Now()
	for i := 0; i < len(evs); i += batch {
		t := time.Now()
		if err := call(evs[i:min(i+batch, len(evs))]); err != nil {
			if ctx.Err() != nil {
				res.Partial(i, start, lat)
			}
			return res, err
		}
		lat = append(lat, time.Since(t))
		p.Add(min(batch, len(evs)-i))
	}
	res.Duration = time.Since(start)
	res.Finish(lat)
	return res, nil
}

// Consume consumes n events already on topic as group with the broker's
// own client library, acking each (NATS: a pull consumer with explicit
// acks and 256 in flight; Redis: XREADGROUP COUNT 128 with each batch's
// XACK pipelined with the next read). NATS and Redis only
// (ErrNoBaseline).
func Consume(ctx context.Context, b broker.Broker, topic, group string, n int, p *benchkit.Progress) (benchkit.Result, error) {
	res := benchkit.Result{Name: "raw consume", Events: n}
	start := time.Now()
	var got atomic.Int64
	switch br := b.(type) {
	case *natsbroker.Broker:
		js, stream := br.JetStream(), br.StreamName(topic)
		cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: group, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 256})
		if err != nil {
			return res, err
		}
		defer js.DeleteConsumer(context.Background(), stream, group) //nolint:errcheck
		done := make(chan struct{})
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			p.Add(1)
			if got.Add(1) == int64(n) {
				close(done)
			}
		}, jetstream.PullMaxMessages(256))
		if err != nil {
			return res, err
		}
		defer cc.Stop()
		select {
		case <-done:
		case <-ctx.Done():
			res.Partial(int(got.Load()), start, nil)
			return res, ctx.Err()
		}
	case *redisbroker.Broker:
		c, key := br.Client(), br.StreamKey(topic)
		// The group may be provisioned already (eventkit bench does).
		if err := c.XGroupCreate(ctx, key, group, "0").Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return res, err
		}
		defer c.XGroupDestroy(context.Background(), key, group) //nolint:errcheck
		var ids []string
		for got.Load() < int64(n) {
			pipe := c.Pipeline()
			if len(ids) > 0 {
				pipe.XAck(ctx, key, group, ids...)
			}
			read := pipe.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "raw", Streams: []string{key, ">"}, Count: 128, Block: 100 * time.Millisecond})
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
				if ctx.Err() != nil {
					res.Partial(int(got.Load()), start, nil)
				}
				return res, err
			}
			ids = ids[:0]
			for _, s := range read.Val() {
				for _, m := range s.Messages {
					ids = append(ids, m.ID)
				}
			}
			got.Add(int64(len(ids)))
			p.Add(len(ids))
		}
		if err := c.XAck(ctx, key, group, ids...).Err(); err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("%w (%T)", ErrNoBaseline, b)
	}
	res.Duration = time.Since(start)
	res.Finish(nil)
	return res, nil
}
