package brokertest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

// outcome is what one Publish call said about its events.
type outcome struct {
	topic  string
	events []eventkit.Event
	failed map[int]error // by index; every index when the error was not a *PublishError
}

// outcomeOf reads a Publish result into per-event verdicts.
func outcomeOf(topic string, events []eventkit.Event, err error) outcome {
	o := outcome{topic: topic, events: events, failed: map[int]error{}}
	if err == nil {
		return o
	}
	var pe *broker.PublishError
	if errors.As(err, &pe) && len(pe.Failed) > 0 {
		for _, f := range pe.Failed {
			o.failed[f.Index] = f.Err
		}
		return o
	}
	for i := range events {
		o.failed[i] = err
	}
	return o
}

// oversize returns a payload over the broker's limit (16 MiB when the broker
// does not say, which every adapter rejects: see the LargePayload case).
func oversize(b broker.Broker) []byte {
	n := 16 << 20
	if max := b.Capabilities().MaxPayload; max > 0 && max < n {
		n = max + 1
	}
	return make([]byte, n)
}

// concurrentPublishFailures has 8 goroutines publish at the same time, round
// after round, a known share of them calls that must fail: to
// Config.FailingTopic (the same events another goroutine publishes to a good
// topic at that moment, so an adapter correlating by event id is caught) and
// calls holding one event over the size limit (nothing of such a call may be
// sent, so every event of it must be named). Each call must report exactly
// its own failures: what the subscriber received is compared with what
// every Publish said.
func (s *suite) concurrentPublishFailures(t *testing.T) {
	b := s.broker(t)
	ctx, good := s.ctx(t), s.cfg.Topic(t)
	bad := ""
	if s.cfg.FailingTopic != nil {
		bad = s.cfg.FailingTopic(t)
	}
	c := newCollector(nil)
	s.subscribe(t, ctx, b, good, "g", c.handle)
	huge := oversize(b)

	const pairs, rounds, per = 4, 25, 10
	var outcomes []outcome
	var mu sync.Mutex
	for round := range rounds {
		start := make(chan struct{})
		var wg sync.WaitGroup
		call := func(topic string, evs []eventkit.Event) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := b.Publish(ctx, topic, evs...)
				mu.Lock()
				outcomes = append(outcomes, outcomeOf(topic, evs, err))
				mu.Unlock()
			}()
		}
		for q := range pairs {
			subject := func(i int) string { return fmt.Sprintf("r%d.q%d.s%d", round, q, i%3) }
			mode := (q + round) % 3
			if mode == 1 && bad == "" {
				mode = 2
			}
			switch mode {
			case 0: // two good calls
				call(good, mkEvents(per, subject))
				call(good, mkEvents(per, subject))
			case 1: // the same events to a good and to a failing topic
				evs := mkEvents(per, subject)
				call(good, evs)
				call(bad, evs)
			case 2: // a call with an event over the limit, and a good call
				evs := mkEvents(per, subject)
				evs[(round+q)%per].Data = huge
				call(good, evs)
				call(good, mkEvents(per, subject))
			}
		}
		close(start)
		wg.Wait()
	}

	// Every event that Publish called accepted on the good topic must be
	// delivered, and no event it called failed.
	accepted := map[string]bool{}
	failedGood := map[string]error{}
	var problems []string
	for _, o := range outcomes {
		for i, e := range o.events {
			ferr, failed := o.failed[i]
			hasHuge := len(e.Data) == len(huge)
			switch {
			case o.topic == bad && !failed:
				problems = append(problems, fmt.Sprintf("event %s to the failing topic reported accepted", e.ID))
			case o.topic == bad:
				if errors.Is(ferr, eventkit.ErrInvalidEvent) || errors.Is(ferr, eventkit.ErrTooLarge) {
					problems = append(problems, fmt.Sprintf("event %s to the failing topic failed validation: %v", e.ID, ferr))
				}
			case failed && hasHuge:
				failedGood[e.ID] = ferr
				if !errors.Is(ferr, eventkit.ErrTooLarge) {
					problems = append(problems, fmt.Sprintf("oversize event %s failed with %v, want ErrTooLarge", e.ID, ferr))
				}
			case failed:
				failedGood[e.ID] = ferr
				if !o.hasHuge(len(huge)) {
					problems = append(problems, fmt.Sprintf("good event %s of a good call reported failed: %v", e.ID, ferr))
				}
			case hasHuge:
				problems = append(problems, fmt.Sprintf("oversize event %s reported accepted", e.ID))
			default:
				accepted[e.ID] = true
				if o.hasHuge(len(huge)) {
					problems = append(problems, fmt.Sprintf("event %s of a call with an oversize event reported accepted: nothing of such a call is sent", e.ID))
				}
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("%d wrong verdicts, e.g.:", len(problems))
		for _, p := range problems[:min(len(problems), 10)] {
			t.Error("  ", p)
		}
	}

	// What the subscriber got: all the accepted events, none of the failed.
	seen := map[string]bool{}
	timeout := time.NewTimer(s.cfg.Timeout)
	defer timeout.Stop()
	for missing := len(accepted); missing > 0; {
		select {
		case r := <-c.ch:
			id := r.ev.ID
			if ferr, ok := failedGood[id]; ok && !seen[id] {
				t.Errorf("event %s was reported failed (%v) but was delivered", id, ferr)
			}
			if accepted[id] && !seen[id] {
				missing--
			}
			seen[id] = true
		case <-timeout.C:
			n := 0
			for id := range accepted {
				if !seen[id] {
					n++
				}
			}
			t.Fatalf("%d of %d events reported accepted were never delivered (reported as success, dropped by the broker)", n, len(accepted))
		}
	}
	for drained := false; !drained; {
		select {
		case r := <-c.ch:
			if ferr, ok := failedGood[r.ev.ID]; ok && !seen[r.ev.ID] {
				t.Errorf("event %s was reported failed (%v) but was delivered", r.ev.ID, ferr)
			}
			seen[r.ev.ID] = true
		default:
			drained = true
		}
	}
	t.Logf("%d calls: %d events accepted and delivered, %d failed on the good topic", len(outcomes), len(accepted), len(failedGood))
}

func (o outcome) hasHuge(n int) bool {
	for _, e := range o.events {
		if len(e.Data) == n {
			return true
		}
	}
	return false
}
