// Package rabbitmqbench compares eventkit's RabbitMQ adapter with raw
// amqp091-go and with Watermill's AMQP pub/sub (watermill-amqp v3), on the
// same server, in the same run. It is a separate module so that the main
// module never depends on Watermill.
//
//	cd bench/rabbitmq && go test -run '^$' -bench . -benchtime 1x
//
// Every contender publishes 1 KB persistent messages to a durable quorum
// queue in calls of 100 messages, returning only when the server confirmed
// them (Watermill: ConfirmDelivery, which waits for each message's confirm
// before publishing the next), and consumes with manual acks one by one and
// a prefetch of 256. The contenders run one at a time, alternated over
// rounds (internal/benchkit), each on a fresh queue.
package rabbitmqbench

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/testenv"
)

const (
	batch    = 100
	prefetch = 256
)

var (
	url     = testenv.RabbitMQ.Lookup
	name    = testenv.Name
	payload = benchkit.Payload(1024)
)

func events(n int) []eventkit.Event {
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("bench.event", "application/octet-stream", payload, eventkit.WithSubject("s"))
	}
	return evs
}

// admin is a raw connection for setup and cleanup.
func admin(b *testing.B) *amqp.Channel {
	conn, err := amqp.Dial(url())
	if err != nil {
		testenv.Unavailable(b, fmt.Sprintf("no RabbitMQ at %s: %v", url(), err))
	}
	b.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	return ch
}

// declare declares a durable topic exchange and a quorum queue name.g
// bound to it (the names eventkit uses: exchange = topic, queue =
// topic.g), and returns a function that deletes them.
func declare(ch *amqp.Channel, exchange string) (func(), error) {
	q := exchange + ".g"
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		return nil, err
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return nil, err
	}
	if err := ch.QueueBind(q, "#", exchange, false, nil); err != nil {
		return nil, err
	}
	return func() {
		_, _ = ch.QueueDelete(q, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
	}, nil
}

// rawPublish publishes msgs in calls of batch with publisher confirms and
// returns each call's latency.
func rawPublish(ch *amqp.Channel, exchange string, msgs []amqp.Publishing) ([]time.Duration, error) {
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	lat := make([]time.Duration, 0, len(msgs)/batch+1)
	dcs := make([]*amqp.DeferredConfirmation, 0, batch)
	for i := 0; i < len(msgs); i += batch {
		t0 := time.Now()
		dcs = dcs[:0]
		for _, m := range msgs[i:min(i+batch, len(msgs))] {
			dc, err := ch.PublishWithDeferredConfirm(exchange, "bench.event", true, false, m)
			if err != nil {
				return nil, err
			}
			dcs = append(dcs, dc)
		}
		for _, dc := range dcs {
			if !dc.Wait() {
				return nil, errors.New("nacked")
			}
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

func encode(evs []eventkit.Event) []amqp.Publishing {
	msgs := make([]amqp.Publishing, len(evs))
	for i, e := range evs {
		h := amqp.Table{}
		eventkit.AMQPBinding.Headers(e, func(k, v string) { h[k] = v })
		msgs[i] = amqp.Publishing{Headers: h, ContentType: e.DataContentType, DeliveryMode: amqp.Persistent,
			MessageId: e.ID, Timestamp: e.Time, Body: e.Data}
	}
	return msgs
}

func watermillConfig() wamqp.Config {
	cfg := wamqp.NewDurablePubSubConfig(url(), wamqp.GenerateQueueNameTopicNameWithSuffix("g"))
	cfg.Queue.Arguments = amqp.Table{"x-queue-type": "quorum"}
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.ChannelPoolSize = 1
	cfg.Consume.Qos.PrefetchCount = prefetch
	return cfg
}

func watermillMessages(n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
	}
	return msgs
}

// watermillSubscriber returns Watermill's configuration and a subscriber
// on it, closed when the benchmark ends.
func watermillSubscriber(b *testing.B) (wamqp.Config, *wamqp.Subscriber) {
	cfg := watermillConfig()
	sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
	if err != nil {
		b.Fatalf("watermill: %v", err)
	}
	b.Cleanup(func() { _ = sub.Close() })
	return cfg, sub
}

func eventkitBroker(b *testing.B) *rabbitmqbroker.Broker {
	k, err := rabbitmqbroker.New(context.Background(), rabbitmqbroker.Options{URL: url()})
	if err != nil {
		testenv.Unavailable(b, fmt.Sprintf("no RabbitMQ: %v", err))
	}
	b.Cleanup(func() { _ = k.Close(context.Background()) })
	return k
}

// Events per contender and run.
const (
	publishEvents = 10_000
	consumeEvents = 10_000
)

// queueState is one run's exchange and queue: every contender starts from
// a fresh one (for consume, filled with the same number of messages,
// untimed).
type queueState struct {
	topic string
	drop  func()
}

func (q *queueState) fresh(ch *amqp.Channel, fill []amqp.Publishing) func(context.Context) error {
	return func(context.Context) error {
		q.topic = name("bench")
		var err error
		if q.drop, err = declare(ch, q.topic); err != nil {
			return err
		}
		if fill != nil {
			_, err = rawPublish(ch, q.topic, fill)
		}
		return err
	}
}

// watermill's queue is topic_g (its naming), declared by its subscriber.
func (q *queueState) freshWatermill(ch *amqp.Channel, sub *wamqp.Subscriber, fill []amqp.Publishing) func(context.Context) error {
	return func(context.Context) error {
		q.topic = name("wbench")
		if err := sub.SubscribeInitialize(q.topic); err != nil {
			return err
		}
		t := q.topic
		q.drop = func() {
			_, _ = ch.QueueDelete(t+"_g", false, false, false)
			_ = ch.ExchangeDelete(t, false, false)
		}
		if fill != nil {
			_, err := rawPublish(ch, q.topic, fill)
			return err
		}
		return nil
	}
}

func (q *queueState) cleanup(context.Context) error {
	if q.drop != nil {
		q.drop()
	}
	return nil
}

// BenchmarkPublish: each contender publishes the same number of 1 KB
// persistent messages to a fresh durable quorum queue in calls of 100,
// each call returning when the server confirmed them: raw amqp091-go with
// deferred confirms (the baseline), eventkit's adapter, and Watermill
// (ConfirmDelivery: it waits for each message's confirm before the next).
func BenchmarkPublish(b *testing.B) {
	ch := admin(b)
	k := eventkitBroker(b)
	cfg, sub := watermillSubscriber(b)
	pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	n := benchtest.Events(publishEvents)
	evs := events(n)
	raw := encode(evs)
	var q queueState
	pubCh := admin(b)
	batches := func(clock *benchkit.Clock, call func(i, end int) error) (int, []time.Duration, error) {
		return benchtest.Batches(clock, n, batch, call)
	}
	benchtest.Compare(b, benchkit.NewMeter(url()),
		benchkit.Contender{Name: "raw", Prepare: q.fresh(ch, nil), Cleanup: q.cleanup, Run: func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			clock.Start()
			lat, err := rawPublish(pubCh, q.topic, raw)
			clock.Stop()
			return n, lat, err
		}},
		benchkit.Contender{Name: "eventkit", Prepare: q.fresh(ch, nil), Cleanup: q.cleanup, Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return batches(clock, func(i, end int) error { return k.Publish(ctx, q.topic, evs[i:end]...) })
		}},
		benchkit.Contender{Name: "watermill", Prepare: q.freshWatermill(ch, sub, nil), Cleanup: q.cleanup, Run: func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			msgs := watermillMessages(n)
			return batches(clock, func(i, end int) error { return pub.Publish(q.topic, msgs[i:end]...) })
		}},
	)
}

// BenchmarkConsume: each contender consumes a fresh queue filled with the
// same number of messages (untimed), with manual acks one by one and a
// prefetch of 256: raw amqp091-go (the baseline), eventkit's Subscribe
// and Watermill's subscriber (on a queue of its own encoding).
func BenchmarkConsume(b *testing.B) {
	ch := admin(b)
	k := eventkitBroker(b)
	cfg, sub := watermillSubscriber(b)
	n := benchtest.Events(consumeEvents)
	raw := encode(events(n))
	var m wamqp.DefaultMarshaler
	wmRaw := make([]amqp.Publishing, n)
	for i, wm := range watermillMessages(n) {
		var err error
		if wmRaw[i], err = m.Marshal(wm); err != nil {
			b.Fatal(err)
		}
	}
	var q queueState
	consCh := admin(b)
	if err := consCh.Qos(prefetch, 0, false); err != nil {
		b.Fatal(err)
	}
	benchtest.Compare(b, benchkit.NewMeter(url()),
		benchkit.Contender{Name: "raw", Prepare: q.fresh(ch, raw), Cleanup: q.cleanup, Run: func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			tag := name("c")
			clock.Start()
			ds, err := consCh.Consume(q.topic+".g", tag, false, false, false, false, nil)
			if err != nil {
				return 0, nil, err
			}
			defer consCh.Cancel(tag, false) //nolint:errcheck
			for range n {
				d := <-ds
				if err := d.Ack(false); err != nil {
					return 0, nil, err
				}
			}
			clock.Stop()
			return n, nil, nil
		}},
		benchkit.Contender{Name: "eventkit", Prepare: q.fresh(ch, raw), Cleanup: q.cleanup, Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			clock.Start()
			got := benchtest.NewCounter(clock, n)
			s, err := k.Subscribe(ctx, q.topic, "g", func(ctx context.Context, d broker.Delivery) error {
				err := d.Ack(ctx)
				got.Add()
				return err
			}, broker.WithMaxInFlight(prefetch))
			if err != nil {
				return 0, nil, err
			}
			defer s.Close(context.Background()) //nolint:errcheck
			if err := got.Wait("eventkit", 5*time.Minute); err != nil {
				return 0, nil, err
			}
			return n, nil, nil
		}},
		benchkit.Contender{Name: "watermill", Prepare: q.freshWatermill(ch, sub, wmRaw), Cleanup: q.cleanup, Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			clock.Start()
			// A subscriber per run, closed before the queue is deleted (a
			// live one declares its queue again).
			rsub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
			if err != nil {
				return 0, nil, err
			}
			defer rsub.Close()
			msgs, err := rsub.Subscribe(sctx, q.topic)
			if err != nil {
				return 0, nil, err
			}
			for range n {
				msg := <-msgs
				msg.Ack()
			}
			clock.Stop()
			return n, nil, nil
		}},
	)
}
