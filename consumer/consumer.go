package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/inbox"
)

// Consumer runs handlers for subscriptions of one broker.Subscriber. Create
// it with New, register handlers with Handle, then call Run.
type Consumer struct {
	sub    broker.Subscriber
	base   Config // as given to New, Mode normalised: each route with options starts from it
	cfg    Config // base with defaults: the routes without options, and consumer-wide settings
	mu     sync.Mutex
	routes []*route
	ran    bool
	ready  chan struct{}
}

// New returns a consumer of sub. It fails only on an invalid Config.
func New(sub broker.Subscriber, cfg Config) (*Consumer, error) {
	base, err := cfg.normalizeMode()
	if err != nil {
		return nil, err
	}
	if cfg, err = base.withDefaults(sub); err != nil {
		return nil, err
	}
	return &Consumer{sub: sub, base: base, cfg: cfg, ready: make(chan struct{})}, nil
}

// Ready is closed once Run has subscribed every handler (and provisioned
// their dead-letter topics): from then on events published to the topics
// reach the handlers even on brokers without Capabilities.Replay. It stays
// open if Run fails before that (Run then returns the error). Use it in
// tests and readiness checks instead of sleeping.
func (c *Consumer) Ready() <-chan struct{} { return c.ready }

// Handle subscribes h to topic as (a member of) group when Run starts. The
// group is also the consumer name in inbox keys and dead letters. Handle
// must be called before Run; it returns an error for an invalid topic or
// group name, a duplicate (topic, group), an invalid option (see
// RouteOption), or after Run.
//
// The route runs with the consumer's Config unless opts give it its own
// Mode, concurrency, in-flight bound, handler timeout, retry policy or
// dead-letter topic:
//
//	_ = c.Handle("orders", "billing", billing, consumer.WithMode(consumer.Strict()))
//	_ = c.Handle("clicks", "stats", stats, consumer.WithConcurrency(16), consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 2}))
func (c *Consumer) Handle(topic, group string, h Handler, opts ...RouteOption) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return err
	}
	if h == nil {
		return errors.New("consumer: nil handler")
	}
	cfg, err := c.routeConfig(topic, opts)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ran {
		return ErrAlreadyRunning
	}
	for _, r := range c.routes {
		if r.topic == topic && r.group == group {
			return fmt.Errorf("consumer: %s/%s already has a handler", topic, group)
		}
	}
	c.routes = append(c.routes, newRoute(c, cfg, topic, group, h))
	return nil
}

// HandleFunc is Handle for a function.
func (c *Consumer) HandleFunc(topic, group string, fn func(ctx context.Context, ev eventkit.Event) error, opts ...RouteOption) error {
	return c.Handle(topic, group, HandlerFunc(fn), opts...)
}

// Run subscribes every handler and consumes until ctx ends, then shuts down
// gracefully: it stops fetching, hands back deliveries not yet started
// (broker.Release: on Kafka they stay uncommitted and are read again, in
// order, after a restart; elsewhere they are nacked), lets handler calls in
// progress finish for up to Config.ShutdownTimeout (then cancels their
// contexts and hands them back too), settles everything, closes the
// subscriptions and returns. It returns nil after ctx ended, or the error
// that stopped a subscription (after shutting the others down), or a
// Subscribe error. Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.ran {
		c.mu.Unlock()
		return ErrAlreadyRunning
	}
	c.ran = true
	routes := c.routes
	c.mu.Unlock()
	if len(routes) == 0 {
		return errors.New("consumer: no handlers")
	}

	var started []*route
	stopAll := func() {
		var wg sync.WaitGroup
		for _, r := range started {
			wg.Go(r.shutdown)
		}
		wg.Wait()
	}
	for _, r := range routes {
		if err := r.start(); err != nil {
			stopAll()
			return err
		}
		started = append(started, r)
	}
	close(c.ready)

	// Inbox retention, owned by Run.
	var janitor sync.WaitGroup
	jctx, stopJanitor := context.WithCancel(context.Background())
	defer func() { stopJanitor(); janitor.Wait() }()
	if p, ok := c.cfg.Inbox.(inbox.Pruner); ok && c.cfg.InboxRetention > 0 {
		janitor.Go(func() {
			_ = inbox.RunRetention(jctx, p, c.cfg.InboxRetention, c.cfg.InboxPruneInterval, func(err error) {
				c.cfg.Logger.Warn("consumer: pruning the inbox failed", "err", err)
			})
		})
	}

	// Wait for ctx, or for a subscription to stop on its own.
	failed := make(chan *route, len(started))
	var watchers sync.WaitGroup
	stopWatch := make(chan struct{})
	for _, r := range started {
		watchers.Go(func() {
			select {
			case <-r.sub.Done():
				failed <- r
			case <-stopWatch:
			}
		})
	}
	var err error
	select {
	case <-ctx.Done():
	case r := <-failed:
		err = r.sub.Err()
		if err == nil {
			err = fmt.Errorf("consumer: subscription %s/%s stopped", r.topic, r.group)
		} else {
			err = fmt.Errorf("consumer: subscription %s/%s: %w", r.topic, r.group, err)
		}
	}
	close(stopWatch)
	watchers.Wait()
	stopAll()
	return err
}

// Stats are counters of one consumer, across its subscriptions.
type Stats struct {
	// InFlight is the number of deliveries received and not yet settled.
	InFlight int
	// Handling is the number of handler calls in progress.
	Handling     int
	Handled      uint64
	Failed       uint64
	Retried      uint64
	DeadLettered uint64
	Duplicates   uint64
	// Early counts deliveries that arrived before an earlier event of
	// their subject was applied (Strict mode). Held is how many of them
	// wait in this process now (at most MaxInFlight; they count in
	// InFlight), EarlyReturned how many were given back to the broker for
	// a later delivery (the window was full of held events, their subject
	// did not move, or it is parked). Parked counts subjects parked behind
	// a dead-lettered event (Strict mode).
	Early         uint64
	Held          int
	EarlyReturned uint64
	Parked        uint64
	// DeadLetterFailed counts failed dead-letter publishes (every try).
	DeadLetterFailed uint64
}

// Stats returns the current counters.
func (c *Consumer) Stats() Stats {
	c.mu.Lock()
	routes := c.routes
	c.mu.Unlock()
	var s Stats
	for _, r := range routes {
		s.InFlight += int(r.inflight.Load())
		s.Handling += int(r.handling.Load())
		s.Handled += r.handled.Load()
		s.Failed += r.failed.Load()
		s.Retried += r.retried.Load()
		s.DeadLettered += r.deadLettered.Load()
		s.Duplicates += r.duplicates.Load()
		s.Early += r.early.Load()
		s.Held += int(r.heldN.Load())
		s.EarlyReturned += r.earlyReturned.Load()
		s.Parked += r.parked.Load()
		s.DeadLetterFailed += r.deadLetterFailed.Load()
	}
	return s
}

type counters struct {
	inflight, handling, heldN                          atomic.Int64
	handled, failed, retried, deadLettered, duplicates atomic.Uint64
	early, earlyReturned, parked                       atomic.Uint64
	deadLetterFailed                                   atomic.Uint64
}

// settleTimeout bounds one Ack/Nack/Term or dead-letter publish.
const settleTimeout = 10 * time.Second
