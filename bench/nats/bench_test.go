// Package natsbench compares eventkit's NATS JetStream adapter with the raw
// nats.go jetstream client and with Watermill's NATS pub/sub
// (watermill-nats v2, JetStream mode), against the same server, in the same
// run. It is a separate module so that the main module never depends on
// Watermill.
//
//	cd bench/nats && go test -run '^$' -bench . -benchtime 1x
//
// Every contender publishes 1 KB messages with a dedupe id (eventkit:
// Nats-Msg-Id = event id; Watermill: TrackMsgId; raw: bare payloads, the
// upper bound) in calls of 500, each call returning when JetStream acked all
// of them, and consumes with an explicit ack per message and at most 512
// unacked. The contenders run one at a time, alternated over rounds
// (internal/benchkit), each on a fresh stream or durable.
package natsbench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/testenv"
)

const (
	batch    = 500
	inFlight = 512
)

var (
	url     = testenv.NATS.Lookup
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

func wmMessages(n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
	}
	return msgs
}

func ekBroker(b *testing.B) *natsbroker.Broker {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := natsbroker.Connect(ctx, url(), natsbroker.Options{})
	if err != nil {
		testenv.Unavailable(b, fmt.Sprintf("no NATS at %s: %v", url(), err))
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	return br
}

func rawJS(b *testing.B) jetstream.JetStream {
	nc, err := nats.Connect(url())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return js
}

// stream creates a stream taking subject, deleted at the end.
func stream(b *testing.B, js jetstream.JetStream, name, subject string) {
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
}

func wmPublisher(b *testing.B) *wnats.Publisher {
	p, err := wnats.NewPublisher(wnats.PublisherConfig{
		URL:       url(),
		Marshaler: &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{TrackMsgId: true},
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

// Events per contender and run: large enough that a run's start-up (a
// subscription, a durable) is well under 5 % of it.
const (
	publishEvents = 50_000
	consumeEvents = 100_000
)

// BenchmarkPublish: each contender publishes the same number of 1 KB
// events in calls of 500, each call returning when JetStream acked all of
// them, to a fresh stream: raw nats.go PublishAsync of bare payloads (the
// baseline, the upper bound), raw PublishMsgAsync with the headers eventkit
// sends (same wire), eventkit's adapter (dedupe id, binary CloudEvents
// headers) and watermill-nats (TrackMsgId). Latencies are per call.
func BenchmarkPublish(b *testing.B) {
	ek := ekBroker(b)
	js := rawJS(b)
	wm := wmPublisher(b)
	n := benchtest.Events(publishEvents)
	evs, msgs := events(n), wmMessages(n)
	var topic string
	fresh := func(eventkitStream bool) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			topic = name("pub")
			if eventkitStream {
				return ek.Publish(ctx, topic, events(1)...) // provision
			}
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: topic, Subjects: []string{topic}, Storage: jetstream.FileStorage})
			return err
		}
	}
	drop := func(ctx context.Context) error {
		_ = js.DeleteStream(ctx, topic)
		_ = ek.DeleteTopic(ctx, topic)
		return nil
	}
	batches := func(clock *benchkit.Clock, call func(i, end int) error) (int, []time.Duration, error) {
		return benchtest.Batches(clock, n, batch, call)
	}
	rawAsync := func(msg func(i int) *nats.Msg) func(i, end int) error {
		return func(i, end int) error {
			for j := i; j < end; j++ {
				if _, err := js.PublishMsgAsync(msg(j)); err != nil {
					return err
				}
			}
			<-js.PublishAsyncComplete()
			return nil
		}
	}
	benchtest.Compare(b, benchkit.NewMeter(url()),
		benchkit.Contender{Name: "raw-bare", Prepare: fresh(false), Cleanup: drop,
			Run: func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
				return batches(clock, rawAsync(func(int) *nats.Msg { return &nats.Msg{Subject: topic, Data: payload} }))
			}},
		benchkit.Contender{Name: "raw-same-headers", Prepare: fresh(false), Cleanup: drop,
			Run: func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
				return batches(clock, rawAsync(func(j int) *nats.Msg {
					e := evs[j]
					m := nats.NewMsg(topic)
					m.Header["ce-specversion"] = []string{"1.0"}
					m.Header["ce-id"] = []string{e.ID}
					m.Header["ce-source"] = []string{e.Source}
					m.Header["ce-type"] = []string{e.Type}
					m.Header["ce-time"] = []string{e.Time.Format(time.RFC3339Nano)}
					m.Header["ce-subject"] = []string{e.Subject}
					m.Header["content-type"] = []string{e.DataContentType}
					m.Header["Nats-Msg-Id"] = []string{e.ID}
					m.Data = e.Data
					return m
				}))
			}},
		benchkit.Contender{Name: "eventkit", Prepare: fresh(true), Cleanup: drop,
			Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
				return batches(clock, func(i, end int) error { return ek.Publish(ctx, topic, evs[i:end]...) })
			}},
		benchkit.Contender{Name: "watermill", Prepare: fresh(false), Cleanup: drop,
			Run: func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
				return batches(clock, func(i, end int) error { return wm.Publish(topic, msgs[i:end]...) })
			}},
	)
}

// BenchmarkConsume: the raw nats.go pull consumer (Consume, explicit Ack,
// at most 512 unacked: the baseline), the eventkit adapter's Subscribe
// (Ack per delivery, WithMaxInFlight 512) and the watermill-nats
// subscriber (one subscriber goroutine, async acks, MaxAckPending 512)
// each consume every event of a pre-filled stream as a fresh durable, one
// at a time, alternated over rounds, timed to the last ack.
func BenchmarkConsume(b *testing.B) {
	ctx := context.Background()
	ek := ekBroker(b)
	js := rawJS(b)
	n := benchtest.Events(consumeEvents)
	ekTopic, wmTopic := name("ekc"), name("wmc")
	b.Cleanup(func() { _ = ek.DeleteTopic(context.Background(), ekTopic) })
	stream(b, js, wmTopic, wmTopic)
	evs, msgs := events(batch), wmMessages(n)
	wm := wmPublisher(b)
	for i := 0; i < n; i += batch { // fill (untimed)
		for j := range evs {
			evs[j].ID = eventkit.New("x", "", nil).ID
		}
		if err := ek.Publish(ctx, ekTopic, evs[:min(batch, n-i)]...); err != nil {
			b.Fatal(err)
		}
		if err := wm.Publish(wmTopic, msgs[i:min(i+batch, n)]...); err != nil {
			b.Fatal(err)
		}
	}
	const stall = 5 * time.Minute // the most a contender may take
	benchtest.Compare(b, benchkit.NewMeter(url()),
		benchkit.Contender{Name: "raw", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			c, g := benchtest.NewCounter(clock, n), name("raw")
			clock.Start()
			cons, err := js.CreateOrUpdateConsumer(ctx, ek.StreamName(ekTopic), jetstream.ConsumerConfig{
				Durable: g, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: inFlight,
			})
			if err != nil {
				return 0, nil, err
			}
			defer js.DeleteConsumer(context.Background(), ek.StreamName(ekTopic), g) //nolint:errcheck
			cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack(); c.Add() }, jetstream.PullMaxMessages(inFlight))
			if err != nil {
				return 0, nil, err
			}
			defer cc.Stop()
			return n, nil, c.Wait("raw", stall)
		}},
		benchkit.Contender{Name: "eventkit", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			c, g := benchtest.NewCounter(clock, n), name("ek")
			clock.Start()
			sub, err := ek.Subscribe(ctx, ekTopic, g, func(ctx context.Context, d broker.Delivery) error {
				err := d.Ack(ctx)
				c.Add()
				return err
			}, broker.WithMaxInFlight(inFlight))
			if err != nil {
				return 0, nil, err
			}
			defer js.DeleteConsumer(context.Background(), ek.StreamName(ekTopic), g) //nolint:errcheck
			defer sub.Close(ctx)
			return n, nil, c.Wait("eventkit", stall)
		}},
		benchkit.Contender{Name: "watermill", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			c, g := benchtest.NewCounter(clock, n), name("wm")
			clock.Start()
			wmSub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
				URL:              url(),
				QueueGroupPrefix: g,
				SubscribersCount: 1,
				AckWaitTimeout:   30 * time.Second,
				CloseTimeout:     5 * time.Second,
				Unmarshaler:      &wnats.NATSMarshaler{},
				JetStream: wnats.JetStreamConfig{
					SubscribeOptions: []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit(), nats.MaxAckPending(inFlight)},
					DurablePrefix:    g,
					AckAsync:         true,
				},
			}, watermill.NopLogger{})
			if err != nil {
				return 0, nil, err
			}
			defer wmSub.Close()
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := wmSub.Subscribe(wctx, wmTopic)
			if err != nil {
				return 0, nil, err
			}
			go func() {
				for m := range ch {
					m.Ack()
					c.Add()
				}
			}()
			return n, nil, c.Wait("watermill", stall)
		}},
	)
}
