package brokertest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

// Reject is what the PartialFailureOrder case needs from an adapter's test
// to make the broker itself (not validation) fail one event in the middle of
// a Publish call while it accepts the others.
type Reject struct {
	// Broker publishes the calls. It must learn of a rejection before it
	// sends the next event of the call (e.g. a publish window of 1), since
	// that is when an adapter can hold back the subject's later events.
	Broker broker.Broker
	// Topic is where the calls go; the case subscribes group "g" to it.
	Topic string
	// Poison changes an event so that the broker rejects it.
	Poison func(e *eventkit.Event)
}

// partialFailureOrder fails one event of a call (first, middle or last; one
// subject or three) at the broker and checks what the adapter promises for
// the rest of the call: the failed event is named; every later event of its
// subject is named too and is not stored (so a retry cannot land behind
// it); every event not named is delivered and every event named is not;
// the events of other subjects go through.
func (s *suite) partialFailureOrder(t *testing.T) {
	if s.cfg.Reject == nil {
		t.Skip("no way to make this broker reject one event of a call (Config.Reject)")
	}
	r := s.cfg.Reject(t)
	ctx := s.ctx(t)
	c := newCollector(nil)
	s.subscribe(t, ctx, r.Broker, r.Topic, "g", c.handle)
	const n = 9
	for _, subjects := range []int{1, 3} {
		for _, at := range []int{0, n / 2, n - 1} {
			t.Run(fmt.Sprintf("subjects=%d/at=%d", subjects, at), func(t *testing.T) {
				evs := mkEvents(n, func(i int) string { return fmt.Sprintf("s%d", i%subjects) })
				r.Poison(&evs[at])
				o := outcomeOf(r.Topic, evs, r.Broker.Publish(ctx, r.Topic, evs...))
				if _, ok := o.failed[at]; !ok {
					t.Fatalf("the rejected event %d was reported accepted", at)
				}
				want := 0
				for i, e := range evs {
					ferr, failed := o.failed[i]
					later := i > at && e.Subject == evs[at].Subject
					switch {
					case later && !failed:
						t.Errorf("event %d (subject %s) after the failed event %d reported accepted: it is stored ahead of the failed one's retry", i, e.Subject, at)
					case later && !errors.Is(ferr, broker.ErrNotSent):
						t.Errorf("event %d after the failed event %d failed with %v, want broker.ErrNotSent", i, at, ferr)
					case !later && i != at && failed:
						t.Errorf("event %d (subject %s, not after a failed one) reported failed: %v", i, e.Subject, ferr)
					}
					if !failed {
						want++
					}
				}
				// Deliveries: exactly the events reported accepted, and a
				// sentinel published after them closes the call (the
				// subscription is ordered within a call on every adapter
				// with one subscriber, so nothing of the call can follow it).
				sentinel := mkEvents(1, func(int) string { return "sentinel" })
				s.publish(t, ctx, r.Broker, r.Topic, sentinel...)
				got := s.wait(t, c, want+1)
				for _, d := range got {
					for i, e := range evs {
						if _, failed := o.failed[i]; failed && d.ev.ID == e.ID {
							t.Errorf("event %d was reported failed but delivered", i)
						}
					}
				}
				if got[len(got)-1].ev.ID != sentinel[0].ID {
					t.Errorf("last delivery is %s, want the sentinel", got[len(got)-1].ev.ID)
				}
			})
		}
	}
}
