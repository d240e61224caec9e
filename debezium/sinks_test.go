package debezium_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/debezium"
	"github.com/eventkit/eventkit/internal/testenv"
)

func fixtureNamed(t testing.TB, name string) fixture {
	for _, fx := range loadFixtures(t) {
		if fx.Name == name {
			return fx
		}
	}
	t.Fatalf("no fixture %q", name)
	return fixture{}
}

func headerMap(fx fixture) map[string]string {
	m := map[string]string{}
	for _, h := range fx.Headers {
		m[h[0]] = h[1]
	}
	return m
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sinkCase subscribes to topic through Wrap(b, fx.Format), then publishes
// (as Debezium Server's sink would) the fixture's message and a message that
// is not an outbox event. The handler fails the first delivery of the event
// without settling it: the wrapper must nack it (the adapter, seeing its own
// DecodeErr, would term it), so it comes back as attempt 2 and decodes to
// the fixture's event. The foreign message arrives with a DecodeError.
func sinkCase(t *testing.T, b broker.Broker, topic string, fx fixture, publish func(headers map[string]string, body []byte)) {
	ctx := testCtx(t)
	w := debezium.Wrap(b, fx.Format)
	const group = "g"
	if err := w.(broker.Provisioner).Provision(ctx, topic, group); err != nil {
		t.Fatal(err)
	}
	got := make(chan broker.Delivery, 4)
	sub, err := w.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		if d.DecodeErr() == nil && d.Attempt() == 1 {
			return errors.New("first attempt fails") // unsettled: the contract says nack
		}
		got <- d
		return d.Ack(ctx)
	}, broker.WithAckWait(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(context.Background()) })
	publish(headerMap(fx), fx.value(t))
	publish(map[string]string{"x-other-tool": "1"}, []byte(`{"before":null}`))

	var ev *eventkit.Event
	var foreign error
	for ev == nil || foreign == nil {
		select {
		case d := <-got:
			if err := d.DecodeErr(); err != nil {
				if !errors.Is(err, eventkit.ErrDecode) {
					t.Fatalf("foreign message: %v, want a DecodeError", err)
				}
				foreign = err
				continue
			}
			if d.Attempt() != 2 {
				t.Errorf("event delivered with attempt %d, want 2 (nacked once)", d.Attempt())
			}
			e := d.Event()
			ev = &e
		case <-ctx.Done():
			t.Fatalf("event %v, foreign %v: timed out (a failed Debezium delivery must be nacked, not termed)", ev, foreign)
		}
	}
	want := fx.Want
	if ev.ID != want.ID || ev.Type != want.Type || ev.Source != want.Source || ev.Subject != want.Subject ||
		!ev.Time.Equal(want.Time) || ev.DataContentType != want.DataContentType || string(ev.Data) != *want.Data ||
		!reflect.DeepEqual(ev.Extensions, want.Extensions) {
		t.Errorf("got %#v\nwant %+v", *ev, *want)
	}
}

// TestNATSJetStreamSink: Debezium Server's NATS JetStream sink (body = value,
// headers JSON-encoded) read through eventkit's NATS adapter.
func TestNATSJetStreamSink(t *testing.T) {
	url := testenv.NATS.URL(t)
	ctx := testCtx(t)
	b, err := natsbroker.Connect(ctx, url, natsbroker.Options{Name: "eventkit-debezium-test"})
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.Name("dbz")
	t.Cleanup(func() {
		_ = b.DeleteTopic(context.Background(), topic)
		_ = b.Close(context.Background())
	})
	sinkCase(t, b, topic, fixtureNamed(t, "debezium-server-nats-jetstream"), func(h map[string]string, body []byte) {
		if err := b.PublishRaw(ctx, topic, h, body); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRabbitMQSink: Debezium Server's RabbitMQ sink (exchange = routed
// topic, AMQP headers = record headers with schemas) read through
// eventkit's RabbitMQ adapter.
func TestRabbitMQSink(t *testing.T) {
	url := testenv.RabbitMQ.URL(t)
	ctx := testCtx(t)
	b, err := rabbitmqbroker.New(ctx, rabbitmqbroker.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.Name("dbz")
	t.Cleanup(func() {
		_ = b.DeleteTopology(context.Background(), topic, "g")
		_ = b.Close(context.Background())
	})
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	sinkCase(t, b, topic, fixtureNamed(t, "debezium-server-rabbitmq-header-schema"), func(h map[string]string, body []byte) {
		tab := amqp.Table{}
		for k, v := range h {
			tab[k] = v
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, rabbitmqbroker.ExchangeName(topic), "s1", true, false,
			amqp.Publishing{Headers: tab, Body: body, DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish not confirmed: %v", err)
		}
	})
}

// TestRedisSink: Debezium Server's Redis sink in the extended format
// (fields key, value and the headers upper-cased) read through eventkit's
// Redis adapter.
func TestRedisSink(t *testing.T) {
	url := testenv.Redis.URL(t)
	ctx := testCtx(t)
	prefix := testenv.Name("dbz") + ":"
	b, err := redisbroker.New(ctx, redisbroker.Options{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	topic := "acct"
	t.Cleanup(func() {
		_ = b.DeleteTopic(context.Background(), topic)
		_ = b.Close(context.Background())
	})
	rdb := b.Client()
	fx := fixtureNamed(t, "debezium-server-redis-extended")
	sinkCase(t, b, topic, fx, func(h map[string]string, body []byte) {
		var vals []any
		for k, v := range h {
			vals = append(vals, k, v)
		}
		if err := rdb.XAdd(ctx, &goredis.XAddArgs{Stream: prefix + topic, Values: vals}).Err(); err != nil {
			t.Fatal(err)
		}
	})
}
