// Package rabbitmqbench compares eventkit's RabbitMQ adapter with raw
// amqp091-go and with Watermill's AMQP pub/sub (watermill-amqp v3), on the
// same server, in the same run. It is a separate module so that the main
// module never depends on Watermill.
//
//	cd bench/rabbitmq && go test -run '^$' -bench . -benchtime 5000x
//
// Every contender publishes 1 KB persistent messages to a durable quorum
// queue in calls of 100 messages, returning only when the server confirmed
// them (Watermill: ConfirmDelivery, which waits for each message's confirm
// before publishing the next), and consumes with manual acks one by one and
// a prefetch of 256.
package rabbitmqbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/rabbitmq"
)

const (
	batch    = 100
	prefetch = 256
)

func url(b *testing.B) string {
	if u := os.Getenv("EVENTKIT_RABBITMQ_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
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
		evs[i] = eventkit.New("bench.event", "application/octet-stream", payload, eventkit.WithSubject("s"))
	}
	return evs
}

// admin is a raw connection for setup and cleanup.
func admin(b *testing.B) *amqp.Channel {
	conn, err := amqp.Dial(url(b))
	if err != nil {
		b.Skipf("no RabbitMQ at %s: %v", url(b), err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	return ch
}

// queue declares a durable topic exchange and a quorum queue bound to it,
// deleted when the benchmark ends.
func queue(b *testing.B, kind string) (exchange, q string) {
	ch := admin(b)
	exchange, q = name("bench"), ""
	q = exchange + ".g"
	if err := ch.ExchangeDeclare(exchange, kind, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(q, "#", exchange, false, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = ch.QueueDelete(q, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	return exchange, q
}

func rawPublish(b *testing.B, exchange string, msgs []amqp.Publishing) {
	ch := admin(b)
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	dcs := make([]*amqp.DeferredConfirmation, 0, batch)
	for i := 0; i < len(msgs); i += batch {
		dcs = dcs[:0]
		for _, m := range msgs[i:min(i+batch, len(msgs))] {
			dc, err := ch.PublishWithDeferredConfirm(exchange, "bench.event", true, false, m)
			if err != nil {
				b.Fatal(err)
			}
			dcs = append(dcs, dc)
		}
		for _, dc := range dcs {
			if !dc.Wait() {
				b.Fatal("nacked")
			}
		}
	}
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

func watermillConfig(b *testing.B) wamqp.Config {
	cfg := wamqp.NewDurablePubSubConfig(url(b), wamqp.GenerateQueueNameTopicNameWithSuffix("g"))
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

func eventkitBroker(b *testing.B) *rabbitmq.Broker {
	k, err := rabbitmq.New(context.Background(), rabbitmq.Options{URL: url(b)})
	if err != nil {
		b.Skipf("no RabbitMQ: %v", err)
	}
	b.Cleanup(func() { _ = k.Close(context.Background()) })
	return k
}

func report(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

func BenchmarkPublish(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		exchange, _ := queue(b, "topic")
		evs := events(b.N)
		b.ResetTimer()
		start := time.Now()
		rawPublish(b, exchange, encode(evs))
		report(b, start)
	})
	b.Run("eventkit", func(b *testing.B) {
		k := eventkitBroker(b)
		topic, _ := queue(b, "topic") // same names eventkit uses: exchange = topic, queue = topic.g
		evs := events(b.N)
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < len(evs); i += batch {
			if err := k.Publish(ctx, topic, evs[i:min(i+batch, len(evs))]...); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start)
	})
	b.Run("watermill", func(b *testing.B) {
		cfg := watermillConfig(b)
		topic := name("wbench")
		sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
		if err != nil {
			b.Skipf("watermill: %v", err)
		}
		defer sub.Close()
		if err := sub.SubscribeInitialize(topic); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			ch := admin(b)
			_, _ = ch.QueueDelete(topic+"_g", false, false, false)
			_ = ch.ExchangeDelete(topic, false, false)
		})
		pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		msgs := watermillMessages(b.N)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < len(msgs); i += batch {
			if err := pub.Publish(topic, msgs[i:min(i+batch, len(msgs))]...); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start)
	})
}

func BenchmarkConsume(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		exchange, q := queue(b, "topic")
		rawPublish(b, exchange, encode(events(b.N)))
		ch := admin(b)
		if err := ch.Qos(prefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		ds, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			d := <-ds
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start)
	})
	b.Run("eventkit", func(b *testing.B) {
		topic, _ := queue(b, "topic")
		rawPublish(b, topic, encode(events(b.N)))
		k := eventkitBroker(b)
		var n atomic.Int64
		done := make(chan struct{})
		b.ResetTimer()
		start := time.Now()
		sub, err := k.Subscribe(context.Background(), topic, "g", func(ctx context.Context, d broker.Delivery) error {
			err := d.Ack(ctx)
			if n.Add(1) == int64(b.N) {
				close(done)
			}
			return err
		}, broker.WithMaxInFlight(prefetch))
		if err != nil {
			b.Fatal(err)
		}
		<-done
		report(b, start)
		b.StopTimer()
		_ = sub.Close(context.Background())
	})
	b.Run("watermill", func(b *testing.B) {
		cfg := watermillConfig(b)
		topic := name("wbench")
		sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
		if err != nil {
			b.Skipf("watermill: %v", err)
		}
		defer sub.Close()
		if err := sub.SubscribeInitialize(topic); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			ch := admin(b)
			_, _ = ch.QueueDelete(topic+"_g", false, false, false)
			_ = ch.ExchangeDelete(topic, false, false)
		})
		var m wamqp.DefaultMarshaler
		msgs := make([]amqp.Publishing, b.N)
		for i, wm := range watermillMessages(b.N) {
			if msgs[i], err = m.Marshal(wm); err != nil {
				b.Fatal(err)
			}
		}
		rawPublish(b, topic, msgs)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.ResetTimer()
		start := time.Now()
		ch, err := sub.Subscribe(ctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			msg := <-ch
			msg.Ack()
		}
		report(b, start)
	})
}
