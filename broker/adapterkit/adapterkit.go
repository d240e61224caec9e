// Package adapterkit holds what broker adapters share and users of the
// broker API never call: building a *broker.PublishError, validating a
// Publish call's events, applying subscribe options with their defaults,
// settling a delivery at most once, the Handler contract after a handler
// returned, the consume-side size check, closing once (CloseOnce), the set
// of open subscriptions that Close closes (Subscriptions) and the checks
// that start Subscribe and Provision (CheckSubscribe, CheckProvision). A new
// adapter uses these and passes broker/brokertest; see docs/contributing.md.
package adapterkit

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

// FailAll builds a *broker.PublishError in which every event failed with err.
func FailAll(topic string, events []eventkit.Event, err error) *broker.PublishError {
	pe := &broker.PublishError{Topic: topic, Failed: make([]broker.FailedEvent, len(events))}
	for i, e := range events {
		pe.Failed[i] = broker.FailedEvent{Index: i, ID: e.ID, Err: err}
	}
	return pe
}

// ValidateEvents validates every event against maxSize (see
// eventkit.Event.Validate) and returns nil, or a *broker.PublishError naming every
// event of the call: the invalid ones with their error, the others with
// broker.ErrNotSent, since Publish sends nothing of a call with an invalid event.
// Adapters call it before sending anything.
func ValidateEvents(topic string, maxSize int, events []eventkit.Event) error {
	errs := make([]error, len(events))
	invalid := false
	for i, e := range events {
		if errs[i] = e.Validate(maxSize); errs[i] != nil {
			invalid = true
		}
	}
	if !invalid {
		return nil
	}
	return NotSentWith(topic, events, errs, "another event of the call is invalid")
}

// ValidateEventsAt is ValidateEvents with every *eventkit.SizeError in the
// result naming where the limit maxSize comes from (its Where), e.g. "redis
// broker Options.MaxPayload".
func ValidateEventsAt(topic string, maxSize int, where string, events []eventkit.Event) error {
	err := ValidateEvents(topic, maxSize, events)
	var pe *broker.PublishError
	if !errors.As(err, &pe) {
		return err
	}
	for _, f := range pe.Failed {
		var se *eventkit.SizeError
		if errors.As(f.Err, &se) {
			se.Where = where
		}
	}
	return err
}

// NotSentWith builds the *broker.PublishError of a call of which nothing was sent
// because of the events with a non-nil errs[i]: those fail with their error,
// every other event with broker.ErrNotSent and why.
func NotSentWith(topic string, events []eventkit.Event, errs []error, why string) *broker.PublishError {
	pe := &broker.PublishError{Topic: topic, Failed: make([]broker.FailedEvent, len(events))}
	notSent := fmt.Errorf("%w: %s", broker.ErrNotSent, why)
	for i, e := range events {
		err := errs[i]
		if err == nil {
			err = notSent
		}
		pe.Failed[i] = broker.FailedEvent{Index: i, ID: e.ID, Err: err}
	}
	return pe
}

// ApplySubscribeOptions returns the configuration that opts produce, with
// defaults for what they leave unset.
func ApplySubscribeOptions(opts ...broker.SubscribeOption) broker.SubscribeConfig {
	c := broker.SubscribeConfig{}
	for _, o := range opts {
		o(&c)
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = broker.DefaultMaxInFlight
	}
	if c.AckWait <= 0 {
		c.AckWait = broker.DefaultAckWait
	}
	return c
}

// AfterHandler applies the Handler contract after a handler call returned err:
// an error returned without settling the delivery nacks it with no delay, or
// terms it when the error is permanent. Adapters call it after every handler
// call; d must embed SettleOnce.
func AfterHandler(ctx context.Context, d broker.Delivery, err error) {
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

// SettleOnce is embedded by adapters' delivery types to make settling happen
// at most once: the first Claim returns true, later ones false.
type SettleOnce struct{ done atomic.Bool }

// settledReporter is implemented by deliveries that embed SettleOnce.
type settledReporter interface{ Settled() bool }

// Claim marks the delivery settled and reports whether this call did it.
func (s *SettleOnce) Claim() bool { return s.done.CompareAndSwap(false, true) }

// Settled reports whether the delivery has been settled.
func (s *SettleOnce) Settled() bool { return s.done.Load() }
