package memorybroker

import (
	"context"
	"sync"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// Client returns a view of b that behaves like one client connection of a
// network broker: closing it closes only its own subscriptions and makes only
// its own Publish calls fail, while b and its other clients go on. Use it to
// simulate several processes sharing one broker, e.g. a consumer that dies.
func Client(b *Broker) broker.Broker { return &client{b: b, subs: map[broker.Subscription]struct{}{}} }

type client struct {
	b      *Broker
	mu     sync.Mutex
	closed bool
	closer adapterkit.CloseOnce
	subs   map[broker.Subscription]struct{}
}

func (c *client) Capabilities() broker.Capabilities { return c.b.Capabilities() }

func (c *client) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return adapterkit.FailAll(topic, events, broker.ErrClosed)
	}
	return c.b.Publish(ctx, topic, events...)
}

func (c *client) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, broker.ErrClosed
	}
	s, err := c.b.Subscribe(ctx, topic, group, h, opts...)
	if err != nil {
		return nil, err
	}
	c.subs[s] = struct{}{}
	return s, nil
}

func (c *client) Close(ctx context.Context) error { return c.closer.Close(ctx, c.close) }

func (c *client) close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	subs := c.subs
	c.subs = map[broker.Subscription]struct{}{}
	c.mu.Unlock()
	for s := range subs {
		_ = s.Close(ctx)
	}
	return nil
}
