package consumer

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox"
)

// Strict order (Mode Strict). Deliveries still go through the
// per-subject dispatch of PerSubject (one worker per subject in this
// process, so the common case needs no round trip to the broker), but the
// decision whether an event may run is the inbox's: its position row for
// (group, topic, subject), locked in the handler's transaction, says which
// sequence number is next. An event that is early goes back to the broker
// with a short, growing delay and is not counted as an attempt; a duplicate
// is acked; the head's failures are counted in the position row, so that
// MaxAttempts counts handler failures of the head across processes and
// redeliveries, not deliveries of early copies.

// deadLetterParked publishes the dead letter of ev, the head its subject
// is parked at, marked with deadletter.ExtParked, and then acks d.
func (r *route) deadLetterParked(d broker.Delivery, ev eventkit.Event, seq int64, f deadletter.Failure) {
	dl := deadletter.Of(ev, r.topic, r.group, f)
	dl.Extensions[deadletter.ExtParked] = strconv.FormatInt(seq, 10)
	r.publishDeadLetter(d, dl, f)
}

// runOrdered processes one delivery of an ordered (or strict) route; held
// says it was a held early event (Strict mode).
func (r *route) runOrdered(d broker.Delivery, held bool) {
	if r.cfg.Mode.strict() {
		r.processStrict(d, held)
		return
	}
	r.process(d)
}

// earlyDelay is how long an early event waits before it is delivered again:
// Retry.Initial doubling with each early delivery, up to a second (up to
// Retry.Max while its subject is parked: only an operator can resume it).
func (r *route) earlyDelay(d broker.Delivery, parked bool) time.Duration {
	limit := min(time.Second, r.cfg.Retry.Max)
	if parked {
		limit = r.cfg.Retry.Max
	}
	return min(r.cfg.Retry.Backoff(min(max(d.Attempt(), 1), 16)), limit)
}

// processStrict handles one delivery in strict order: it is settled when
// processStrict returns, or, if it is early, held (stricthold.go); recheck
// says it was held before.
func (r *route) processStrict(d broker.Delivery, recheck bool) {
	t, ok := r.strictPrep(d, recheck)
	if !ok {
		return
	}
	if !r.strictLoop(t) {
		r.release()
	}
}

// strictTry is one sequenced delivery of a strict route, with what its
// tries carry from one to the next.
type strictTry struct {
	d       broker.Delivery
	ev      eventkit.Event
	pos     inbox.Position
	recheck bool      // it was a held early event
	first   time.Time // its first failure here
	notHead int       // failures recorded as "no longer the head" in a row
	run     int       // strict batches: its subject's index in the batch
}

// strictPrep settles (and releases) d if it does not run in sequence
// order: the route stops, it cannot be decoded, it carries no subject
// sequence (best-effort order, PerSubject) or a bad one (dead-lettered).
// Otherwise it returns d's try, ok, with d's slot still taken.
func (r *route) strictPrep(d broker.Delivery, recheck bool) (*strictTry, bool) {
	if r.isStopping() || lost(d) || d.DecodeErr() != nil {
		r.process(d)
		return nil, false
	}
	ev := d.Event()
	seq, ok, err := eventkit.SubjectSeq(ev)
	if !ok || ev.Subject == "" {
		// Not sequenced: best-effort order (PerSubject), inbox
		// deduplication by event id.
		r.process(d)
		return nil, false
	}
	if !recheck {
		r.held.arrived.Store(time.Now().UnixNano())
	}
	if err != nil {
		now := time.Now()
		r.failed.Add(1)
		r.log.Error("consumer: bad subject sequence; dead-lettering the event", "id", ev.ID, "err", err)
		r.deadLetter(d, ev, deadletter.Failure{Reason: deadletter.ReasonPermanent, Attempts: 1, First: now, Last: now, Err: err})
		r.release()
		return nil, false
	}
	return &strictTry{d: d, ev: ev, recheck: recheck,
		pos: inbox.Position{Consumer: r.group, Topic: r.topic, Subject: ev.Subject, Seq: seq}}, true
}

// strictLoop tries t with ProcessInOrder until it is settled, or held
// (kept: its slot stays taken; otherwise the caller releases it).
func (r *route) strictLoop(t *strictTry) (kept bool) {
	seqr := r.cfg.Inbox.(inbox.Sequencer)
	for {
		failures := 0
		tctx, cancel := context.WithTimeout(r.hardCtx, r.cfg.HandlerTimeout)
		err := seqr.ProcessInOrder(tctx, t.pos, func(ctx context.Context, f int) error {
			failures = f
			return r.call(ctx, nil, t.ev, f+1, func(ctx context.Context, call func(context.Context) error) error { return call(ctx) })
		})
		cancel()
		again, kept := r.strictOutcome(t, err, failures)
		if !again {
			return kept
		}
	}
}

// strictOutcome settles the result err of one try of t, whose subject's
// head had failures recorded before it: again says t must be tried again
// now (a failure retried in place, or no longer the head), kept that t
// was held (its slot stays taken).
func (r *route) strictOutcome(t *strictTry, err error, failures int) (again, kept bool) {
	d, ev, pos, seq := t.d, t.ev, t.pos, t.pos.Seq
	ctx := context.Background()
	seqr := r.cfg.Inbox.(inbox.Sequencer)
	var early *inbox.EarlyError
	switch {
	case err == nil:
		r.ack(d)
		r.progress(ev.Subject, seq)
		r.handled.Add(1)
		r.cfg.Metrics.Count(ctx, r.topic, r.group, OutcomeHandled)
		return false, false
	case errors.Is(err, inbox.ErrDuplicate):
		r.ack(d)
		r.progress(ev.Subject, seq)
		r.duplicates.Add(1)
		r.cfg.Metrics.Count(ctx, r.topic, r.group, OutcomeDuplicate)
		r.log.Debug("consumer: duplicate skipped", "id", ev.ID, "subject", ev.Subject, "seq", seq)
		return false, false
	case r.hardCtx.Err() != nil:
		r.nack(d, 0)
		return false, false
	case errors.As(err, &early):
		if !t.recheck {
			r.early.Add(1)
		}
		if early.Parked == 0 {
			if kept := r.hold(d, ev.Subject, seq, early.Last, t.recheck); kept {
				r.log.Debug("consumer: early event held; waiting for its subject's earlier events", "id", ev.ID,
					"subject", ev.Subject, "seq", seq, "last", early.Last)
				return false, true
			}
		}
		delay := r.earlyDelay(d, early.Parked != 0)
		r.log.Debug("consumer: early event; waiting for its subject's earlier events", "id", ev.ID,
			"subject", ev.Subject, "seq", seq, "last", early.Last, "parked", early.Parked, "retry_in", delay)
		r.earlyReturned.Add(1)
		r.nack(d, delay)
		if early.Parked != 0 {
			r.releaseSubject(ev.Subject)
		}
		return false, false
	case errors.Is(err, inbox.ErrParked):
		// The subject is parked at this very event: it was given up
		// on and its dead letter may not have been published (or
		// this is a copy). Publish it (again: at least once).
		now := time.Now()
		r.deadLetterParked(d, ev, seq, deadletter.Failure{Reason: deadletter.ReasonMaxAttempts, Attempts: r.cfg.Retry.MaxAttempts, First: now, Last: now, Err: err})
		r.releaseSubject(ev.Subject)
		return false, false
	}

	// The head failed (its writes were rolled back): count it.
	now := time.Now()
	if t.first.IsZero() {
		t.first = now
	}
	r.failed.Add(1)
	r.cfg.Metrics.Count(ctx, r.topic, r.group, OutcomeFailed)
	fctx, cancel := settleCtx()
	n, ferr := seqr.RecordFailure(fctx, pos, err.Error())
	cancel()
	if ferr != nil {
		delay := r.cfg.Retry.Backoff(failures + 1)
		r.log.Warn("consumer: handler failed and its failure could not be recorded; will retry", "id", ev.ID,
			"subject", ev.Subject, "seq", seq, "err", err, "record_err", ferr, "retry_in", delay)
		r.nack(d, delay)
		return false, false
	}
	if n == 0 {
		// No longer the head: another copy was applied meanwhile, and
		// the next try finds it a duplicate. A store that keeps
		// saying so without the event being applied would spin here:
		// after 3 in a row the event goes back to the broker.
		if t.notHead++; t.notHead < 3 {
			return true, false
		}
		r.log.Warn("consumer: the inbox keeps reporting the event is not its subject's head; returning it to the broker",
			"id", ev.ID, "subject", ev.Subject, "seq", seq)
		r.nack(d, r.cfg.Retry.Backoff(failures+1))
		return false, false
	}
	if reason, giveUp := r.giveUp(err, n); giveUp {
		r.log.Error("consumer: giving up on event; parking its subject", "id", ev.ID, "type", ev.Type,
			"subject", ev.Subject, "seq", seq, "attempt", n, "reason", reason, "err", err)
		pctx, cancel := settleCtx()
		perr := seqr.Park(pctx, pos, reason+": "+err.Error())
		cancel()
		if perr != nil {
			r.log.Warn("consumer: parking the subject failed; will retry", "id", ev.ID, "err", perr)
			r.nack(d, r.cfg.Retry.Backoff(n))
			return false, false
		}
		r.parked.Add(1)
		r.deadLetterParked(d, ev, seq, deadletter.Failure{Reason: reason, Attempts: n, First: t.first, Last: now, Err: err})
		r.releaseSubject(ev.Subject)
		return false, false
	}
	delay := r.retrying(ctx, err, n)
	r.log.Warn("consumer: handler failed; will retry", "id", ev.ID, "type", ev.Type, "subject", ev.Subject,
		"seq", seq, "attempt", n, "max_attempts", r.cfg.Retry.MaxAttempts, "retry_in", delay, "err", err)
	// Retry in place: the events queued behind it in this process
	// wait; copies elsewhere find it is not applied and wait too.
	if !r.sleep(delay) {
		r.nack(d, 0)
		return false, false
	}
	return true, false
}
