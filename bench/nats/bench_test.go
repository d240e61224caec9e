// Package natsbench compares eventkit's NATS JetStream adapter with the raw
// nats.go jetstream client and with Watermill's NATS pub/sub
// (watermill-nats v2, JetStream mode), against the same server, in the same
// run. It is a separate module so that the main module never depends on
// Watermill.
//
//	cd bench/nats && go test -run '^$' -bench . -benchtime 20000x
//
// Every contender publishes 1 KB messages with a dedupe id (eventkit:
// Nats-Msg-Id = event id; Watermill: TrackMsgId; raw: bare payloads, the
// upper bound) in calls of 500, each call returning when JetStream acked all
// of them, and consumes with an explicit ack per message and at most 512
// unacked. The contenders run interleaved (publish: batch by batch) or at
// the same time (consume), so that all see the same machine load.
package natsbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/nats"
)

const (
	batch    = 500
	inFlight = 512
)

func url() string {
	if u := os.Getenv("EVENTKIT_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
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
		b.Skipf("no NATS at %s: %v", url(), err)
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

func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	ek := ekBroker(b)
	js := rawJS(b)
	ekTopic, rawTopic, wmTopic := name("ekb"), name("rawb"), name("wmb")
	b.Cleanup(func() { _ = ek.DeleteTopic(context.Background(), ekTopic) })
	stream(b, js, rawTopic, rawTopic)
	stream(b, js, wmTopic, wmTopic)
	if err := ek.Publish(ctx, ekTopic, events(1)...); err != nil { // provision
		b.Fatal(err)
	}
	wm := wmPublisher(b)
	evs, msgs := events(b.N), wmMessages(b.N)
	b.ResetTimer()
	var dEK, dRaw, dWM time.Duration
	for i := 0; i < b.N; i += batch {
		end := min(i+batch, b.N)
		t0 := time.Now()
		if err := ek.Publish(ctx, ekTopic, evs[i:end]...); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		for range end - i {
			if _, err := js.PublishAsync(rawTopic, payload); err != nil {
				b.Fatal(err)
			}
		}
		<-js.PublishAsyncComplete()
		t2 := time.Now()
		if err := wm.Publish(wmTopic, msgs[i:end]...); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		dEK, dRaw, dWM = dEK+t1.Sub(t0), dRaw+t2.Sub(t1), dWM+t3.Sub(t2)
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(dEK), "eventkit-events/s")
	b.ReportMetric(rate(dRaw), "raw-events/s")
	b.ReportMetric(rate(dWM), "watermill-events/s")
	b.ReportMetric(dRaw.Seconds()/dEK.Seconds(), "eventkit/raw")
	b.ReportMetric(dWM.Seconds()/dEK.Seconds(), "eventkit/watermill")
}

func BenchmarkConsume(b *testing.B) {
	ctx := context.Background()
	ek := ekBroker(b)
	js := rawJS(b)
	ekTopic, wmTopic := name("ekc"), name("wmc")
	b.Cleanup(func() { _ = ek.DeleteTopic(context.Background(), ekTopic) })
	stream(b, js, wmTopic, wmTopic)
	evs, msgs := events(b.N), wmMessages(b.N)
	wm := wmPublisher(b)
	for i := 0; i < b.N; i += batch { // fill (untimed)
		if err := ek.Publish(ctx, ekTopic, evs[i:min(i+batch, b.N)]...); err != nil {
			b.Fatal(err)
		}
		if err := wm.Publish(wmTopic, msgs[i:min(i+batch, b.N)]...); err != nil {
			b.Fatal(err)
		}
	}
	rawCons, err := js.CreateOrUpdateConsumer(ctx, ek.StreamName(ekTopic), jetstream.ConsumerConfig{
		Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: inFlight,
	})
	if err != nil {
		b.Fatal(err)
	}
	wmSub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
		URL:              url(),
		QueueGroupPrefix: "wm",
		SubscribersCount: 1,
		AckWaitTimeout:   30 * time.Second,
		CloseTimeout:     5 * time.Second,
		Unmarshaler:      &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{
			SubscribeOptions: []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit(), nats.MaxAckPending(inFlight)},
			DurablePrefix:    "wm",
			AckAsync:         true,
		},
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	defer wmSub.Close()

	var nEK, nRaw, nWM atomic.Int64
	doneEK, doneRaw, doneWM := make(chan time.Time, 1), make(chan time.Time, 1), make(chan time.Time, 1)
	n := int64(b.N)
	b.ResetTimer()
	start := time.Now()
	sub, err := ek.Subscribe(ctx, ekTopic, "ek", func(ctx context.Context, d broker.Delivery) error {
		err := d.Ack(ctx)
		if nEK.Add(1) == n {
			doneEK <- time.Now()
		}
		return err
	}, broker.WithMaxInFlight(inFlight))
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close(ctx)
	cc, err := rawCons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if nRaw.Add(1) == n {
			doneRaw <- time.Now()
		}
	}, jetstream.PullMaxMessages(inFlight))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := wmSub.Subscribe(wctx, wmTopic)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for m := range ch {
			m.Ack()
			if nWM.Add(1) == n {
				doneWM <- time.Now()
			}
		}
	}()
	var dEK, dRaw, dWM time.Duration
	timeout := time.After(5 * time.Minute)
	for range 3 {
		select {
		case t := <-doneEK:
			dEK = t.Sub(start)
		case t := <-doneRaw:
			dRaw = t.Sub(start)
		case t := <-doneWM:
			dWM = t.Sub(start)
		case <-timeout:
			b.Fatalf("consumed: eventkit %d, raw %d, watermill %d of %d", nEK.Load(), nRaw.Load(), nWM.Load(), n)
		}
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(dEK), "eventkit-events/s")
	b.ReportMetric(rate(dRaw), "raw-events/s")
	b.ReportMetric(rate(dWM), "watermill-events/s")
	b.ReportMetric(dRaw.Seconds()/dEK.Seconds(), "eventkit/raw")
	b.ReportMetric(dWM.Seconds()/dEK.Seconds(), "eventkit/watermill")
}
