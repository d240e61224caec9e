package memorybroker_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	"github.com/eventkit/eventkit/broker/memorybroker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	shared := memorybroker.New(memorybroker.Options{})
	t.Cleanup(func() { _ = shared.Close(context.Background()) })
	brokertest.Run(t, brokertest.Config{
		// Every "client" of one test talks to the same in-process broker,
		// as clients of a network broker talk to one server. A client's
		// Close must not close the shared broker, so each gets a view.
		New: func(t *testing.T) broker.Broker { return memorybroker.Client(shared) },
		PublishRaw: func(t *testing.T, topic string, h map[string]string, body []byte) error {
			return shared.PublishRaw(context.Background(), topic, h, body)
		},
		// The limit is a broker's, so a broker of its own; its PublishRaw
		// takes any size and the message is refused on consume.
		Limited: func(t *testing.T, limit int) (broker.Broker, func(string, map[string]string, []byte) error) {
			lb := memorybroker.New(memorybroker.Options{MaxEventSize: limit})
			t.Cleanup(func() { _ = lb.Close(context.Background()) })
			return memorybroker.Client(lb), func(topic string, h map[string]string, body []byte) error {
				return lb.PublishRaw(context.Background(), topic, h, body)
			}
		},
	})
}
