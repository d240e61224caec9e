package consumer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/consumer"
)

// counting wraps a client so that the subscriptions it makes count their
// deliveries.
type counting struct {
	broker.Broker
	deliveries *atomic.Int64
}

func (c counting) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	return c.Broker.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		c.deliveries.Add(1)
		return h(ctx, d)
	}, opts...)
}

// backlogCase is an order in which a deep backlog is published, and the
// consumers that drain it.
type backlogCase struct {
	name            string
	subjects, per   int
	consumers       int
	order           func(subjects, per int) []eventkit.Event
	maxRedeliveries func(events int) int
}

// swappedRounds publishes every subject's 2nd event, then every 1st, every
// 4th, every 3rd, and so on: every other delivery is early, and its
// predecessor comes `subjects` deliveries later.
func swappedRounds(subjects, per int) []eventkit.Event {
	var evs []eventkit.Event
	for i := 1; i <= per; i += 2 {
		for _, n := range []int{i + 1, i} {
			if n > per {
				continue
			}
			for s := range subjects {
				evs = append(evs, seqEvent(s, n))
			}
		}
	}
	return evs
}

var backlogCases = []backlogCase{
	// One consumer, a window of 8, each early event's predecessor 20
	// deliveries later: the window fills with early events before any
	// predecessor comes. Held events must make room (the window full of
	// held events gives back the one farthest from its subject's next
	// number), or nothing more arrives and the run stalls for good.
	// Events that keep coming back early come back ever later (the delay
	// doubles per delivery), so each is redelivered a few times at most.
	{name: "window-clogged", subjects: 20, per: 10, consumers: 1,
		maxRedeliveries: func(n int) int { return 3 * n }},
	// Three competing consumers, each with a window of 8, predecessors 6
	// deliveries later (in this consumer or another): early events wait
	// in process for their predecessor instead of going round the broker
	// once each (half of the events, without the hold).
	{name: "competing", subjects: 6, per: 50, consumers: 3,
		maxRedeliveries: func(n int) int { return n / 20 }},
}

// StrictOrder with a deep backlog (everything published before the
// consumers start) and a small window (MaxInFlight 8): every event is
// applied once, in its subject's order, and the broker redelivers a
// bounded number of events (early events are held in process, not bounced
// through the broker one delivery each).
func TestStrictOrderDeepBacklogSmallWindow(t *testing.T) {
	t.Parallel()
	for _, sb := range []strictBroker{strictBrokers[0], strictBrokers[2]} { // memory, rabbitmq
		for _, bc := range backlogCases {
			t.Run(sb.name+"/"+bc.name, func(t *testing.T) {
				t.Parallel()
				const group = "g"
				conn, topic := sb.setup(t, group)
				sink := newOrderSink(t, strictDBs[0], bc.subjects)
				evs := swappedRounds(bc.subjects, bc.per)
				pub := conn()
				for i := 0; i < len(evs); i += 100 {
					publish(t, pub, topic, evs[i:min(i+100, len(evs))]...)
				}
				var deliveries atomic.Int64
				var rs []*running
				for range bc.consumers {
					c := newConsumer(t, counting{conn(), &deliveries}, consumer.Config{
						StrictOrder: true, Concurrency: 4, MaxInFlight: 8, Inbox: sink.in, Retry: fastRetry(5),
					})
					if err := c.Handle(topic, group, sink.handler); err != nil {
						t.Fatal(err)
					}
					rs = append(rs, start(t, c))
				}
				eventually(t, 3*time.Minute, "every event applied", func() bool { return sink.total() >= len(evs) })
				eventually(t, time.Minute, "deliveries settled", func() bool {
					n := 0
					for _, r := range rs {
						n += r.c.Stats().InFlight
					}
					return n == 0
				})
				sink.check(bc.per)
				if v := sink.violations.Load(); v != 0 {
					t.Errorf("%d order violations", v)
				}
				var st consumer.Stats
				for _, r := range rs {
					s := r.c.Stats()
					st.Early += s.Early
					st.EarlyReturned += s.EarlyReturned
					st.Handled += s.Handled
					st.Duplicates += s.Duplicates
				}
				re := int(deliveries.Load()) - len(evs)
				t.Logf("%s/%s: %d events, %d deliveries (%d redeliveries), early %d, given back %d, handled %d, duplicates %d",
					sb.name, bc.name, len(evs), deliveries.Load(), re, st.Early, st.EarlyReturned, st.Handled, st.Duplicates)
				if limit := bc.maxRedeliveries(len(evs)); re > limit {
					t.Errorf("%d redeliveries for %d events, want at most %d", re, len(evs), limit)
				}
			})
		}
	}
}

// nackDelays wraps a client so that its deliveries record the longest
// delay a Nack asked for.
type nackDelays struct {
	broker.Broker
	deliveries, nacks *atomic.Int64
	longest           *atomic.Int64 // ns
}

func (c nackDelays) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	return c.Broker.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		c.deliveries.Add(1)
		return h(ctx, nackRecorded{d, c})
	}, opts...)
}

type nackRecorded struct {
	broker.Delivery
	c nackDelays
}

func (d nackRecorded) Nack(ctx context.Context, delay time.Duration) error {
	d.c.nacks.Add(1)
	for {
		old := d.c.longest.Load()
		if int64(delay) <= old || d.c.longest.CompareAndSwap(old, int64(delay)) {
			break
		}
	}
	return d.Delivery.Nack(ctx, delay)
}

// Context keeps the delivery's context (a lost channel) visible.
func (d nackRecorded) Context() context.Context { return broker.DeliveryContext(d.Delivery) }

// StrictOrder on RabbitMQ, where a delayed Nack re-publishes the event
// behind everything queued: a held event given back (the window is full of
// early events) comes back after Retry.Initial, not after a delay that
// doubles with each of its deliveries up to 5-10 s. With the doubling, a
// fault run whose subjects' heads had been given back idled at 8 events/s
// while they sat in the retry queues.
func TestStrictOrderGiveBackToTailNoGrowingDelay(t *testing.T) {
	t.Parallel()
	const group, subjects, per = "g", 20, 10
	retry := consumer.RetryPolicy{MaxAttempts: 1000, Initial: 50 * time.Millisecond, Max: time.Second}
	conn, topic := strictBrokers[2].setup(t, group) // rabbitmq
	sink := newOrderSink(t, strictDBs[0], subjects)
	evs := swappedRounds(subjects, per)
	pub := conn()
	for i := 0; i < len(evs); i += 100 {
		publish(t, pub, topic, evs[i:min(i+100, len(evs))]...)
	}
	var deliveries, nacks, longest atomic.Int64
	c := newConsumer(t, nackDelays{conn(), &deliveries, &nacks, &longest}, consumer.Config{
		StrictOrder: true, Concurrency: 4, MaxInFlight: 8, Inbox: sink.in, Retry: retry,
	})
	if err := c.Handle(topic, group, sink.handler); err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	eventually(t, 3*time.Minute, "every event applied", func() bool { return sink.total() >= len(evs) })
	eventually(t, time.Minute, "deliveries settled", func() bool { return r.c.Stats().InFlight == 0 })
	sink.check(per)
	if v := sink.violations.Load(); v != 0 {
		t.Errorf("%d order violations", v)
	}
	st := r.c.Stats()
	t.Logf("%d events, %d deliveries, %d nacks, longest nack delay %v, early %d, given back %d",
		len(evs), deliveries.Load(), nacks.Load(), time.Duration(longest.Load()), st.Early, st.EarlyReturned)
	if st.EarlyReturned == 0 {
		t.Fatal("no held event was given back: the scenario does not test the give-back")
	}
	// Retry.Initial with its jitter (RetryPolicy default 20%).
	if l, limit := time.Duration(longest.Load()), retry.Initial*3/2; l > limit {
		t.Errorf("a held event was given back with a delay of %v, want at most %v", l, limit)
	}
}
