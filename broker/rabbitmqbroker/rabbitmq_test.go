package rabbitmqbroker_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newBroker connects a Broker for the test and closes it when the test ends.
func newBroker(t testing.TB, opts rabbitmqbroker.Options) *rabbitmqbroker.Broker {
	t.Helper()
	if opts.URL == "" {
		opts.URL = testenv.RabbitMQ.URL(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := rabbitmqbroker.New(ctx, opts)
	if err != nil {
		t.Fatalf("rabbitmq.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// provisionedTopic returns a fresh topic whose exchange exists with the
// groups provisioned (so that publishing to it before anyone subscribed is
// not unroutable), and deletes it all when the test ends.
func provisionedTopic(t testing.TB, opts rabbitmqbroker.Options, groups ...string) string {
	t.Helper()
	admin := newBroker(t, opts)
	topic := testenv.Name("ekt")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.Provision(ctx, topic, groups...); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := admin.DeleteTopology(ctx, topic, "g", "ga", "gb", "later"); err != nil {
			t.Logf("DeleteTopology: %v", err)
		}
	})
	return topic
}

// amqpChannel opens a channel on a connection of its own, as another
// tool would, closed with t.
func amqpChannel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(testenv.RabbitMQ.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// publishRaw publishes a message as another tool would: raw body and headers.
func publishRaw(t testing.TB, topic string, headers map[string]string, body []byte) error {
	conn, err := amqp.Dial(testenv.RabbitMQ.URL(t))
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	h := amqp.Table{}
	for k, v := range headers {
		h[k] = v
	}
	dc, err := ch.PublishWithDeferredConfirm(rabbitmqbroker.ExchangeName(topic), "raw", true, false,
		amqp.Publishing{Headers: h, Body: body, DeliveryMode: amqp.Persistent})
	if err != nil {
		return err
	}
	dc.Wait()
	return nil
}

func conformance(t *testing.T, opts rabbitmqbroker.Options) {
	brokertest.Run(t, brokertest.Config{
		New:              func(t *testing.T) broker.Broker { return newBroker(t, opts) },
		DurableCheckedBy: "TestConformanceDurable",
		// Publish to a topic with no queue bound is ErrUnroutable (see the
		// package doc), so each topic is provisioned with the group the
		// suite uses before the test publishes, as a deployment would.
		Topic: func(t *testing.T) string { return provisionedTopic(t, opts, "g") },
		PublishRaw: func(t *testing.T, topic string, h map[string]string, body []byte) error {
			return publishRaw(t, topic, h, body)
		},
		// A client with a low MaxMessageSize; the raw publisher takes any
		// size the server does.
		Limited: func(t *testing.T, limit int) (broker.Broker, func(string, map[string]string, []byte) error) {
			o := opts
			o.MaxMessageSize = limit
			return newBroker(t, o), func(topic string, h map[string]string, body []byte) error {
				return publishRaw(t, topic, h, body)
			}
		},
		// An exchange with no queue bound: every publish is returned.
		FailingTopic: func(t *testing.T) string { return provisionedTopic(t, opts) },
	})
}

func TestConformanceQuorum(t *testing.T) {
	t.Parallel()
	conformance(t, rabbitmqbroker.Options{QueueType: rabbitmqbroker.QueueQuorum})
}

func TestConformanceClassic(t *testing.T) {
	t.Parallel()
	conformance(t, rabbitmqbroker.Options{QueueType: rabbitmqbroker.QueueClassic})
}
