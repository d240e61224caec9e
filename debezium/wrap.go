package debezium

import (
	"context"
	"errors"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// Wrap returns b with every subscription's deliveries decoded as the outbox
// event router's output in format f, so that the consumer runtime (and
// anything else taking a broker.Subscriber) reads what Debezium publishes:
//
//	c, err := consumer.New(debezium.Wrap(kafkaBroker, debezium.Format{}), cfg)
//
// A message that the adapter already decoded as a CloudEvent (one that
// eventkit's own relay published) is delivered as it is, so a topic may
// carry both while a service moves from one relay to the other. A message
// that is neither gives a delivery whose DecodeErr is the
// *eventkit.DecodeError of f.Decode (dead-lettered by the runtime, never
// retried). Publish, Provision, Capabilities and Close are b's.
//
// Deliveries keep what the adapter's deliveries offer: Release (handing back
// unstarted), InProgress (NATS ack wait extension), the per-partition
// context (Kafka); Unwrap returns the adapter's delivery.
func Wrap(b broker.Broker, f Format) broker.Broker {
	return &wrapped{Broker: b, f: f, name: b.Capabilities().Name}
}

type wrapped struct {
	broker.Broker
	f    Format
	name string
}

// Provision forwards to the wrapped broker (every adapter is a
// broker.Provisioner; the consumer provisions dead-letter topics with it).
func (w *wrapped) Provision(ctx context.Context, topic string, groups ...string) error {
	p, ok := w.Broker.(broker.Provisioner)
	if !ok {
		return errors.ErrUnsupported
	}
	return p.Provision(ctx, topic, groups...)
}

func (w *wrapped) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	return w.Broker.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		wd := w.wrap(d)
		err := h(ctx, wd)
		// Apply the Handler contract on the wrapped delivery: the adapter
		// would see its own DecodeErr (set for every Debezium message) and
		// Term what must be Nacked. Once settled here, the adapter's
		// AfterHandler does nothing.
		adapterkit.AfterHandler(ctx, wd, err)
		return err
	}, opts...)
}

func (w *wrapped) wrap(d broker.Delivery) broker.Delivery {
	wd := &delivery{Delivery: d}
	if d.DecodeErr() == nil {
		wd.ev = d.Event()
	} else {
		wd.ev, wd.err = w.f.decodeDelivery(w.name, d)
	}
	if x, ok := d.(broker.Extender); ok {
		return &extDelivery{delivery: wd, x: x}
	}
	return wd
}

// delivery is an adapter's delivery with the event decoded from Debezium's
// format.
type delivery struct {
	broker.Delivery
	ev  eventkit.Event
	err error
}

func (d *delivery) Event() eventkit.Event { return d.ev }
func (d *delivery) DecodeErr() error      { return d.err }

// Unwrap returns the adapter's delivery (a *kafka.Delivery, ...).
func (d *delivery) Unwrap() broker.Delivery { return d.Delivery }

// Release hands the delivery back unstarted (broker.Release on the adapter's).
func (d *delivery) Release(ctx context.Context) error { return broker.Release(ctx, d.Delivery) }

// Context is the adapter's delivery context (broker.DeliveryContext).
func (d *delivery) Context() context.Context { return broker.DeliveryContext(d.Delivery) }

// Settled reports whether the adapter's delivery has been settled.
func (d *delivery) Settled() bool {
	s, ok := d.Delivery.(interface{ Settled() bool })
	return ok && s.Settled()
}

type extDelivery struct {
	*delivery
	x broker.Extender
}

func (d *extDelivery) InProgress(ctx context.Context) error { return d.x.InProgress(ctx) }
