package brokertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// RunDurable checks Capabilities.Durable across a server restart, on a
// server of the test's own that cfg.Restart stops and starts again with its
// data (never a shared one: Run's cases would fail while it is down). It
// fails when cfg.Restart is nil, and when the broker does not claim
// Durable: the server the test set up is meant to make it claim it, so a
// claim that went missing is a failure, not a case to skip.
//
// What it checks: events whose Publish returned nil before the restart are
// all delivered after it, both to a group whose subscription ran across
// the restart (those it had left unsettled come again) and to a group that
// had not read them yet; and the broker client made before the restart
// reconnects by itself: the same Publish and the same subscription work
// again, with no new client.
func RunDurable(t *testing.T, cfg Config) {
	cfg.defaults()
	s := &suite{cfg: cfg}
	if cfg.Restart == nil {
		t.Fatal("RunDurable needs Config.Restart")
	}
	s.durable(t)
}

// durableAckWait is the ack wait of the subscription running across the
// restart: long enough that what it holds unsettled is still in flight
// when the server goes down, short enough that the redelivery after the
// restart comes within the suite's timeout.
const durableAckWait = 10 * time.Second

func (s *suite) durable(t *testing.T) {
	b := s.broker(t)
	if !b.Capabilities().Durable {
		t.Fatal("RunDurable: the broker does not claim Capabilities.Durable on the server the test set up for it")
	}
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	s.provision(t, ctx, b, topic, "g", "later")

	before := mkEvents(20, func(i int) string { return fmt.Sprintf("s%d", i%4) })
	held := map[string]bool{} // left unsettled across the restart
	for i, e := range before {
		if i%2 == 1 {
			held[e.ID] = true
		}
	}
	var mu sync.Mutex
	seen := map[string]int{} // deliveries to group g, by event id
	restarted := false
	after := map[string]int{} // deliveries to group g after the restart
	sub := s.subscribe(t, ctx, b, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		id := d.Event().ID
		mu.Lock()
		seen[id]++
		first := seen[id] == 1
		if restarted {
			after[id]++
		}
		mu.Unlock()
		if first && held[id] {
			return nil // in flight when the server goes down
		}
		return d.Ack(ctx)
	}, broker.WithAckWait(durableAckWait), broker.WithMaxInFlight(len(before)+16))
	s.publish(t, ctx, b, topic, before...)
	count := func(m map[string]int, evs []eventkit.Event) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, e := range evs {
			if m[e.ID] > 0 {
				n++
			}
		}
		return n
	}
	testenv.WaitFor(t, s.cfg.Timeout, "the first deliveries of every event", func() bool {
		return count(seen, before) == len(before)
	})

	// Deliveries count as after the restart from the moment it begins: the
	// client may reconnect and be redelivered what it held before Restart
	// returns (rabbitmqctl start_app returns a while after the node is up).
	// Counting from Restart's return lost those redeliveries and failed a
	// broker that kept its promise. A held event is not redelivered before
	// the server goes down: its ack wait (durableAckWait) has not run out.
	mu.Lock()
	restarted = true
	mu.Unlock()
	s.cfg.Restart(t)

	// The same client publishes again once it has reconnected by itself; a
	// Publish that fails while it reconnects is retried, as a relay does.
	later := mkEvents(5, func(i int) string { return fmt.Sprintf("s%d", i%4) })
	var lastErr error
	deadline := time.Now().Add(s.cfg.Timeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		lastErr = b.Publish(pctx, topic, later...)
		cancel()
		if lastErr == nil {
			break
		}
		if errors.Is(lastErr, broker.ErrClosed) || time.Now().After(deadline) {
			t.Fatalf("Publish on the client made before the restart still fails %v after it: %v; the client must reconnect by itself", s.cfg.Timeout, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Group g's subscription, made before the restart, gets again what it
	// held and gets what was published after.
	var want []eventkit.Event
	for _, e := range before {
		if held[e.ID] {
			want = append(want, e)
		}
	}
	want = append(want, later...)
	waitAll := time.Now().Add(s.cfg.Timeout + durableAckWait)
	for count(after, want) < len(want) && time.Now().Before(waitAll) {
		select {
		case <-sub.Done():
			t.Fatalf("the subscription made before the restart stopped (Err: %v); it must resume by itself", sub.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	mu.Lock()
	for _, e := range want {
		if after[e.ID] == 0 {
			if held[e.ID] {
				t.Errorf("%s: confirmed, delivered and left unsettled before the restart, never delivered again after it", e.ID)
			} else {
				t.Errorf("%s: published after the restart by the same client, never delivered to the subscription made before it", e.ID)
			}
		}
	}
	mu.Unlock()

	// Group "later" had read nothing: it gets every confirmed event,
	// through a subscription of the same client.
	c := newCollector(nil)
	var lsub broker.Subscription
	var err error
	testenv.WaitFor(t, s.cfg.Timeout, "Subscribe on the client made before the restart", func() bool {
		lsub, err = b.Subscribe(ctx, topic, "later", c.handle)
		return err == nil || errors.Is(err, broker.ErrClosed)
	})
	if err != nil {
		t.Fatalf("Subscribe after the restart: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = lsub.Close(cctx)
	})
	s.cfg.Settle(t, lsub)
	all := slices.Concat(before, later)
	got := map[string]bool{}
	timeout := time.NewTimer(s.cfg.Timeout)
	defer timeout.Stop()
	for len(got) < len(all) {
		select {
		case r := <-c.ch:
			got[r.ev.ID] = true
		case <-timeout.C:
			for _, e := range all {
				if !got[e.ID] {
					t.Errorf("%s: confirmed, missing for a group that had not read it; Durable claims accepted events survive a restart", e.ID)
				}
			}
			return
		}
	}
}
