package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit/broker"
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
	tracer trace.Tracer
	// idleTP is the otel global provider while no SDK is registered (nil
	// if the route traces through another provider): while
	// otel.GetTracerProvider() still returns it, spans would record
	// nothing and call skips them (a context and a span allocated per
	// event); once otel.SetTracerProvider registers one, spans start.
	idleTP   trace.TracerProvider
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

// newRoute returns the route of topic and group with cfg, the consumer's
// Config or the route's own (Consumer.routeConfig).
// idleProvider returns tp if it is OpenTelemetry's global default provider
// (the one otel.GetTracerProvider returns until an SDK is registered with
// otel.SetTracerProvider), nil otherwise.
func idleProvider(tp trace.TracerProvider) trace.TracerProvider {
	// The type first: == on two values of one non-comparable provider
	// type (a struct holding a slice) would panic.
	if fmt.Sprintf("%T", tp) == "*global.tracerProvider" && tp == otel.GetTracerProvider() {
		return tp
	}
	return nil
}

func newRoute(c *Consumer, cfg Config, topic, group string, h Handler) *route {
	ff, _ := lru.New[string, time.Time](4096)
	r := &route{
		c: c, cfg: cfg, topic: topic, group: group, h: h,
		log:         cfg.Logger.With("topic", topic, "group", group),
		tracer:      cfg.TracerProvider.Tracer("github.com/eventkit/eventkit/consumer"),
		idleTP:      idleProvider(cfg.TracerProvider),
		spanName:    "handle " + topic,
		meta1:       Meta{Topic: topic, Group: group, Attempt: 1},
		stopping:    make(chan struct{}),
		sem:         make(chan struct{}, cfg.MaxInFlight),
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
	if r.cfg.Mode.ordered() && r.cfg.Mode.batch() > 1 {
		r.workers.Go(r.readyCollector)
	}
	for range r.cfg.Concurrency {
		if r.cfg.Mode.ordered() && r.cfg.Mode.batch() > 1 {
			r.workers.Go(r.orderedBatchWorker)
		} else if r.cfg.Mode.ordered() {
			r.workers.Go(r.orderedWorker)
		} else if r.cfg.Mode.batch() > 1 {
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
	r.log.Debug("consumer: subscribed", "concurrency", r.cfg.Concurrency, "mode", r.cfg.Mode.String())
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

// subscribeOptions are the broker settings of the route's subscription.
func (r *route) subscribeOptions() []broker.SubscribeOption {
	opts := []broker.SubscribeOption{broker.WithMaxInFlight(r.cfg.MaxInFlight), broker.WithAckWait(r.cfg.AckWait)}
	if r.cfg.GroupMaxInFlight > 0 {
		opts = append(opts, broker.WithGroupMaxInFlight(r.cfg.GroupMaxInFlight))
	}
	return opts
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
