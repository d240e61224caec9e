package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox"
)

func settleCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), settleTimeout)
}

// ack acks d on the route's settle context: no timer per event (the
// adapters bound their own round trips; shutdown bounds what is left).
func (r *route) ack(d broker.Delivery) {
	if err := d.Ack(r.settleCtx); err != nil && !errors.Is(err, broker.ErrAlreadySettled) {
		r.log.Warn("consumer: ack failed; the event will be redelivered", "id", d.Event().ID, "err", err)
	}
}

func (r *route) nack(d broker.Delivery, delay time.Duration) {
	ctx, cancel := settleCtx()
	defer cancel()
	if err := d.Nack(ctx, delay); err != nil && !errors.Is(err, broker.ErrAlreadySettled) {
		r.log.Warn("consumer: nack failed; the event will be redelivered after the ack wait", "id", d.Event().ID, "err", err)
	}
}

// handBack returns a delivery that was not started, or was stopped by the
// shutdown or by the loss of its partition, without counting an attempt
// (broker.Release): on Kafka it is read again from the committed offset
// rather than copied to the retry topic behind later events.
func (r *route) handBack(d broker.Delivery) {
	ctx, cancel := settleCtx()
	defer cancel()
	if err := broker.Release(ctx, d); err != nil && !errors.Is(err, broker.ErrAlreadySettled) {
		r.log.Warn("consumer: handing back a delivery failed; the event will be redelivered after the ack wait", "id", d.Event().ID, "err", err)
	}
}

// lost reports whether d may no longer be settled by this consumer (its
// Kafka partition was revoked).
func lost(d broker.Delivery) bool {
	c := broker.DeliveryContext(d)
	return c != nil && c.Err() != nil
}

func (r *route) term(d broker.Delivery) {
	ctx, cancel := settleCtx()
	defer cancel()
	if err := d.Term(ctx); err != nil && !errors.Is(err, broker.ErrAlreadySettled) {
		r.log.Warn("consumer: term failed", "id", d.Event().ID, "err", err)
	}
}

// sleep waits d, or returns false if the route starts stopping first.
func (r *route) sleep(d time.Duration) bool {
	if d <= 0 {
		return !r.isStopping()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stopping:
		return false
	}
}

// outcome settles d after attempt ended with err (ack, nack for a retry,
// dead letter), or, for a retry in place (ordered), sleeps through the
// backoff and returns again=true with the attempt number to run next.
func (r *route) outcome(d broker.Delivery, ev eventkit.Event, attempt int, first *time.Time, err error) (again bool, next int) {
	ctx := context.Background()
	switch {
	case err == nil:
		r.ack(d)
		r.handled.Add(1)
		r.cfg.Metrics.Count(ctx, r.topic, r.group, OutcomeHandled)
		if attempt > 1 {
			r.firstFail.Remove(ev.ID)
		}
		return false, 0
	case errors.Is(err, inbox.ErrDuplicate):
		r.ack(d)
		r.duplicates.Add(1)
		r.cfg.Metrics.Count(ctx, r.topic, r.group, OutcomeDuplicate)
		r.log.Debug("consumer: duplicate skipped", "id", ev.ID, "type", ev.Type)
		return false, 0
	case r.hardCtx.Err() != nil || lost(d):
		// Shutdown ran out of time, or the partition was revoked, and
		// cancelled the handler: not the event's fault, and not counted
		// as a failure.
		r.handBack(d)
		return false, 0
	case errors.Is(err, inbox.ErrInProgress):
		// Another worker holds the key; not an attempt of ours.
		if r.cfg.Mode.ordered() && r.sleep(r.cfg.Retry.Initial) {
			return true, attempt
		}
		r.nack(d, r.cfg.Retry.Initial)
		return false, 0
	}

	now := time.Now()
	r.failed.Add(1)
	r.cfg.Metrics.Count(ctx, r.topic, r.group, OutcomeFailed)
	if first.IsZero() {
		*first = now
		if prev, ok := r.firstFail.Get(ev.ID); ok {
			*first = prev
		} else if !r.cfg.Mode.ordered() {
			r.firstFail.Add(ev.ID, now)
		}
	}
	if reason, giveUp := r.giveUp(err, attempt); giveUp {
		r.log.Error("consumer: giving up on event", "id", ev.ID, "type", ev.Type, "subject", ev.Subject,
			"attempt", attempt, "reason", reason, "err", err)
		r.deadLetter(d, ev, deadletter.Failure{Reason: reason, Attempts: attempt, First: *first, Last: now, Err: err})
		return false, 0
	}
	delay := r.retrying(ctx, err, attempt)
	r.log.Warn("consumer: handler failed; will retry", "id", ev.ID, "type", ev.Type, "subject", ev.Subject,
		"attempt", attempt, "max_attempts", r.cfg.Retry.MaxAttempts, "retry_in", delay, "err", err)
	if !r.cfg.Mode.ordered() {
		r.nack(d, delay)
		return false, 0
	}
	// Ordered: retry in place so later events of this subject wait.
	r.extend(d)
	if !r.sleep(delay) {
		r.nack(d, 0)
		return false, 0
	}
	r.extend(d)
	return true, attempt + 1
}

// extend restarts d's ack wait where the broker can (broker.Extender), so
// that a retry in place is not redelivered to another consumer meanwhile.
func (r *route) extend(d broker.Delivery) {
	if rd, ok := d.(replayDelivery); ok {
		d = rd.Delivery
	}
	e, ok := d.(broker.Extender)
	if !ok {
		return
	}
	ctx, cancel := settleCtx()
	defer cancel()
	if err := e.InProgress(ctx); err != nil && !errors.Is(err, broker.ErrAlreadySettled) {
		r.log.Warn("consumer: extending the ack wait failed", "id", d.Event().ID, "err", err)
	}
}

// retrying counts a retry of an event that failed its attempt-th time
// with err and returns the delay before the next attempt: the backoff, or
// the handler's RetryAfterError.
func (r *route) retrying(ctx context.Context, err error, attempt int) time.Duration {
	delay := r.cfg.Retry.Backoff(attempt)
	var ra *RetryAfterError
	if errors.As(err, &ra) && ra.Delay >= 0 {
		delay = ra.Delay
	}
	r.retried.Add(1)
	r.cfg.Metrics.Count(ctx, r.topic, r.group, OutcomeRetried)
	return delay
}

// giveUp reports whether an event that failed its attempt-th time with err
// is given up on (dead-lettered, or its subject parked), and the reason.
func (r *route) giveUp(err error, attempt int) (reason string, giveUp bool) {
	switch {
	case errors.Is(err, ErrNoRoute):
		return deadletter.ReasonNoRoute, true
	case eventkit.IsPermanent(err):
		return deadletter.ReasonPermanent, true
	case attempt >= r.cfg.Retry.MaxAttempts:
		return deadletter.ReasonMaxAttempts, true
	}
	return "", false
}
