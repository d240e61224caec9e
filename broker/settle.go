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
