package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// FaultPublisher wraps a Publisher and fails chosen events on their first
// attempt the way the least helpful adapter would: the event is reported
// failed in a *broker.PublishError while every other event of the same call
// is passed on and stored (as NATS does after an async publish error, or
// RabbitMQ after a nack from a reject-publish queue).
type FaultPublisher struct {
	Next broker.Publisher
	mu   sync.Mutex
	fail map[string]error // event id -> error, removed once used
	hits int
}

// FailOnce makes the next Publish that carries id fail it with err.
func (f *FaultPublisher) FailOnce(id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail == nil {
		f.fail = map[string]error{}
	}
	f.fail[id] = err
}

// Hits is how many failures were injected.
func (f *FaultPublisher) Hits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

// Publish implements broker.Publisher.
func (f *FaultPublisher) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	return f.publish(ctx, topic, events, false)
}

// publish fails the chosen events and passes the others on in one call;
// with chain, also the events after a failed one of their subject, with
// broker.ErrNotSent, as a broker.ChainedPublisher must.
func (f *FaultPublisher) publish(ctx context.Context, topic string, events []eventkit.Event, chain bool) error {
	pe := &broker.PublishError{Topic: topic}
	pass := make([]eventkit.Event, 0, len(events))
	idx := make([]int, 0, len(events))
	failedSubjects := map[string]bool{}
	f.mu.Lock()
	for i, e := range events {
		if chain && e.Subject != "" && failedSubjects[e.Subject] {
			pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: e.ID, Err: fmt.Errorf("%w: an earlier event of its subject failed", broker.ErrNotSent)})
			continue
		}
		if err, ok := f.fail[e.ID]; ok {
			delete(f.fail, e.ID)
			f.hits++
			pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: e.ID, Err: err})
			failedSubjects[e.Subject] = true
			continue
		}
		pass = append(pass, e)
		idx = append(idx, i)
	}
	f.mu.Unlock()
	if len(pass) > 0 {
		if err := f.Next.Publish(ctx, topic, pass...); err != nil {
			var npe *broker.PublishError
			if !errors.As(err, &npe) {
				return adapterkit.FailAll(topic, events, err)
			}
			for _, x := range npe.Failed {
				if x.Index >= 0 && x.Index < len(idx) {
					pe.Failed = append(pe.Failed, broker.FailedEvent{Index: idx[x.Index], ID: x.ID, Err: x.Err})
				}
			}
		}
	}
	if len(pe.Failed) > 0 {
		slices.SortFunc(pe.Failed, func(a, b broker.FailedEvent) int { return a.Index - b.Index })
		return pe
	}
	return nil
}

// chainedFaults is a FaultPublisher that is a broker.ChainedPublisher, the
// least helpful kind: PublishChained holds back only what the contract
// demands (the events after a failed one of their subject) and stores
// everything else of the call. Its Next must not fail events itself.
type chainedFaults struct {
	FaultPublisher
	chained atomic.Int64 // PublishChained calls
}

func (f *chainedFaults) PublishChained(ctx context.Context, topic string, events ...eventkit.Event) error {
	f.chained.Add(1)
	return f.publish(ctx, topic, events, true)
}

// CheckBrokerOrder checks what a broker stored, in order, against what was
// sent (subject -> ids in commit order): no event may be stored before an
// earlier event of its subject was (copies of an event already stored may
// follow later ones: consumers keep the first copy). It does not check for
// missing events (CheckStream does).
func CheckBrokerOrder(got []eventkit.Event, sent map[string][]string) error {
	pos := map[string]int{} // id -> index in its subject
	for _, ids := range sent {
		for i, id := range ids {
			pos[id] = i
		}
	}
	stored := map[string]map[int]bool{}
	for at, e := range got {
		i, ok := pos[e.ID]
		if !ok {
			continue
		}
		s := stored[e.Subject]
		if s == nil {
			s = map[int]bool{}
			stored[e.Subject] = s
		}
		for j := 0; j < i; j++ {
			if !s[j] {
				return fmt.Errorf("subject %q: event %d (%s) stored at position %d before event %d (%s) of the same subject",
					e.Subject, i, e.ID, at, j, sent[e.Subject][j])
			}
		}
		s[i] = true
	}
	return nil
}

// testPartialFailure: one event of a batch fails (first, middle or last of
// the batch; one subject or several; a transient failure or a permanent
// rejection that succeeds on its retry) while the broker stores every other
// event of the same Publish call. The broker must never hold an event of a
// subject before the earlier events of that subject.
//
// With a broker.ChainedPublisher ("chained") the relay sends a whole batch
// in one call, and the publisher holds back only the events after a failed
// one of their subject.
func testPartialFailure(t *testing.T, h Harness, rf RelayFactory) {
	for _, pub := range []string{"plain", "chained"} {
		for _, subjects := range []int{1, 3} {
			for _, where := range []string{"first", "middle", "last"} {
				for _, kind := range []string{"transient", "permanent"} {
					t.Run(fmt.Sprintf("%s/%s/%dsubjects/%s", pub, where, subjects, kind), func(t *testing.T) {
						partialFailure(t, h, rf, pub == "chained", subjects, where, kind)
					})
				}
			}
		}
	}
}

func partialFailure(t *testing.T, h Harness, rf RelayFactory, chained bool, subjects int, where, kind string) {
	ctx := ctxT(t)
	rec := &Recorder{}
	cf := &chainedFaults{FaultPublisher: FaultPublisher{Next: rec}}
	fp := &cf.FaultPublisher
	var pub broker.Publisher = fp
	if chained {
		pub = cf
	}
	cfg := fastConfig(t)
	cfg.RetryDelay = 20 * time.Millisecond
	relay := rf.new(t, h, pub, cfg)
	const n = 12
	var evs []eventkit.Event
	sent := map[string][]string{}
	for i := range n {
		e := Event(fmt.Sprint("s", i%subjects), i)
		evs = append(evs, e)
		sent[e.Subject] = append(sent[e.Subject], e.ID)
	}
	victim := map[string]int{"first": 0, "middle": n / 2, "last": n - 1}[where]
	var ferr error = errors.New("injected: connection reset")
	if kind == "permanent" {
		ferr = eventkit.Permanent(errors.New("injected: rejected"))
	}
	fp.FailOnce(evs[victim].ID, ferr)
	AddCommit(t, ctx, h, "t1", evs...)
	StartRelay(t, relay)
	WaitFor(t, 10*time.Second, "all delivered", func() bool { return len(distinct(rec.Events())) == n })
	WaitFor(t, 10*time.Second, "all completed", func() bool { return relay.Stats().Delivered == n })
	if fp.Hits() != 1 {
		t.Fatalf("%d failures injected, want 1", fp.Hits())
	}
	got := eventsOf(rec.Events())
	if err := CheckBrokerOrder(got, sent); err != nil {
		t.Fatalf("%v (broker holds %v)", err, idsOf(got))
	}
	if _, err := CheckStream(got, sent); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("broker holds %d events, want %d (no event needs publishing twice)", len(got), n)
	}
	if st := relay.Stats(); kind == "permanent" && st.PublishErrors != 0 {
		// The events held back behind the rejected one waited for its
		// retry; nothing was a transient failure to back off from.
		t.Fatalf("%d transient publish failures counted after a permanent rejection, want 0", st.PublishErrors)
	}
	if chained && cf.chained.Load() == 0 {
		t.Fatal("the relay never called PublishChained")
	}
}

func idsOf(evs []eventkit.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}
