package brokertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

// capabilities checks every claim of Capabilities that can be checked
// without restarting the server (Durable is checked by RunDurable, and a
// broker claiming it must name the test that runs it): each case
// would fail against a broker claiming what it does not do. None waits for
// a quiet window where an event count can be awaited: a marker event
// published behind the events under test (same subject, so behind them on
// every broker) says when everything that could arrive has arrived.
func (s *suite) capabilities(t *testing.T) {
	caps := s.broker(t).Capabilities()
	t.Run("NativeDedupe", func(t *testing.T) {
		t.Parallel()
		if !caps.NativeDedupe {
			t.Skip("not claimed")
		}
		if !caps.Ordered {
			t.Skip("needs Ordered for the marker")
		}
		b := s.broker(t)
		ctx, topic := s.ctx(t), s.cfg.Topic(t)
		evs := mkEvents(2, func(int) string { return "k" })
		dup, marker := evs[0], evs[1]
		s.publish(t, ctx, b, topic, dup)
		s.publish(t, ctx, b, topic, dup) // a second Publish of the same id
		s.publish(t, ctx, b, topic, marker)
		c := newCollector(nil)
		s.subscribe(t, ctx, b, topic, "g", c.handle)
		n := 0
		for {
			r := s.wait(t, c, 1)[0]
			if r.ev.ID == marker.ID {
				break
			}
			n++
		}
		if n != 1 {
			t.Fatalf("an event published twice with one id was delivered %d times; NativeDedupe claims once", n)
		}
	})
	t.Run("Replay", func(t *testing.T) {
		t.Parallel()
		if !caps.Replay {
			t.Skip("not claimed")
		}
		b := s.broker(t)
		ctx, topic := s.ctx(t), s.cfg.Topic(t)
		// The topic exists (an old group reads it) before the events are
		// published; the new group is made after.
		old := newCollector(nil)
		s.subscribe(t, ctx, b, topic, "old", old.handle)
		evs := mkEvents(5, nil)
		s.publish(t, ctx, b, topic, evs...)
		s.wait(t, old, len(evs))
		c := newCollector(nil)
		s.subscribe(t, ctx, b, topic, "new", c.handle)
		s.expectAll(t, c, evs, "a group made after they were published did not receive them; Replay claims it does")
	})
	t.Run("NativeDelay", func(t *testing.T) {
		t.Parallel()
		if !caps.NativeDelay {
			t.Skip("not claimed")
		}
		// The broker keeps the delay: the subscriber that nacked closes and
		// its connection goes away at once, and the event still comes back
		// only after the delay, to a subscriber on another connection.
		ctx, topic := s.ctx(t), s.cfg.Topic(t)
		b1, b2 := s.broker(t), s.broker(t)
		const delay = 3 * time.Second
		var nackedAt atomic.Int64
		nacked := make(chan struct{})
		sub1 := s.subscribe(t, ctx, b1, topic, "g", func(ctx context.Context, d broker.Delivery) error {
			if nackedAt.Load() != 0 {
				return nil // not settled: handed back at Close
			}
			nackedAt.Store(time.Now().UnixNano())
			err := d.Nack(ctx, delay)
			close(nacked)
			return err
		}, broker.WithAckWait(30*time.Second))
		s.publishAwait(t, ctx, b1, topic, nacked, "no delivery", mkEvents(1, nil)...)
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = sub1.Close(cctx)
		_ = b1.Close(cctx)
		cancel()
		c := newCollector(nil)
		s.subscribe(t, ctx, b2, topic, "g", c.handle, broker.WithAckWait(30*time.Second))
		r := s.wait(t, c, 1)[0]
		elapsed := time.Since(time.Unix(0, nackedAt.Load()))
		if elapsed < delay*8/10 {
			t.Fatalf("redelivered %v after Nack(%v) by a subscriber that then closed; NativeDelay claims the broker keeps the delay", elapsed, delay)
		}
		if r.attempt < 2 {
			t.Fatalf("redelivery attempt %d, want >= 2", r.attempt)
		}
	})
	t.Run("RedeliverToTail", func(t *testing.T) {
		t.Parallel()
		// A broker claiming RedeliverToTail puts a delayed Nack behind
		// every event queued: here 9 events of one subject, the one
		// behind the nacked event held in flight until the delay is over.
		// Nack(0) is only reported.
		pos := s.nackPosition(t, time.Millisecond)
		const n = redeliverEvents
		t.Logf("Nack(1ms) of the first of %d queued events: delivered again after %d of the other %d; Nack(0): after %d", n, pos, n-1, s.nackPosition(t, 0))
		switch {
		case caps.RedeliverToTail && pos < n-1:
			t.Fatalf("a Nack(1ms)ed event came back after %d of the %d events queued behind it; RedeliverToTail claims after all of them", pos, n-1)
		case !caps.RedeliverToTail && pos == n-1:
			// Not a failure: a broker may put it last with a backlog this
			// small and not with a larger one (Kafka's retry topic is read
			// beside the partition, behind what was already fetched).
			t.Logf("not claimed, though here it came back behind all %d events queued behind it", n-1)
		}
	})
	t.Run("Durable", func(t *testing.T) {
		t.Parallel()
		switch {
		case !caps.Durable:
			t.Skip("not claimed")
		case s.cfg.DurableCheckedBy != "":
			t.Skip("checked by " + s.cfg.DurableCheckedBy + " (RunDurable, on a server that test restarts)")
		default:
			t.Fatal("the broker claims Durable and Config.DurableCheckedBy names no test that checks it: " +
				"call brokertest.RunDurable with a Config whose Restart restarts a server of the test's own, and name that test")
		}
	})
}

// provision provisions topic with groups, or subscribes each group once
// when the broker is not a Provisioner.
func (s *suite) provision(t *testing.T, ctx context.Context, b broker.Broker, topic string, groups ...string) {
	t.Helper()
	if p, ok := b.(broker.Provisioner); ok {
		if err := p.Provision(ctx, topic, groups...); err != nil {
			t.Fatalf("Provision(%s, %v): %v", topic, groups, err)
		}
		return
	}
	for _, g := range groups {
		sub, err := b.Subscribe(ctx, topic, g, func(context.Context, broker.Delivery) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		_ = sub.Close(ctx)
	}
}

// provisioning checks broker.Provisioner as the runtime uses it for
// dead-letter topics: after Provision (twice: it is idempotent), events
// published before any subscriber of the group exists are kept for it, and
// a publish to the provisioned topic succeeds (RabbitMQ: no longer
// unroutable).
func (s *suite) provisioning(t *testing.T) {
	b := s.broker(t)
	p, ok := b.(broker.Provisioner)
	if !ok {
		t.Skip("not a broker.Provisioner")
	}
	ctx := s.ctx(t)
	topic := s.cfg.Topic(t) + ".dlq"
	for range 2 {
		if err := p.Provision(ctx, topic, "collector", "other"); err != nil {
			t.Fatalf("Provision: %v", err)
		}
	}
	evs := mkEvents(3, nil)
	s.publish(t, ctx, b, topic, evs...)
	for _, g := range []string{"collector", "other"} {
		c := newCollector(nil)
		s.subscribe(t, ctx, s.broker(t), topic, g, c.handle)
		s.expectAll(t, c, evs, "group "+g+": published after Provision and before the first subscriber, missing")
	}
}

// closeWaitsForLaterSettle checks Close with deliveries that the handler
// hands to another goroutine (as the consumer runtime's workers do) and
// that are settled after the handler returned: Close waits for them, their
// acks succeed, and they are not delivered again.
func (s *suite) closeWaitsForLaterSettle(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	evs := mkEvents(3, func(int) string { return "k" })
	// called counts Ack calls begun; Close must not return before all
	// three began (it waits for them), and each must then succeed.
	var called, ackErrs atomic.Int64
	var acks sync.WaitGroup
	got := make(chan struct{}, len(evs))
	sub := s.subscribe(t, ctx, b, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		acks.Add(1)
		go func() {
			defer acks.Done()
			time.Sleep(500 * time.Millisecond)
			called.Add(1)
			if err := d.Ack(context.Background()); err != nil {
				ackErrs.Add(1)
			}
		}()
		got <- struct{}{}
		return nil
	}, broker.WithAckWait(30*time.Second))
	s.publishAwait(t, ctx, b, topic, got, "deliveries missing", evs...)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	n := called.Load()
	acks.Wait()
	if n != int64(len(evs)) || ackErrs.Load() != 0 {
		t.Fatalf("Close returned before %d of %d deliveries were settled (ack errors: %d); it must wait for deliveries settled later from another goroutine", int64(len(evs))-n, len(evs), ackErrs.Load())
	}
	// Nothing comes again: a marker behind them (same subject) arrives
	// first for a new subscriber of the group.
	marker := mkEvents(1, func(int) string { return "k" })[0]
	s.publish(t, ctx, b, topic, marker)
	c := newCollector(nil)
	s.subscribe(t, ctx, s.broker(t), topic, "g", c.handle)
	for {
		r := s.wait(t, c, 1)[0]
		if r.ev.ID == marker.ID {
			return
		}
		t.Errorf("%s acked before Close was delivered again (attempt %d)", r.ev.ID, r.attempt)
	}
}

// connectionDrop checks a crash that drops the connection without closing
// the subscription (Config.KillConnection): the deliveries it held come
// back to a subscriber on another connection, none is lost.
func (s *suite) connectionDrop(t *testing.T) {
	if s.cfg.KillConnection == nil {
		t.Skip("needs Config.KillConnection")
	}
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	b1 := s.broker(t) // closed at the end, long after its connection was killed
	hold := newCollector(func(broker.Delivery) error { return nil })
	if _, err := b1.Subscribe(ctx, topic, "g", hold.handle, broker.WithAckWait(s.cfg.AckWait), broker.WithMaxInFlight(100)); err != nil {
		t.Fatal(err)
	}
	evs := mkEvents(10, func(i int) string { return fmt.Sprintf("s%d", i) })
	s.publish(t, ctx, b1, topic, evs...)
	s.wait(t, hold, len(evs))
	s.cfg.KillConnection(t, b1)
	c := newCollector(nil)
	s.subscribe(t, ctx, s.broker(t), topic, "g", c.handle, broker.WithAckWait(s.cfg.AckWait))
	seen := map[string]bool{}
	for len(seen) < len(evs) {
		r := s.wait(t, c, 1)[0]
		seen[r.ev.ID] = true
	}
}

// expectAll waits for len(evs) deliveries on c and fails, saying why, for
// each event of evs not among them.
func (s *suite) expectAll(t *testing.T, c *collector, evs []eventkit.Event, why string) {
	t.Helper()
	got := map[string]bool{}
	for _, r := range s.wait(t, c, len(evs)) {
		got[r.ev.ID] = true
	}
	for _, e := range evs {
		if !got[e.ID] {
			t.Errorf("%s: %s", e.ID, why)
		}
	}
}

// redeliverEvents is how many events are queued (one subject) when the
// first is nacked in nackPosition.
const redeliverEvents = 10

// nackPosition publishes redeliverEvents events of one subject to a
// group, subscribes with one delivery in flight at a time, nacks the first
// delivery with delay, holds the next until the delay is over and acks
// everything else; it returns how many of the
// other events were delivered before the nacked one came back.
func (s *suite) nackPosition(t *testing.T, delay time.Duration) int {
	t.Helper()
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	s.provision(t, ctx, b, topic, "g")
	evs := mkEvents(redeliverEvents, func(int) string { return "k" })
	s.publish(t, ctx, b, topic, evs...)
	var nacked time.Time
	slowed := false
	c := newCollector(func(d broker.Delivery) error {
		if d.Event().ID == evs[0].ID && d.Attempt() == 1 {
			nacked = time.Now()
			return d.Nack(context.Background(), delay)
		}
		if !slowed {
			// The first delivery after the nack stays in flight (the only
			// one) until the nack's delay is well over: the next delivery
			// then says where the broker put the nacked event.
			slowed = true
			time.Sleep(time.Until(nacked.Add(delay + 100*time.Millisecond)))
		}
		return d.Ack(context.Background())
	})
	s.subscribe(t, ctx, b, topic, "g", c.handle, broker.WithMaxInFlight(1), broker.WithAckWait(30*time.Second))
	first := s.wait(t, c, 1)[0]
	if first.ev.ID != evs[0].ID {
		t.Fatalf("first delivery %s, want the first event published %s", first.ev.ID, evs[0].ID)
	}
	others := map[string]bool{}
	for {
		r := s.wait(t, c, 1)[0]
		if r.ev.ID == evs[0].ID {
			return len(others)
		}
		others[r.ev.ID] = true
	}
}
