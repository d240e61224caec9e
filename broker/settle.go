package broker

import (
	"context"
	"sync/atomic"

	"github.com/eventkit/eventkit"
)

// SettleOnce is embedded by adapters' delivery types to make settling happen
// at most once: the first Claim returns true, later ones false.
type SettleOnce struct{ done atomic.Bool }

// Claim marks the delivery settled and reports whether this call did it.
func (s *SettleOnce) Claim() bool { return s.done.CompareAndSwap(false, true) }

// Settled reports whether the delivery has been settled.
func (s *SettleOnce) Settled() bool { return s.done.Load() }

// settledReporter is implemented by deliveries that embed SettleOnce.
type settledReporter interface{ Settled() bool }

// AfterHandler applies the Handler contract after a handler call returned err:
// an error returned without settling the delivery nacks it with no delay, or
// terms it when the error is permanent. Adapters call it after every handler
// call; d must embed SettleOnce.
func AfterHandler(ctx context.Context, d Delivery, err error) {
	if err == nil {
		return
	}
	if s, ok := d.(settledReporter); ok && s.Settled() {
		return
	}
	if eventkit.IsPermanent(err) || d.DecodeErr() != nil {
		_ = d.Term(ctx)
		return
	}
	_ = d.Nack(ctx, 0)
}

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
