package benchtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/internal/benchkit"
)

// Counter counts a consume contender's events up to n and stops its clock
// at the n-th; Wait waits for it. Add may be called from any goroutine.
type Counter struct {
	n     int64
	clock *benchkit.Clock
	got   atomic.Int64
	done  chan struct{}
}

// NewCounter returns a Counter of n events that stops clock.
func NewCounter(clock *benchkit.Clock, n int) *Counter {
	return &Counter{n: int64(n), clock: clock, done: make(chan struct{})}
}

// Add counts one event; the n-th stops the clock.
func (c *Counter) Add() {
	if c.got.Add(1) == c.n {
		c.clock.Stop()
		close(c.done)
	}
}

// Wait waits until n events are counted, or fails after timeout saying
// how many what consumed.
func (c *Counter) Wait(what string, timeout time.Duration) error {
	select {
	case <-c.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s: consumed %d of %d", what, c.got.Load(), c.n)
	}
}

// Drain is the body of a consume contender on a subscriber that hands
// out messages on a channel (a Watermill subscriber's Subscribe, say): it
// subscribes to topic, receives n messages and acks each, then stops the
// clock and cancels the subscription. It fails, naming what, when 5
// minutes pass first.
func Drain[M interface{ Ack() bool }](ctx context.Context, clock *benchkit.Clock, subscribe func(context.Context, string) (<-chan M, error), topic string, n int, what string) (int, []time.Duration, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := subscribe(sctx, topic)
	if err != nil {
		return 0, nil, err
	}
	stall := time.NewTimer(5 * time.Minute)
	defer stall.Stop()
	for i := range n {
		select {
		case m := <-ch:
			m.Ack()
		case <-stall.C:
			return 0, nil, fmt.Errorf("%s: %d of %d", what, i, n)
		}
	}
	clock.Stop()
	return n, nil, nil
}

// RunConsumer runs c until it has handled n events (Stats().Handled, which
// counts after the ack, polled every millisecond), then stops clock, stops
// c and waits for its Run to return. It fails, naming what, when Run
// returns early or timeout passes first. With BENCH_DEBUG set it prints a
// line whenever c makes no progress for a second.
func RunConsumer(ctx context.Context, clock *benchkit.Clock, c *consumer.Consumer, what string, n int, timeout time.Duration) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(rctx) }()
	deadline := time.Now().Add(timeout)
	var last uint64
	lastT := time.Now()
	for c.Stats().Handled < uint64(n) {
		if h := c.Stats().Handled; h != last {
			last, lastT = h, time.Now()
		} else if stall := time.Since(lastT); stall > time.Second && os.Getenv("BENCH_DEBUG") != "" {
			fmt.Printf("%s: no progress for %v at %d of %d: %+v\n", what, stall, h, n, c.Stats())
			lastT = time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: handled %d of %d (%+v)", what, c.Stats().Handled, n, c.Stats())
		}
		select {
		case err := <-runDone:
			return fmt.Errorf("%s: Run returned early: %v", what, err)
		case <-time.After(time.Millisecond):
		}
	}
	clock.Stop()
	cancel()
	return <-runDone
}

// Runtime is the eventkit-runtime contender of a broker's consume
// benchmark: the consumer runtime (concurrency 8, no inbox, a handler that
// does nothing) on topic as group until it has handled and acked n events
// (at most 5 minutes); the clock runs from consumer.New to the n-th ack.
func Runtime(ctx context.Context, clock *benchkit.Clock, sub broker.Subscriber, topic, group string, n int) (int, []time.Duration, error) {
	clock.Start()
	c, err := consumer.New(sub, consumer.Config{Concurrency: 8, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return 0, nil, err
	}
	if err := c.HandleFunc(topic, group, func(context.Context, eventkit.Event) error { return nil }); err != nil {
		return 0, nil, err
	}
	if err := RunConsumer(ctx, clock, c, "eventkit-runtime", n, 5*time.Minute); err != nil {
		return 0, nil, err
	}
	return n, nil, nil
}
