package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
)

// deadLetterTries is how many times one dead-letter publish is tried in
// place (with the retry policy's backoff in between) before the delivery is
// handed back to the broker.
const deadLetterTries = 3

// provisionDeadLetters creates the route's dead-letter topic with
// Config.DeadLetterGroup on the dead-letter publisher, when it is a
// broker.Provisioner, so that a dead letter is stored (RabbitMQ: routed to
// a queue) even before the collector first subscribed.
func (r *route) provisionDeadLetters() error {
	topic := r.cfg.DeadLetterTopic(r.topic)
	if topic == "" || r.cfg.DeadLetterPublisher == nil {
		return nil
	}
	p, ok := r.cfg.DeadLetterPublisher.(broker.Provisioner)
	if !ok {
		r.log.Debug("consumer: the dead-letter publisher cannot provision topics", "dlq", topic, "publisher", fmt.Sprintf("%T", r.cfg.DeadLetterPublisher))
		return nil
	}
	ctx, cancel := settleCtx()
	defer cancel()
	if err := p.Provision(ctx, topic, r.cfg.DeadLetterGroup); err != nil {
		return fmt.Errorf("consumer: provision dead-letter topic %s for group %s: %w", topic, r.cfg.DeadLetterGroup, err)
	}
	return nil
}

// deadLetter publishes ev's dead letter and then acks d. If the publish
// fails, d is nacked for a later attempt (ordered: retried in place until
// it works or the route stops, so the subject does not move on).
func (r *route) deadLetter(d broker.Delivery, ev eventkit.Event, f deadletter.Failure) {
	r.firstFail.Remove(ev.ID)
	r.publishDeadLetter(d, deadletter.Of(ev, r.topic, r.group, f), f)
}

func (r *route) deadLetterUndecodable(d broker.Delivery, err error) {
	var raw []byte
	var headers map[string]string
	var de *eventkit.DecodeError
	if errors.As(err, &de) {
		raw, headers = de.Raw, de.Headers
	}
	now := time.Now()
	r.failed.Add(1)
	r.cfg.Metrics.Count(context.Background(), r.topic, r.group, OutcomeFailed)
	r.log.Error("consumer: undecodable message; dead-lettering it", "attempt", d.Attempt(), "bytes", len(raw), "err", err)
	f := deadletter.Failure{Reason: deadletter.ReasonUndecodable, Attempts: max(d.Attempt(), 1), First: now, Last: now, Err: err}
	r.publishDeadLetter(d, deadletter.Undecodable(raw, headers, r.topic, r.group, f), f)
}

// publishDeadLetter publishes dl and only then acks d. The policy when the
// publish fails (see the package doc): every failure is logged as an error
// and counted (OutcomeDeadLetterFailed); the publish is tried up to
// deadLetterTries times in place with backoff (at once given up when the
// broker rejects the dead letter itself, e.g. over its size limit), then d
// is nacked with the retry policy's maximum delay, so the worker (and in
// ordered mode the subject) is released and the event comes back later,
// to be handled once more and dead-lettered again if it still fails. d is
// never acked nor termed without its dead letter accepted by the broker.
func (r *route) publishDeadLetter(d broker.Delivery, dl eventkit.Event, f deadletter.Failure) {
	topic := r.cfg.DeadLetterTopic(r.topic)
	if topic == "" || r.cfg.DeadLetterPublisher == nil {
		r.log.Error("consumer: no dead-letter topic; dropping the event", "id", d.Event().ID, "reason", f.Reason)
		r.term(d)
		return
	}
	for try := 1; ; try++ {
		ctx, cancel := settleCtx()
		err := r.cfg.DeadLetterPublisher.Publish(ctx, topic, dl)
		cancel()
		if err == nil {
			r.ack(d)
			r.deadLettered.Add(1)
			r.cfg.Metrics.Count(context.Background(), r.topic, r.group, OutcomeDeadLettered)
			return
		}
		r.deadLetterFailed.Add(1)
		r.cfg.Metrics.Count(context.Background(), r.topic, r.group, OutcomeDeadLetterFailed)
		hopeless := errors.Is(err, eventkit.ErrInvalidEvent)
		if hopeless || try >= deadLetterTries {
			delay := r.cfg.Retry.Max
			r.log.Error("consumer: cannot publish the dead letter; the event is kept unacked and comes back later",
				"id", d.Event().ID, "dead_letter_id", dl.ID, "dlq", topic, "tries", try, "redeliver_in", delay, "err", err)
			r.nack(d, delay)
			return
		}
		delay := r.cfg.Retry.Backoff(try)
		r.log.Error("consumer: dead-letter publish failed; trying again", "id", d.Event().ID, "dead_letter_id", dl.ID,
			"dlq", topic, "try", try, "retry_in", delay, "err", err)
		if !r.sleep(delay) {
			r.nack(d, 0)
			return
		}
	}
}
