package brokertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit/broker"
)

// closeHandBack checks what Subscription.Close promises about deliveries
// still unsettled: a subscriber holds one delivery in its handler and has
// the rest of MaxInFlight prefetched; it closes, or its Subscribe context is
// cancelled (the handler is released meanwhile and acks or nacks with no
// delay what it held), and its connection goes away; a subscriber of the
// same group on a new connection then receives every unsettled event within
// a few seconds, far sooner than the 60 s ack wait, round after round (the
// failure this guards against depends on timing).
func (s *suite) closeHandBack(t *testing.T) {
	for _, mode := range []string{"HeldAck", "HeldNack", "CancelHeldNack"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			const rounds = 4
			for r := range rounds {
				if !s.closeHandBackRound(t, mode != "HeldAck", mode == "CancelHeldNack", r) {
					return
				}
			}
		})
	}
}

// handBackWithin bounds how long the new subscriber may take to receive the
// closed subscriber's unsettled events (its subscription is already
// settled, see Config.Settle); the ack wait is 60 s.
const (
	handBackWithin  = 10 * time.Second
	handBackAckWait = 60 * time.Second
	// The closing subscriber takes every event (one in the handler, the
	// rest prefetched) and has room for more: a pull request left open
	// with room is where a server delivers what is nacked into it.
	handBackEvents      = 12
	handBackMaxInFlight = 32
)

// closeHandBackRound runs one round; cancel stops the subscription by
// cancelling its Subscribe context instead of calling Close.
func (s *suite) closeHandBackRound(t *testing.T, nack, cancel bool, round int) bool {
	t.Helper()
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	a, b := s.cfg.New(t), s.cfg.New(t)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Close(cctx)
		_ = b.Close(cctx)
	})
	evs := mkEvents(handBackEvents, func(i int) string { return fmt.Sprintf("s%d", i%3) })

	held := make(chan string, 1)
	release := make(chan struct{})
	var mu sync.Mutex
	handed := map[string]bool{}
	first := true
	ha := func(ctx context.Context, d broker.Delivery) error {
		mu.Lock()
		handed[d.Event().ID] = true
		mu.Unlock()
		if !first {
			// Handed over after the held one was released, as Close
			// began: settle it as the held one is settled.
			return d.Nack(context.Background(), 0)
		}
		first = false
		held <- d.Event().ID
		<-release
		if nack {
			return d.Nack(context.Background(), 0)
		}
		return d.Ack(context.Background())
	}
	actx, stopA := context.WithCancel(ctx)
	defer stopA()
	subA, err := a.Subscribe(actx, topic, "g", ha,
		broker.WithAckWait(handBackAckWait), broker.WithMaxInFlight(handBackMaxInFlight))
	if err != nil {
		t.Fatalf("round %d: Subscribe: %v", round, err)
	}
	s.cfg.Settle(t, subA)
	s.publish(t, ctx, a, topic, evs...)
	var heldID string
	select {
	case heldID = <-held:
	case <-time.After(s.cfg.Timeout):
		_ = subA.Close(ctx)
		t.Fatalf("round %d: no delivery", round)
	}
	// Let the client prefetch behind the held delivery. Prefetching cannot
	// be observed through the API; if it has not happened yet, the round
	// checks less, not something false.
	time.Sleep(200 * time.Millisecond)

	closed := make(chan error, 1)
	go func() {
		if cancel {
			stopA()
			select {
			case <-subA.Done():
				closed <- nil
			case <-time.After(10 * time.Second):
				closed <- fmt.Errorf("not stopped 10s after its context was cancelled")
			}
			return
		}
		cctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		closed <- subA.Close(cctx)
	}()
	// Release the handler while Close runs: it settles during Close. (A
	// subscription cannot tell that Close has begun; the pause stands
	// for the shutdown that a runtime begins before it releases its
	// handlers.)
	time.Sleep(time.Duration(1+round%2) * 50 * time.Millisecond)
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("round %d: Close: %v", round, err)
	}
	cctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	err = a.Close(cctx)
	done()
	if err != nil {
		t.Fatalf("round %d: broker Close: %v", round, err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{}
	for _, e := range evs {
		want[e.ID] = true
	}
	if !nack {
		delete(want, heldID) // acked: it may come again (at least once) but need not
	}

	c := newCollector(nil)
	start := time.Now()
	subB := s.subscribe(t, ctx, b, topic, "g", c.handle,
		broker.WithAckWait(handBackAckWait), broker.WithMaxInFlight(len(evs)))
	deadline := time.NewTimer(handBackWithin)
	defer deadline.Stop()
	for len(want) > 0 {
		select {
		case r := <-c.ch:
			delete(want, r.ev.ID)
		case <-deadline.C:
			missing := 0
			for id := range want {
				if handed[id] {
					missing++
				}
			}
			t.Errorf("round %d: %d of %d unsettled events (%d of them handed to the closed subscriber) not received by the group's next subscriber within %v of subscribing (ack wait %v)",
				round, len(want), len(evs), missing, handBackWithin, handBackAckWait)
			_ = subB.Close(ctx)
			return false
		}
	}
	t.Logf("round %d: the closed subscriber had been handed %d events; the next received the unsettled ones after %v",
		round, len(handed), time.Since(start).Round(time.Millisecond))
	return true
}

// concurrentClose checks Broker.Close as broker.Broker documents it: two
// Close calls made at once while a handler is running both return only
// after the handler has returned, Publish and Subscribe then return
// ErrClosed, and a third Close returns nil.
func (s *suite) concurrentClose(t *testing.T) {
	b := s.cfg.New(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	started := make(chan struct{}, 1)
	var returned atomic.Bool
	if _, err := b.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		started <- struct{}{}
		time.Sleep(500 * time.Millisecond) // a handler that does not watch ctx
		err := d.Ack(context.Background())
		returned.Store(true)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.publishAwait(t, ctx, b, topic, started, "no delivery", mkEvents(1, nil)...)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	early := make([]bool, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Close(cctx)
			early[i] = !returned.Load()
		}()
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Errorf("concurrent Close %d: %v", i, errs[i])
		}
		if early[i] {
			t.Errorf("concurrent Close %d returned while a handler was still running; every Close must return only after the broker is closed", i)
		}
	}
	expectClosed(t, cctx, b, topic)
}
