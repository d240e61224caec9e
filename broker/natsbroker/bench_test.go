package natsbroker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/testenv"
)

// The benchmarks compare the adapter with raw nats.go jetstream doing the
// same work against the same server, in the same run:
//
//	go test -run '^$' -bench . -benchtime 100000x ./broker/natsbroker
const (
	benchBatch    = 500  // events per Publish call / per PublishAsyncComplete
	benchInFlight = 512  // unsettled deliveries (MaxInFlight; raw: PullMaxMessages and MaxAckPending)
	benchSize     = 1024 // payload bytes
)

func benchEvents(n int) []eventkit.Event {
	data := make([]byte, benchSize)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("bench.event", "application/octet-stream", data,
			eventkit.WithSubject("order-1"), eventkit.WithSource("/bench"))
	}
	return evs
}

func benchBroker(b *testing.B) (*natsbroker.Broker, string) {
	url := testenv.NATS.URL(b)
	br := connect(b, url)
	topic := testenv.Name("ekbench")
	b.Cleanup(func() {
		_ = br.DeleteTopic(context.Background(), topic)
		_ = br.Close(context.Background())
	})
	return br, topic
}

func report(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkPublish: batches of 1 KB events, each Publish call waiting for
// every JetStream ack; raw: PublishAsync of each message, then
// PublishAsyncComplete per batch.
func BenchmarkPublish(b *testing.B) {
	b.Run("eventkit", func(b *testing.B) {
		br, topic := benchBroker(b)
		ctx := context.Background()
		if err := br.Publish(ctx, topic, benchEvents(1)...); err != nil { // provision the stream
			b.Fatal(err)
		}
		evs := benchEvents(b.N)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += benchBatch {
			if err := br.Publish(ctx, topic, evs[i:min(i+benchBatch, b.N)]...); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start)
	})
	b.Run("raw", func(b *testing.B) {
		br, topic := benchBroker(b)
		ctx := context.Background()
		if err := br.Publish(ctx, topic, benchEvents(1)...); err != nil { // provision the stream
			b.Fatal(err)
		}
		nc, js := rawJS(b)
		_ = nc
		subject := br.StreamName(topic) + ".bench"
		data := benchEvents(1)[0].Data
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		publishAsyncBatches(b, js, func(int) (jetstream.PubAckFuture, error) { return js.PublishAsync(subject, data) })
		report(b, start)
	})
	b.Run("raw-with-ce-headers", rawHeaders)
}

// rawHeaders is the raw client publishing messages with the same
// CloudEvents headers and Nats-Msg-Id the adapter sends, prebuilt outside
// the timer: the difference to "raw" is the cost of the wire format on the
// client and the server (header parsing, deduplication), not of the adapter.
func rawHeaders(b *testing.B) {
	br, topic := benchBroker(b)
	ctx := context.Background()
	if err := br.Publish(ctx, topic, benchEvents(1)...); err != nil { // provision the stream
		b.Fatal(err)
	}
	_, js := rawJS(b)
	subject := br.StreamName(topic) + ".bench"
	evs := benchEvents(b.N)
	msgs := make([]*nats.Msg, b.N)
	for i, e := range evs {
		m := nats.NewMsg(subject)
		eventkit.NATSBinding.Headers(e, m.Header.Set)
		m.Header.Set(jetstream.MsgIDHeader, e.ID)
		m.Data = e.Data
		msgs[i] = m
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	publishAsyncBatches(b, js, func(j int) (jetstream.PubAckFuture, error) { return js.PublishMsgAsync(msgs[j]) })
	report(b, start)
}

// publishAsyncBatches sends messages 0 to b.N-1 with send, benchBatch at a
// time, waiting for each batch's acks (at most 30s).
func publishAsyncBatches(b *testing.B, js jetstream.JetStream, send func(j int) (jetstream.PubAckFuture, error)) {
	for i := 0; i < b.N; i += benchBatch {
		for j := i; j < min(i+benchBatch, b.N); j++ {
			if _, err := send(j); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			b.Fatal("acks did not come")
		}
	}
}

func rawJS(b *testing.B) (*nats.Conn, jetstream.JetStream) {
	nc, err := nats.Connect(testenv.NATS.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return nc, js
}

// fill publishes n events to topic (untimed).
func fill(b *testing.B, br *natsbroker.Broker, topic string, n int) {
	b.Helper()
	evs := benchEvents(n)
	for i := 0; i < n; i += benchBatch {
		if err := br.Publish(context.Background(), topic, evs[i:min(i+benchBatch, n)]...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsume: a stream holding b.N eventkit events of 1 KB is
// consumed by one subscription that acks each delivery; raw: a durable pull
// consumer with Consume and an explicit Ack per message, with the same
// in-flight window.
func BenchmarkConsume(b *testing.B) {
	b.Run("eventkit", func(b *testing.B) {
		br, topic := benchBroker(b)
		fill(b, br, topic, b.N)
		var n atomic.Int64
		done := make(chan struct{})
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		sub, err := br.Subscribe(context.Background(), topic, "bench", func(ctx context.Context, d broker.Delivery) error {
			if d.DecodeErr() != nil {
				b.Error(d.DecodeErr())
			}
			err := d.Ack(ctx)
			if n.Add(1) == int64(b.N) {
				close(done)
			}
			return err
		}, broker.WithMaxInFlight(benchInFlight))
		if err != nil {
			b.Fatal(err)
		}
		<-done
		report(b, start)
		b.StopTimer()
		_ = sub.Close(context.Background())
	})
	b.Run("raw", func(b *testing.B) {
		br, topic := benchBroker(b)
		fill(b, br, topic, b.N)
		_, js := rawJS(b)
		ctx := context.Background()
		var n atomic.Int64
		done := make(chan struct{})
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		cons, err := js.CreateOrUpdateConsumer(ctx, br.StreamName(topic), jetstream.ConsumerConfig{
			Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: benchInFlight,
		})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			if err := m.Ack(); err != nil {
				b.Error(err)
			}
			if n.Add(1) == int64(b.N) {
				close(done)
			}
		}, jetstream.PullMaxMessages(benchInFlight))
		if err != nil {
			b.Fatal(err)
		}
		<-done
		report(b, start)
		b.StopTimer()
		cc.Stop()
	})
}

// BenchmarkPublishSideBySide alternates batches of four publishers, each to
// its own stream, and times them separately so that all see the same machine
// load (the fair comparison on a shared machine):
//
//   - eventkit: the adapter's Publish (CloudEvents headers + Nats-Msg-Id)
//   - eventkit-nodedupe: the same with Options.DisableDedupe
//   - raw: PublishAsync of the bare payload + PublishAsyncComplete
//   - raw-same-wire: PublishMsgAsync of prebuilt messages with the very
//     headers the adapter sends (the cost of the wire format itself)
//
// ratio is eventkit / raw; ratio-same-wire is eventkit / raw-same-wire;
// ratio-nodedupe is eventkit-nodedupe / raw.
func BenchmarkPublishSideBySide(b *testing.B) {
	ctx := context.Background()
	br, topic := benchBroker(b)
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nd, err := natsbroker.Connect(ctx2, testenv.NATS.URL(b), natsbroker.Options{DisableDedupe: true})
	if err != nil {
		b.Fatal(err)
	}
	ndTopic := testenv.Name("ekbench")
	b.Cleanup(func() {
		_ = nd.DeleteTopic(context.Background(), ndTopic)
		_ = nd.Close(context.Background())
	})
	rawBr, rawTopic := benchBroker(b)
	wireBr, wireTopic := benchBroker(b)
	for _, x := range []struct {
		b *natsbroker.Broker
		t string
	}{{br, topic}, {nd, ndTopic}, {rawBr, rawTopic}, {wireBr, wireTopic}} {
		if err := x.b.Publish(ctx, x.t, benchEvents(1)...); err != nil { // provision
			b.Fatal(err)
		}
	}
	_, js := rawJS(b)
	subject := rawBr.StreamName(rawTopic) + ".bench"
	evs := benchEvents(b.N)
	ndEvs := benchEvents(b.N)
	data := evs[0].Data
	wire := make([]*nats.Msg, b.N)
	for i, e := range benchEvents(b.N) {
		m := nats.NewMsg(wireBr.StreamName(wireTopic) + "." + e.Type)
		eventkit.NATSBinding.Headers(e, m.Header.Set)
		m.Header.Set(jetstream.MsgIDHeader, e.ID)
		m.Data = e.Data
		wire[i] = m
	}
	b.ReportAllocs()
	b.ResetTimer()
	var ek, ekND, raw, rawWire time.Duration
	for i := 0; i < b.N; i += benchBatch {
		end := min(i+benchBatch, b.N)
		t0 := time.Now()
		if err := br.Publish(ctx, topic, evs[i:end]...); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		for j := i; j < end; j++ {
			if _, err := js.PublishAsync(subject, data); err != nil {
				b.Fatal(err)
			}
		}
		<-js.PublishAsyncComplete()
		t2 := time.Now()
		if err := nd.Publish(ctx, ndTopic, ndEvs[i:end]...); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		for j := i; j < end; j++ {
			if _, err := js.PublishMsgAsync(wire[j]); err != nil {
				b.Fatal(err)
			}
		}
		<-js.PublishAsyncComplete()
		t4 := time.Now()
		ek += t1.Sub(t0)
		raw += t2.Sub(t1)
		ekND += t3.Sub(t2)
		rawWire += t4.Sub(t3)
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(ek), "eventkit-events/s")
	b.ReportMetric(rate(raw), "raw-events/s")
	b.ReportMetric(rate(ekND), "eventkit-nodedupe-events/s")
	b.ReportMetric(rate(rawWire), "raw-same-wire-events/s")
	b.ReportMetric(raw.Seconds()/ek.Seconds(), "ratio")
	b.ReportMetric(rawWire.Seconds()/ek.Seconds(), "ratio-same-wire")
	b.ReportMetric(raw.Seconds()/ekND.Seconds(), "ratio-nodedupe")
}

// BenchmarkConsumeSideBySide fills one stream with 100,000 events
// (benchtest.Events) and consumes it with a raw pull consumer (Consume,
// explicit Ack, same in-flight window: the baseline) and an adapter
// subscription, each as a fresh group, one at a time, alternated over
// rounds (internal/benchkit), each timed and CPU-metered to its last ack.
// (They used to run at the same time, so the slower one had the machine to
// itself once the faster ended and the ratio read about 1.)
func BenchmarkConsumeSideBySide(b *testing.B) {
	br, topic := benchBroker(b)
	n := benchtest.Events(100_000)
	fill(b, br, topic, n)
	_, js := rawJS(b)
	groups := 0
	fresh := func() string { groups++; return fmt.Sprint("bench", groups) }
	await := func(done chan struct{}, got *atomic.Int64) error {
		select {
		case <-done:
			return nil
		case <-time.After(5 * time.Minute):
			return fmt.Errorf("consumed %d of %d", got.Load(), n)
		}
	}
	benchtest.Compare(b, benchkit.NewMeter(testenv.NATS.URL(b)),
		benchkit.Contender{Name: "raw", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			var got atomic.Int64
			done, g := make(chan struct{}), fresh()
			clock.Start()
			cons, err := js.CreateOrUpdateConsumer(ctx, br.StreamName(topic), jetstream.ConsumerConfig{
				Durable: g, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: benchInFlight,
			})
			if err != nil {
				return 0, nil, err
			}
			defer js.DeleteConsumer(context.Background(), br.StreamName(topic), g) //nolint:errcheck
			cc, err := cons.Consume(func(m jetstream.Msg) {
				_ = m.Ack()
				if got.Add(1) == int64(n) {
					clock.Stop()
					close(done)
				}
			}, jetstream.PullMaxMessages(benchInFlight))
			if err != nil {
				return 0, nil, err
			}
			defer cc.Stop()
			return n, nil, await(done, &got)
		}},
		benchkit.Contender{Name: "eventkit", Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			var got atomic.Int64
			done, g := make(chan struct{}), fresh()
			clock.Start()
			sub, err := br.Subscribe(ctx, topic, g, func(ctx context.Context, d broker.Delivery) error {
				err := d.Ack(ctx)
				if got.Add(1) == int64(n) {
					clock.Stop()
					close(done)
				}
				return err
			}, broker.WithMaxInFlight(benchInFlight))
			if err != nil {
				return 0, nil, err
			}
			defer js.DeleteConsumer(context.Background(), br.StreamName(topic), g) //nolint:errcheck
			defer sub.Close(ctx)                                                   //nolint:errcheck
			return n, nil, await(done, &got)
		}},
	)
}
