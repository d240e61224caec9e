package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
)

// deadLetterTries is how many times one dead-letter publish is tried in
// place (with the retry policy's backoff in between) before the delivery is
// handed back to the broker.
const deadLetterTries = 3

// subscribeOptions are the broker settings of the route's subscription.
func (r *route) subscribeOptions() []broker.SubscribeOption {
	opts := []broker.SubscribeOption{broker.WithMaxInFlight(r.cfg.MaxInFlight), broker.WithAckWait(r.cfg.AckWait)}
	if r.cfg.GroupMaxInFlight > 0 {
		opts = append(opts, broker.WithGroupMaxInFlight(r.cfg.GroupMaxInFlight))
	}
	return opts
}

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

// unreplay gives a replayed event (see Replay) its original id back, so
// that the inbox and the handler see the original event, and reports
// skip=true for a replay meant for another group.
func (r *route) unreplay(d broker.Delivery) (broker.Delivery, bool) {
	if d.DecodeErr() != nil {
		return d, false
	}
	ev := d.Event()
	if _, ok := ev.Extensions[deadletter.ExtReplayOf]; !ok {
		return d, false
	}
	orig, skip := deadletter.Unreplay(ev, r.group)
	if skip {
		r.log.Debug("consumer: replay for another group skipped", "id", ev.ID, "replay_group", ev.Extensions[deadletter.ExtReplayGroup])
		return d, true
	}
	return replayDelivery{Delivery: d, ev: orig}, false
}

// replayDelivery is a delivery of a replay, showing the original event.
type replayDelivery struct {
	broker.Delivery
	ev eventkit.Event
}

func (d replayDelivery) Event() eventkit.Event { return d.ev }

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
