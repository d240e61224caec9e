package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox"
)

// errStopping is returned to the adapter for deliveries that arrive while
// the route shuts down, after they were handed back (broker.Release).
var errStopping = errors.New("consumer: shutting down")

// route is one subscription (topic, group) with its worker pool.
type route struct {
	c     *Consumer
	cfg   Config
	topic string
	group string
	h     Handler
	log   *slog.Logger

	counters
	tracer   trace.Tracer
	spanName string // "handle <topic>"
	meta1    any    // Meta of a first attempt, boxed once (timeoutCtx.meta)

	sub        broker.Subscription
	subCancel  context.CancelFunc
	stopping   chan struct{}
	stopOnce   sync.Once
	hardCtx    context.Context // handler contexts derive from it; cancelled when shutdown runs out of time
	hardCancel context.CancelFunc
	// settleCtx is the context of acks: one per route rather than a timer
	// per event. shutdown cancels it once settlement has had
	// settleTimeout beyond ShutdownTimeout, so Close still waits for
	// every ack but not forever.
	settleCtx    context.Context
	settleCancel context.CancelFunc
	sem          chan struct{} // MaxInFlight slots
	workers      sync.WaitGroup

	work chan broker.Delivery // unordered: hand-off to a free worker

	mu     sync.Mutex                   // ordered:
	queues map[string][]broker.Delivery // subject -> backlog; present while a worker owns the subject
	ready  chan orderedJob              // a subject's first delivery, to a free worker
	held   holdState                    // strict: early events held (stricthold.go)
	// ordered batch mode (batch.go): ready subjects no worker took yet
	pending     []orderedJob
	pendingWake chan struct{}

	firstFail *lru.Cache[string, time.Time] // event id -> first failure seen (unordered retries)
}

type orderedJob struct {
	key string
	d   broker.Delivery
}

func newRoute(c *Consumer, topic, group string, h Handler) *route {
	ff, _ := lru.New[string, time.Time](4096)
	r := &route{
		c: c, cfg: c.cfg, topic: topic, group: group, h: h,
		log:         c.cfg.Logger.With("topic", topic, "group", group),
		tracer:      c.cfg.TracerProvider.Tracer("github.com/eventkit/eventkit/consumer"),
		spanName:    "handle " + topic,
		meta1:       Meta{Topic: topic, Group: group, Attempt: 1},
		stopping:    make(chan struct{}),
		sem:         make(chan struct{}, c.cfg.MaxInFlight),
		work:        make(chan broker.Delivery),
		queues:      map[string][]broker.Delivery{},
		ready:       make(chan orderedJob),
		pendingWake: make(chan struct{}, 1),
		firstFail:   ff,
	}
	r.hardCtx, r.hardCancel = context.WithCancel(context.Background())
	r.settleCtx, r.settleCancel = context.WithCancel(context.Background())
	r.initHold()
	return r
}

func (r *route) start() error {
	if r.cfg.OrderedBySubject && r.cfg.InboxBatch > 1 {
		r.workers.Go(r.readyCollector)
	}
	for range r.cfg.Concurrency {
		if r.cfg.OrderedBySubject && r.cfg.InboxBatch > 1 {
			r.workers.Go(r.orderedBatchWorker)
		} else if r.cfg.OrderedBySubject {
			r.workers.Go(r.orderedWorker)
		} else if r.cfg.InboxBatch > 1 {
			r.workers.Go(r.batchWorker)
		} else {
			r.workers.Go(r.worker)
		}
	}
	subCtx, cancel := context.WithCancel(context.Background())
	err := r.provisionDeadLetters()
	var sub broker.Subscription
	if err == nil {
		sub, err = r.c.sub.Subscribe(subCtx, r.topic, r.group, r.dispatch, r.subscribeOptions()...)
	}
	if err != nil {
		cancel()
		r.stop()
		r.workers.Wait()
		r.hardCancel()
		r.settleCancel()
		return fmt.Errorf("consumer: subscribe %s/%s: %w", r.topic, r.group, err)
	}
	r.sub, r.subCancel = sub, cancel
	r.log.Debug("consumer: subscribed", "concurrency", r.cfg.Concurrency, "ordered", r.cfg.OrderedBySubject)
	return nil
}

func (r *route) stop() { r.stopOnce.Do(func() { close(r.stopping) }) }

func (r *route) isStopping() bool {
	select {
	case <-r.stopping:
		return true
	default:
		return false
	}
}

// shutdown stops the route: no new work, queued work nacked, work in
// progress finished (or cancelled after ShutdownTimeout), subscription
// closed.
func (r *route) shutdown() {
	r.stop()
	timer := time.AfterFunc(r.cfg.ShutdownTimeout, r.hardCancel)
	settleTimer := time.AfterFunc(r.cfg.ShutdownTimeout+settleTimeout, r.settleCancel)
	r.workers.Wait()
	timer.Stop()
	settleTimer.Stop()
	r.dropHeld()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if r.sub != nil {
		if err := r.sub.Close(ctx); err != nil {
			r.log.Warn("consumer: closing subscription", "err", err)
		}
		r.subCancel()
	}
	r.hardCancel()
	r.settleCancel()
}

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
	if !r.cfg.OrderedBySubject {
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
		case key := <-r.held.wake: // nil unless StrictOrder
			if d := r.takeWoken(key); d != nil {
				r.drain(key, d, true)
			}
		case <-r.stopping:
			return
		}
	}
}

// drain runs d, then the subject's backlog, until nothing of key may run;
// held says d was a held early event (StrictOrder).
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
// event whose turn came (StrictOrder), else the first of the backlog.
func (r *route) nextLocked(key string, wasHeld bool) (d broker.Delivery, held bool) {
	if r.cfg.StrictOrder {
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
		if r.cfg.OrderedBySubject && r.sleep(r.cfg.Retry.Initial) {
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
		} else if !r.cfg.OrderedBySubject {
			r.firstFail.Add(ev.ID, now)
		}
	}
	permanent := eventkit.IsPermanent(err)
	if permanent || attempt >= r.cfg.Retry.MaxAttempts {
		reason := deadletter.ReasonMaxAttempts
		switch {
		case errors.Is(err, ErrNoRoute):
			reason = deadletter.ReasonNoRoute
		case permanent:
			reason = deadletter.ReasonPermanent
		}
		r.log.Error("consumer: giving up on event", "id", ev.ID, "type", ev.Type, "subject", ev.Subject,
			"attempt", attempt, "reason", reason, "err", err)
		r.deadLetter(d, ev, deadletter.Failure{Reason: reason, Attempts: attempt, First: *first, Last: now, Err: err})
		return false, 0
	}
	delay := r.cfg.Retry.Backoff(attempt)
	var ra *RetryAfterError
	if errors.As(err, &ra) && ra.Delay >= 0 {
		delay = ra.Delay
	}
	r.retried.Add(1)
	r.cfg.Metrics.Count(ctx, r.topic, r.group, OutcomeRetried)
	r.log.Warn("consumer: handler failed; will retry", "id", ev.ID, "type", ev.Type, "subject", ev.Subject,
		"attempt", attempt, "max_attempts", r.cfg.Retry.MaxAttempts, "retry_in", delay, "err", err)
	if !r.cfg.OrderedBySubject {
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

// invoke runs one attempt: trace span, timeout, inbox, panic recovery. The
// handler's context also ends with d's (broker.DeliveryContext).
func (r *route) invoke(d broker.Delivery, ev eventkit.Event, attempt int) error {
	base := r.hardCtx
	if dctx := broker.DeliveryContext(d); dctx != nil {
		ctx, cancel := context.WithCancel(base)
		defer cancel()
		defer context.AfterFunc(dctx, cancel)()
		base = ctx
	}
	if r.cfg.Inbox == nil {
		return r.call(base, ev, attempt, nil)
	}
	return r.call(base, ev, attempt, func(ctx context.Context, call func(context.Context) error) error {
		return r.cfg.Inbox.Process(ctx, inbox.Key{Consumer: r.group, EventID: ev.ID, EventType: ev.Type}, call)
	})
}

// call runs one attempt on a context derived from base: timeout, trace
// span, metadata, latency, panic recovery. run wraps the handler call (in
// the inbox, or not); nil calls the handler directly, with no closure to
// allocate.
func (r *route) call(base context.Context, ev eventkit.Event, attempt int, run func(ctx context.Context, call func(context.Context) error) error) (err error) {
	meta := r.meta1
	if attempt != 1 {
		meta = Meta{Topic: r.topic, Group: r.group, Attempt: attempt}
	}
	start := time.Now()
	tctx := withTimeout(base, start, r.cfg.HandlerTimeout, meta)
	defer tctx.end()
	var ctx context.Context = tctx
	if ev.Extensions["traceparent"] != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(ev.Extensions))
	}
	ctx, span := r.tracer.Start(ctx, r.spanName, consumerSpan...)
	defer span.End()
	if span.IsRecording() { // no attributes built for a tracer that drops them
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
		err = run(ctx, func(ctx context.Context) error { return r.safeCall(ctx, &ev) })
	}
	r.handling.Add(-1)
	failed := err != nil && !errors.Is(err, inbox.ErrDuplicate)
	r.cfg.Metrics.HandlerLatency(ctx, r.topic, r.group, time.Since(start), failed)
	switch {
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

// Meta describes the delivery a handler is running for.
type Meta struct {
	Topic   string
	Group   string
	Attempt int // from 1
}

type metaKey struct{}

// MetaFrom returns the delivery metadata of a handler's context.
func MetaFrom(ctx context.Context) (Meta, bool) {
	m, ok := ctx.Value(metaKey{}).(Meta)
	return m, ok
}
