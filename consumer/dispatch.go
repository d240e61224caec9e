package consumer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox"
)

// dispatch is the broker.Handler: it takes an in-flight slot (waiting while
// MaxInFlight deliveries are unsettled) and hands the delivery to a worker.
func (r *route) dispatch(ctx context.Context, d broker.Delivery) error {
	d, skip := r.unreplay(d)
	if skip {
		r.ack(d)
		return nil
	}
	select {
	case r.sem <- struct{}{}:
	case <-r.stopping:
		r.handBack(d)
		return errStopping
	case <-ctx.Done():
		return ctx.Err()
	}
	r.inflight.Add(1)
	if !r.cfg.Mode.ordered() {
		select {
		case r.work <- d:
			return nil
		case <-r.stopping:
			r.handBack(d)
			r.release()
			return errStopping
		}
	}
	key := d.Event().Subject
	r.mu.Lock()
	if q, busy := r.queues[key]; busy {
		r.queues[key] = append(q, d)
		r.mu.Unlock()
		return nil
	}
	r.queues[key] = nil
	r.mu.Unlock()
	select {
	case r.ready <- orderedJob{key: key, d: d}:
		return nil
	case <-r.stopping:
		r.mu.Lock()
		delete(r.queues, key) // only dispatch appends, so the backlog is empty
		r.mu.Unlock()
		r.handBack(d)
		r.release()
		return errStopping
	}
}

func (r *route) release() {
	r.inflight.Add(-1)
	<-r.sem
}

func (r *route) worker() {
	for {
		select {
		case d := <-r.work:
			r.process(d)
		case <-r.stopping:
			return
		}
	}
}

// orderedWorker owns one subject at a time and drains its backlog in order.
func (r *route) orderedWorker() {
	for {
		select {
		case j := <-r.ready:
			r.drain(j.key, j.d, false)
		case key := <-r.held.wake: // nil unless Strict mode
			if d := r.takeWoken(key); d != nil {
				r.drain(key, d, true)
			}
		case <-r.stopping:
			return
		}
	}
}

// drain runs d, then the subject's backlog, until nothing of key may run;
// held says d was a held early event (Strict mode).
func (r *route) drain(key string, d broker.Delivery, held bool) {
	for {
		r.runOrdered(d, held)
		r.mu.Lock()
		if d, held = r.nextLocked(key, held); d == nil {
			delete(r.queues, key)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}

// nextLocked is the next delivery of subject key to run: a held early
// event whose turn came (Strict mode), else the first of the backlog.
func (r *route) nextLocked(key string, wasHeld bool) (d broker.Delivery, held bool) {
	if r.cfg.Mode.strict() {
		if d := r.heldNextLocked(key, wasHeld); d != nil {
			return d, true
		}
	}
	q := r.queues[key]
	if len(q) == 0 {
		return nil, false
	}
	d = q[0]
	q[0] = nil
	r.queues[key] = q[1:]
	return d, false
}

// process handles one delivery to the end: it is settled when process
// returns.
func (r *route) process(d broker.Delivery) {
	defer r.release()
	if r.isStopping() || lost(d) {
		r.handBack(d)
		return
	}
	if err := d.DecodeErr(); err != nil {
		r.deadLetterUndecodable(d, err)
		return
	}
	ev := d.Event()
	attempt := max(d.Attempt(), 1)
	var first time.Time
	for {
		again, next := r.outcome(d, ev, attempt, &first, r.invoke(d, ev, attempt))
		if !again {
			return
		}
		attempt = next
	}
}

// invoke runs one attempt: trace span, timeout, inbox, panic recovery. The
// handler's context also ends with d's (broker.DeliveryContext).
func (r *route) invoke(d broker.Delivery, ev eventkit.Event, attempt int) error {
	dctx := broker.DeliveryContext(d)
	if r.cfg.Inbox == nil {
		return r.call(r.hardCtx, dctx, ev, attempt, nil)
	}
	return r.call(r.hardCtx, dctx, ev, attempt, func(ctx context.Context, call func(context.Context) error) error {
		return r.cfg.Inbox.Process(ctx, inbox.Key{Consumer: r.group, EventID: ev.ID, EventType: ev.Type}, call)
	})
}

// call runs one attempt on a context derived from base that also ends with
// dctx (the delivery's context, if not nil): timeout, trace span,
// metadata, latency, panic recovery. run wraps the handler
// call (in the inbox, or not); nil calls the handler directly, with no
// closure to allocate.
func (r *route) call(base, dctx context.Context, ev eventkit.Event, attempt int, run func(ctx context.Context, call func(context.Context) error) error) (err error) {
	meta := r.meta1
	if attempt != 1 {
		meta = Meta{Topic: r.topic, Group: r.group, Attempt: attempt}
	}
	start := time.Now()
	tctx := withTimeout(base, dctx, start, r.cfg.HandlerTimeout, meta)
	defer tctx.end()
	var ctx context.Context = tctx
	if ev.Extensions["traceparent"] != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(ev.Extensions))
	}
	var span trace.Span
	if r.idleTP == nil || otel.GetTracerProvider() != r.idleTP {
		ctx, span = r.tracer.Start(ctx, r.spanName, consumerSpan...)
		defer span.End()
	}
	if span != nil && span.IsRecording() { // no attributes built for a tracer that drops them
		span.SetAttributes(
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", r.topic),
			attribute.String("messaging.consumer.group.name", r.group),
			attribute.String("messaging.message.id", ev.ID),
			attribute.Int("messaging.delivery.attempt", attempt),
			attribute.String("cloudevents.event_type", ev.Type),
			attribute.String("cloudevents.event_subject", ev.Subject),
		)
	}

	r.handling.Add(1)
	recordLag(ctx, r.cfg.Metrics, r.topic, r.group, ev, start)
	if run == nil {
		err = r.safeCall(ctx, &ev)
	} else {
		// The closure gets its own copy: capturing ev itself would move
		// it to the heap on every call, with or without an inbox.
		evp := new(eventkit.Event)
		*evp = ev
		err = run(ctx, func(ctx context.Context) error { return r.safeCall(ctx, evp) })
	}
	r.handling.Add(-1)
	failed := err != nil && !errors.Is(err, inbox.ErrDuplicate)
	r.cfg.Metrics.HandlerLatency(ctx, r.topic, r.group, time.Since(start), failed)
	switch {
	case span == nil:
	case errors.Is(err, inbox.ErrDuplicate):
		span.SetAttributes(attribute.Bool("eventkit.duplicate", true))
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// consumerSpan are the start options of every handler span (a shared slice:
// no allocation per span).
var consumerSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}

// safeCall runs the handler, turning a panic into a *PanicError.
func (r *route) safeCall(ctx context.Context, ev *eventkit.Event) (err error) {
	defer func() {
		if v := recover(); v != nil {
			stack := debug.Stack()
			r.log.Error("consumer: handler panicked", "id", ev.ID, "type", ev.Type, "panic", fmt.Sprint(v), "stack", string(stack))
			err = &PanicError{Value: v, Stack: stack}
		}
	}()
	return r.h.HandleEvent(ctx, *ev)
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
