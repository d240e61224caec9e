package rabbitmqbroker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// go test -run '^$' -bench . ./broker/rabbitmqbroker
//
// Publish: batches of 100 events of 1 KB with publisher confirms (mandatory,
// persistent), eventkit's Publish beside amqp091-go publishing the same
// messages with deferred confirms and waiting for the batch. Consume: manual
// acks one by one, prefetch 256, eventkit's Subscribe beside amqp091-go's
// Consume on the same kind of queue.

const benchBatch = 100

func benchEvents(n int) []eventkit.Event {
	data := make([]byte, 1024)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("bench.event", "application/octet-stream", data, eventkit.WithSubject("s"))
	}
	return evs
}

func rawChannel(b *testing.B) (*amqp.Connection, *amqp.Channel) {
	conn, err := amqp.Dial(testenv.RabbitMQ.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return conn, ch
}

// rawPublish publishes msgs to exchange in batches with confirms, as an
// application using amqp091-go directly would.
func rawPublish(b *testing.B, ch *amqp.Channel, exchange string, msgs []amqp.Publishing) {
	dcs := make([]*amqp.DeferredConfirmation, 0, benchBatch)
	for i := 0; i < len(msgs); i += benchBatch {
		dcs = dcs[:0]
		for _, m := range msgs[i:min(i+benchBatch, len(msgs))] {
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

func encoded(evs []eventkit.Event) []amqp.Publishing {
	msgs := make([]amqp.Publishing, len(evs))
	for i, e := range evs {
		h := amqp.Table{}
		eventkit.AMQPBinding.Headers(e, func(k, v string) { h[k] = v })
		msgs[i] = amqp.Publishing{Headers: h, ContentType: e.DataContentType, DeliveryMode: amqp.Persistent,
			MessageId: e.ID, Timestamp: e.Time, Body: e.Data}
	}
	return msgs
}

func BenchmarkPublish(b *testing.B) {
	for _, qt := range []string{rabbitmqbroker.QueueQuorum, rabbitmqbroker.QueueClassic} {
		opts := rabbitmqbroker.Options{QueueType: qt}
		b.Run(qt+"/raw", func(b *testing.B) {
			topic := provisionedTopic(b, opts, "g")
			_, ch := rawChannel(b)
			if err := ch.Confirm(false); err != nil {
				b.Fatal(err)
			}
			evs := benchEvents(b.N)
			b.SetBytes(1024)
			b.ResetTimer()
			start := time.Now()
			// Building the messages is part of the work an application
			// using amqp091-go directly does.
			rawPublish(b, ch, topic, encoded(evs))
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
		b.Run(qt+"/eventkit", func(b *testing.B) {
			topic := provisionedTopic(b, opts, "g")
			k := newBroker(b, opts)
			evs := benchEvents(b.N)
			ctx := context.Background()
			b.SetBytes(1024)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < len(evs); i += benchBatch {
				if err := k.Publish(ctx, topic, evs[i:min(i+benchBatch, len(evs))]...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

func BenchmarkConsume(b *testing.B) {
	const prefetch = 256
	for _, qt := range []string{rabbitmqbroker.QueueQuorum, rabbitmqbroker.QueueClassic} {
		opts := rabbitmqbroker.Options{QueueType: qt}
		fill := func(b *testing.B, topic string) {
			_, ch := rawChannel(b)
			if err := ch.Confirm(false); err != nil {
				b.Fatal(err)
			}
			rawPublish(b, ch, topic, encoded(benchEvents(b.N)))
		}
		b.Run(qt+"/raw", func(b *testing.B) {
			topic := provisionedTopic(b, opts, "g")
			fill(b, topic)
			_, ch := rawChannel(b)
			if err := ch.Qos(prefetch, 0, false); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(1024)
			b.ResetTimer()
			start := time.Now()
			ds, err := ch.Consume(rabbitmqbroker.QueueName(topic, "g"), "", false, false, false, false, nil)
			if err != nil {
				b.Fatal(err)
			}
			for range b.N {
				d := <-ds
				if err := d.Ack(false); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
		b.Run(qt+"/eventkit", func(b *testing.B) {
			topic := provisionedTopic(b, opts, "g")
			fill(b, topic)
			k := newBroker(b, opts)
			var n atomic.Int64
			done := make(chan struct{})
			b.SetBytes(1024)
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
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			b.StopTimer()
			_ = sub.Close(context.Background())
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchPublishers is how many goroutines publish at once in
// BenchmarkPublishConcurrent.
const benchPublishers = 8

// runPublishers splits b.N events over benchPublishers goroutines, each
// calling publish with its share, and reports events/s and the client's CPU
// time per event.
func runPublishers(b *testing.B, publish func(p int, evs []eventkit.Event) error) {
	evs := benchEvents(b.N)
	b.SetBytes(1024)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	errs := make(chan error, benchPublishers)
	per := (len(evs) + benchPublishers - 1) / benchPublishers
	for p := range benchPublishers {
		share := evs[min(p*per, len(evs)):min((p+1)*per, len(evs))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := publish(p, share); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
}

// rawAttributed publishes msgs on its own confirm-mode channel in batches,
// mandatory, and matches each basic.return to its message by id, as an
// application using amqp091-go directly with correct attribution would
// (one channel per publishing goroutine: returns carry no delivery tag).
func rawAttributed(ch *amqp.Channel, returns chan amqp.Return, exchange string, msgs []amqp.Publishing) error {
	dcs := make([]*amqp.DeferredConfirmation, 0, benchBatch)
	returned := map[string]bool{}
	for i := 0; i < len(msgs); i += benchBatch {
		dcs = dcs[:0]
		batch := msgs[i:min(i+benchBatch, len(msgs))]
		for _, m := range batch {
			dc, err := ch.PublishWithDeferredConfirm(exchange, "bench.event", true, false, m)
			if err != nil {
				return err
			}
			dcs = append(dcs, dc)
		}
		for j, dc := range dcs {
			if !dc.Wait() {
				return errors.New("nacked")
			}
			for drained := false; !drained; {
				select {
				case r := <-returns:
					returned[r.MessageId] = true
				default:
					drained = true
				}
			}
			if returned[batch[j].MessageId] {
				return fmt.Errorf("message %s returned", batch[j].MessageId)
			}
		}
	}
	return nil
}

// BenchmarkPublishConcurrent: 8 goroutines publish batches of 100 events of
// 1 KB at once on one eventkit Broker, beside raw amqp091-go with one
// confirm channel per goroutine and returns matched to their messages.
//
//	go test -run '^$' -bench PublishConcurrent -count 4 ./broker/rabbitmqbroker
func BenchmarkPublishConcurrent(b *testing.B) {
	opts := rabbitmqbroker.Options{QueueType: rabbitmqbroker.QueueQuorum}
	b.Run("raw", func(b *testing.B) {
		topic := provisionedTopic(b, opts, "g")
		conn, _ := rawChannel(b)
		chs := make([]*amqp.Channel, benchPublishers)
		rets := make([]chan amqp.Return, benchPublishers)
		for p := range chs {
			ch, err := conn.Channel()
			if err != nil {
				b.Fatal(err)
			}
			if err := ch.Confirm(false); err != nil {
				b.Fatal(err)
			}
			chs[p], rets[p] = ch, ch.NotifyReturn(make(chan amqp.Return, benchBatch))
		}
		runPublishers(b, func(p int, evs []eventkit.Event) error {
			return rawAttributed(chs[p], rets[p], topic, encoded(evs))
		})
	})
	b.Run("eventkit", func(b *testing.B) {
		topic := provisionedTopic(b, opts, "g")
		k := newBroker(b, opts)
		ctx := context.Background()
		runPublishers(b, func(_ int, evs []eventkit.Event) error {
			for i := 0; i < len(evs); i += benchBatch {
				if err := k.Publish(ctx, topic, evs[i:min(i+benchBatch, len(evs))]...); err != nil {
					return err
				}
			}
			return nil
		})
	})
}
