package broker

import (
	"context"
)

// Releaser is implemented by deliveries that can be handed back unstarted
// without counting as an attempt. The consumer runtime releases the
// deliveries it had queued but not started when it shuts down.
type Releaser interface {
	// Release settles nothing: the delivery is delivered again, to this
	// group, as if it had not been delivered (on Kafka: read again from the
	// committed offset, in order, by the partition's next owner).
	Release(ctx context.Context) error
}

// Release hands d back unstarted: d.Release if d is a Releaser, otherwise
// Nack(ctx, 0).
func Release(ctx context.Context, d Delivery) error {
	if r, ok := d.(Releaser); ok {
		return r.Release(ctx)
	}
	return d.Nack(ctx, 0)
}

// DeliveryContext returns the context that ends when d may no longer be
// settled by this subscriber (Kafka: its partition was revoked), or nil if
// d has none beyond its subscription's.
func DeliveryContext(d Delivery) context.Context {
	if c, ok := d.(interface{ Context() context.Context }); ok {
		return c.Context()
	}
	return nil
}
