package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestHandlesEveryEventOnce(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	var mu sync.Mutex
	seen := map[string]int{}
	c := newConsumer(t, b, consumer.Config{Concurrency: 4})
	if err := c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		m, ok := consumer.MetaFrom(ctx)
		if !ok || m.Topic != topic || m.Group != "g" || m.Attempt != 1 {
			return eventkit.Permanent(fmt.Errorf("bad meta %+v", m))
		}
		mu.Lock()
		seen[e.ID]++
		mu.Unlock()
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	start(t, c)
	var ids []string
	for i := range 100 {
		e := ev("thing.happened", "s"+strconv.Itoa(i%7), `{}`)
		ids = append(ids, e.ID)
		publish(t, b, topic, e)
	}
	eventually(t, 10*time.Second, "100 handled", func() bool { return c.Stats().Handled == 100 })
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("event %s handled %d times", id, seen[id])
		}
	}
	if s := c.Stats(); s.Failed != 0 || s.DeadLettered != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestHandleValidation(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	c := newConsumer(t, b, consumer.Config{})
	noop := consumer.HandlerFunc(func(context.Context, eventkit.Event) error { return nil })
	if err := c.Handle("bad topic", "g", noop); err == nil {
		t.Fatal("invalid topic accepted")
	}
	if err := c.Handle("t", "g", noop); err != nil {
		t.Fatal(err)
	}
	if err := c.Handle("t", "g", noop); err == nil {
		t.Fatal("duplicate route accepted")
	}
	if _, err := consumer.New(b, consumer.Config{Concurrency: 8, MaxInFlight: 2}); err == nil {
		t.Fatal("MaxInFlight < Concurrency accepted")
	}
}

// A poison event is retried up to MaxAttempts, then dead-lettered with its
// history, while the other events keep flowing.
func TestPoisonEventDeadLetteredOthersFlow(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	dlq := collect(t, b, topic+".dlq")
	poison := ev("order.created", "p", `{"poison":true}`, eventkit.WithExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	var poisonCalls atomic.Int32
	c := newConsumer(t, b, consumer.Config{Concurrency: 4, Retry: fastRetry(4)})
	_ = c.Handle(topic, "billing", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		if e.ID == poison.ID {
			poisonCalls.Add(1)
			return errors.New("cannot bill: card declined\nsecond line")
		}
		return nil
	}))
	start(t, c)
	t0 := time.Now()
	publish(t, b, topic, poison)
	for i := range 50 {
		publish(t, b, topic, ev("order.created", "s"+strconv.Itoa(i), `{}`))
	}
	dl := receive(t, dlq, 10*time.Second)
	eventually(t, 5*time.Second, "50 handled", func() bool { return c.Stats().Handled == 50 })
	if n := poisonCalls.Load(); n != 4 {
		t.Fatalf("poison handled %d times, want 4", n)
	}
	info, ok := deadletter.InfoOf(dl)
	if !ok {
		t.Fatalf("not a dead letter: %v", dl.Extensions)
	}
	if info.Topic != topic || info.Group != "billing" || info.Attempts != 4 || info.Reason != deadletter.ReasonMaxAttempts ||
		info.Error != "cannot bill: card declined second line" || info.Undecodable {
		t.Fatalf("dead letter info %+v", info)
	}
	if info.FirstFailure.Before(t0) || info.LastFailure.Before(info.FirstFailure) || info.LastFailure.Equal(info.FirstFailure) {
		t.Fatalf("failure times first=%v last=%v", info.FirstFailure, info.LastFailure)
	}
	orig := deadletter.Original(dl)
	if orig.ID != poison.ID || string(orig.Data) != string(poison.Data) || len(orig.Extensions) != 1 ||
		orig.Extension("traceparent") != poison.Extension("traceparent") {
		t.Fatalf("Original = %+v", orig)
	}
	// The dead letter can arrive before the runtime has counted it.
	eventually(t, 5*time.Second, "stats", func() bool { return c.Stats().DeadLettered == 1 })
	if s := c.Stats(); s.DeadLettered != 1 || s.Failed != 4 || s.Retried != 3 {
		t.Fatalf("stats %+v", s)
	}
	// Replay: republish the original to its topic; a fixed handler takes it.
	poisonCalls.Store(0)
}

func TestPermanentAndRetryAfter(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	dlq := collect(t, b, topic+".dlq")
	perm := ev("x", "a", `{}`)
	later := ev("x", "b", `{}`)
	var mu sync.Mutex
	var calls []time.Time
	c := newConsumer(t, b, consumer.Config{Retry: fastRetry(5)})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		if e.ID == perm.ID {
			return eventkit.Permanent(errors.New("invalid order"))
		}
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		if len(calls) == 1 {
			return consumer.RetryAfter(300*time.Millisecond, errors.New("rate limited"))
		}
		return nil
	}))
	start(t, c)
	publish(t, b, topic, perm, later)
	dl := receive(t, dlq, 5*time.Second)
	info, _ := deadletter.InfoOf(dl)
	if dl.ID == perm.ID || info.EventID != perm.ID || info.Attempts != 1 || info.Reason != deadletter.ReasonPermanent {
		t.Fatalf("permanent: %+v", info)
	}
	eventually(t, 5*time.Second, "retried event handled", func() bool { return c.Stats().Handled == 1 })
	mu.Lock()
	defer mu.Unlock()
	if gap := calls[1].Sub(calls[0]); gap < 290*time.Millisecond {
		t.Fatalf("RetryAfter(300ms) retried after %s", gap)
	}
}

// A message that is not an event goes to the dead letters at once, with its
// raw bytes and the reason.
func TestUndecodableDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	dlq := collect(t, b, topic+".dlq")
	var calls atomic.Int32
	c := newConsumer(t, b, consumer.Config{Retry: fastRetry(5)})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		calls.Add(1)
		return nil
	}))
	start(t, c)
	garbage := []byte("\x00not json at all\xff")
	if err := b.PublishRaw(context.Background(), topic, nil, garbage); err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{"ce-type": "x", "content-type": "text/plain"} // no id, no source
	if err := b.PublishRaw(context.Background(), topic, headers, []byte("body")); err != nil {
		t.Fatal(err)
	}
	publish(t, b, topic, ev("fine", "s", `{}`))
	for i, want := range [][]byte{garbage, []byte("body")} {
		dl := receive(t, dlq, 5*time.Second)
		info, ok := deadletter.InfoOf(dl)
		if !ok || !info.Undecodable || dl.Type != deadletter.UndecodableType || info.Reason != deadletter.ReasonUndecodable ||
			info.Attempts != 1 || info.Error == "" || info.Group != "g" || info.Topic != topic {
			t.Fatalf("%d: dead letter %+v / %+v", i, dl, info)
		}
		if string(dl.Data) != string(want) {
			t.Fatalf("%d: data %q, want %q", i, dl.Data, want)
		}
		if i == 1 && info.Headers["ce-type"] != "x" {
			t.Fatalf("headers %v", info.Headers)
		}
	}
	eventually(t, 5*time.Second, "good event handled", func() bool { return calls.Load() == 1 })
	if s := c.Stats(); s.DeadLettered != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPanicRecoveredAndRetried(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	var calls atomic.Int32
	c := newConsumer(t, b, consumer.Config{Retry: fastRetry(3)})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		if calls.Add(1) == 1 {
			var m map[string]int
			m["boom"]++ // nil map write
		}
		return nil
	}))
	start(t, c)
	publish(t, b, topic, ev("x", "s", `{}`))
	eventually(t, 5*time.Second, "handled after panic", func() bool { return c.Stats().Handled == 1 })
	if s := c.Stats(); s.Failed != 1 || s.Retried != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// Per-subject order holds with 16 workers across 100 subjects, including
// when events fail and are retried in place; different subjects run in
// parallel.
func TestOrderedPerSubject(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	const subjects, perSubject = 100, 20
	var mu sync.Mutex
	got := map[string][]int{}
	failedOnce := map[string]bool{}
	var cur, peak atomic.Int32
	c := newConsumer(t, b, consumer.Config{Concurrency: 16, OrderedBySubject: true, Retry: fastRetry(5)})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		seq, _ := strconv.Atoi(string(e.Data))
		mu.Lock()
		if seq%7 == 3 && !failedOnce[e.ID] { // every 7th event fails its first attempt
			failedOnce[e.ID] = true
			mu.Unlock()
			return errors.New("transient")
		}
		mu.Unlock()
		time.Sleep(time.Duration(seq%3) * 100 * time.Microsecond)
		mu.Lock()
		got[e.Subject] = append(got[e.Subject], seq)
		mu.Unlock()
		return nil
	}))
	start(t, c)
	publish(t, b, topic, subjectRounds(subjects, perSubject)...)
	handledInOrder(t, c, &mu, got, subjects, perSubject)
	if peak.Load() < 2 {
		t.Fatalf("no parallelism across subjects (peak %d)", peak.Load())
	}
	if st := c.Stats(); st.Retried == 0 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("peak concurrent handlers %d; stats %+v", peak.Load(), c.Stats())
}

// With ordering, a poison event is dead-lettered after its attempts and the
// subject moves on; the events behind it wait and keep their order.
func TestOrderedPoisonDoesNotLetLaterEventsOvertake(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	dlq := collect(t, b, topic+".dlq")
	var mu sync.Mutex
	var order []string
	c := newConsumer(t, b, consumer.Config{Concurrency: 4, OrderedBySubject: true, Retry: fastRetry(3)})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		if string(e.Data) == "poison" {
			mu.Lock()
			order = append(order, "poison-attempt")
			mu.Unlock()
			return errors.New("bad")
		}
		mu.Lock()
		order = append(order, string(e.Data))
		mu.Unlock()
		return nil
	}))
	start(t, c)
	publish(t, b, topic, ev("x", "k", "1"), ev("x", "k", "poison"), ev("x", "k", "2"), ev("x", "k", "3"))
	dl := receive(t, dlq, 5*time.Second)
	eventually(t, 5*time.Second, "3 handled", func() bool { return c.Stats().Handled == 3 })
	mu.Lock()
	defer mu.Unlock()
	want := []string{"1", "poison-attempt", "poison-attempt", "poison-attempt", "2", "3"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	if info, _ := deadletter.InfoOf(dl); info.Attempts != 3 {
		t.Fatalf("attempts %d", info.Attempts)
	}
}

// A handler that blocks does not let memory grow: the consumer holds at
// most MaxInFlight deliveries, and only Concurrency handler calls run.
func TestBlockedHandlerBoundsInFlight(t *testing.T) {
	bothOrderings(t, func(t *testing.T, ordered bool, b *memorybroker.Broker, topic string) {
		release := make(chan struct{})
		c := newConsumer(t, b, consumer.Config{Concurrency: 3, MaxInFlight: 10, OrderedBySubject: ordered})
		_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}))
		start(t, c)
		// Ordered: 3 subjects, so the backlogs of busy subjects fill the
		// in-flight budget. Unordered: the pool takes one delivery
		// beyond its workers and then stops the broker from fetching.
		want := int(4)
		if ordered {
			want = 10
		}
		var batch []eventkit.Event
		for i := range 500 {
			batch = append(batch, ev("x", "s"+strconv.Itoa(i%3), `{}`))
		}
		publish(t, b, topic, batch...)
		eventually(t, 5*time.Second, "in flight at the limit", func() bool { return c.Stats().InFlight == want })
		for range 20 { // and it stays there
			time.Sleep(10 * time.Millisecond)
			if s := c.Stats(); s.InFlight != want || s.Handling > 3 {
				t.Fatalf("stats %+v", s)
			}
		}
		if s := c.Stats(); s.Handling != 3 || s.Handled != 0 {
			t.Fatalf("stats %+v", s)
		}
		close(release)
		eventually(t, 20*time.Second, "all handled", func() bool { return c.Stats().Handled == 500 })
	})
}

// Shutdown with work in progress: handler calls in progress finish, queued
// deliveries are nacked, nothing is lost or half-done, and a second consumer
// handles the rest (goleak in TestMain checks that nothing is left running).
func TestShutdownWithInFlightWork(t *testing.T) {
	bothOrderings(t, func(t *testing.T, ordered bool, b *memorybroker.Broker, topic string) {
		var mu sync.Mutex
		done := map[string]int{} // effects: an event's effect is "started"+"finished"
		started := map[string]bool{}
		var inHandler atomic.Int32
		slow := consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
			inHandler.Add(1)
			mu.Lock()
			started[e.ID] = true
			mu.Unlock()
			time.Sleep(50 * time.Millisecond) // ignores ctx: finishes within ShutdownTimeout
			mu.Lock()
			done[e.ID]++
			mu.Unlock()
			return nil
		})
		c1 := newConsumer(t, b, consumer.Config{Concurrency: 4, MaxInFlight: 16, OrderedBySubject: ordered, ShutdownTimeout: 5 * time.Second})
		_ = c1.Handle(topic, "g", slow)
		r1 := start(t, c1)
		var ids []string
		var batch []eventkit.Event
		for i := range 40 {
			e := ev("x", "s"+strconv.Itoa(i%8), `{}`)
			ids = append(ids, e.ID)
			batch = append(batch, e)
		}
		publish(t, b, topic, batch...)
		eventually(t, 5*time.Second, "handlers busy", func() bool { return inHandler.Load() >= 4 })
		if err := r1.stop(); err != nil {
			t.Fatal(err)
		}
		s1 := c1.Stats()
		if s1.InFlight != 0 || s1.Handling != 0 {
			t.Fatalf("after Run returned: %+v", s1)
		}
		mu.Lock()
		for id := range started {
			if done[id] != 1 {
				t.Fatalf("event %s started but not finished at shutdown", id)
			}
		}
		mu.Unlock()
		if s1.Handled == 0 || s1.Handled == 40 {
			t.Fatalf("test needs a partial run, handled %d", s1.Handled)
		}
		// A second consumer (a restarted process) gets the rest.
		c2 := newConsumer(t, b, consumer.Config{Concurrency: 4, OrderedBySubject: ordered})
		_ = c2.Handle(topic, "g", slow)
		start(t, c2)
		eventually(t, 10*time.Second, "rest handled", func() bool { return s1.Handled+c2.Stats().Handled == 40 })
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if done[id] != 1 {
				t.Fatalf("event %s done %d times", id, done[id])
			}
		}
	})
}

// A handler that does not return within ShutdownTimeout has its context
// cancelled; its delivery is nacked, not counted as a failure.
func TestShutdownTimeoutCancelsHandlers(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	var entered atomic.Int32
	var cancelled atomic.Int32
	c := newConsumer(t, b, consumer.Config{Concurrency: 2, ShutdownTimeout: 100 * time.Millisecond})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		entered.Add(1)
		<-ctx.Done()
		cancelled.Add(1)
		return ctx.Err()
	}))
	r := start(t, c)
	publish(t, b, topic, ev("x", "a", `{}`), ev("x", "b", `{}`), ev("x", "c", `{}`))
	eventually(t, 5*time.Second, "handlers entered", func() bool { return entered.Load() == 2 })
	t0 := time.Now()
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
	if cancelled.Load() != 2 {
		t.Fatalf("%d handler contexts cancelled", cancelled.Load())
	}
	if s := c.Stats(); s.Failed != 0 || s.InFlight != 0 || s.DeadLettered != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// The handler's context continues the producer's trace.
func TestTraceContextPropagated(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	got := make(chan trace.SpanContext, 1)
	c := newConsumer(t, b, consumer.Config{})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	}))
	start(t, c)
	publish(t, b, topic, ev("x", "s", `{}`, eventkit.WithExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")))
	sc := <-got
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !sc.IsRemote() && sc.SpanID().String() == "" {
		t.Fatalf("span context %+v", sc)
	}
}

type recMetrics struct {
	mu      sync.Mutex
	counts  map[consumer.Outcome]int
	latency int
}

func (m *recMetrics) Count(_ context.Context, topic, group string, o consumer.Outcome) {
	m.mu.Lock()
	m.counts[o]++
	m.mu.Unlock()
}
func (m *recMetrics) HandlerLatency(context.Context, string, string, time.Duration, bool) {
	m.mu.Lock()
	m.latency++
	m.mu.Unlock()
}

func TestMetricsHook(t *testing.T) {
	t.Parallel()
	if _, err := consumer.NewOTelMetrics(nil); err != nil {
		t.Fatal(err)
	}
	b := newBroker(t)
	topic := testenv.Name("t")
	m := &recMetrics{counts: map[consumer.Outcome]int{}}
	c := newConsumer(t, b, consumer.Config{Metrics: m, Retry: fastRetry(2)})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		if string(e.Data) == "bad" {
			return errors.New("bad")
		}
		return nil
	}))
	start(t, c)
	publish(t, b, topic, ev("x", "s", "ok"), ev("x", "s", "bad"))
	eventually(t, 5*time.Second, "dead letter", func() bool { return c.Stats().DeadLettered == 1 })
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[consumer.Outcome]int{consumer.OutcomeHandled: 1, consumer.OutcomeFailed: 2, consumer.OutcomeRetried: 1, consumer.OutcomeDeadLettered: 1}
	if fmt.Sprint(m.counts) != fmt.Sprint(want) || m.latency != 3 {
		t.Fatalf("counts %v latency %d", m.counts, m.latency)
	}
}

// TestHandlerTimeout: the handler's context ends at HandlerTimeout with
// context.DeadlineExceeded, whether the handler waits on Done, polls Err,
// or hands the context to a child context; after the call returns the
// context is cancelled for anything the handler left running.
func TestHandlerTimeout(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	const timeout = 150 * time.Millisecond
	type result struct {
		how     string
		err     error
		elapsed time.Duration
		left    context.Context
	}
	results := make(chan result, 3)
	c := newConsumer(t, b, consumer.Config{Concurrency: 3, HandlerTimeout: timeout, Retry: fastRetry(1)})
	if err := c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		begin := time.Now()
		if d, ok := ctx.Deadline(); !ok || d.Sub(begin) > timeout {
			return eventkit.Permanent(fmt.Errorf("deadline %v %v", d, ok))
		}
		switch e.Subject {
		case "done":
			<-ctx.Done()
		case "err":
			for ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
		case "child":
			child, cancel := context.WithCancel(ctx)
			defer cancel()
			<-child.Done()
		}
		if cause := context.Cause(ctx); !errors.Is(cause, context.DeadlineExceeded) {
			return eventkit.Permanent(fmt.Errorf("%s: context.Cause = %v after the timeout, want DeadlineExceeded", e.Subject, cause))
		}
		results <- result{e.Subject, ctx.Err(), time.Since(begin), ctx}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	start(t, c)
	for _, s := range []string{"done", "err", "child"} {
		publish(t, b, topic, ev("thing.happened", s, `{}`))
	}
	for range 3 {
		r := <-results
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Errorf("%s: ctx.Err() = %v, want DeadlineExceeded", r.how, r.err)
		}
		if r.elapsed < timeout-10*time.Millisecond || r.elapsed > 10*timeout {
			t.Errorf("%s: cancelled after %v, want about %v", r.how, r.elapsed, timeout)
		}
		select {
		case <-r.left.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("%s: context not done after the call", r.how)
		}
	}
	eventually(t, 10*time.Second, "3 handled", func() bool { return c.Stats().Handled == 3 })
}

// TestHandlerContextDoneAfterReturn: a context the handler did not wait on
// is cancelled (context.Canceled) once the call returns, and a goroutine it
// started that waits on it is woken.
func TestHandlerContextDoneAfterReturn(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	got := make(chan context.Context, 1)
	woken := make(chan error, 1)
	c := newConsumer(t, b, consumer.Config{HandlerTimeout: time.Hour})
	if err := c.HandleFunc(topic, "g", func(ctx context.Context, e eventkit.Event) error {
		if e.Subject == "wait" {
			go func() { <-ctx.Done(); woken <- ctx.Err() }()
		} else {
			got <- ctx
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	start(t, c)
	publish(t, b, topic, ev("thing.happened", "wait", `{}`), ev("thing.happened", "plain", `{}`))
	if err := <-woken; !errors.Is(err, context.Canceled) {
		t.Errorf("goroutine woken with %v, want Canceled", err)
	}
	if err := (<-got).Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("after return Err() = %v, want Canceled", err)
	}
}

// TestMetaOnRetry: a retried call sees its attempt number in MetaFrom.
func TestMetaOnRetry(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := testenv.Name("t")
	attempts := make(chan int, 2)
	c := newConsumer(t, b, consumer.Config{Retry: fastRetry(3)})
	if err := c.HandleFunc(topic, "g", func(ctx context.Context, e eventkit.Event) error {
		m, _ := consumer.MetaFrom(ctx)
		attempts <- m.Attempt
		if m.Attempt == 1 {
			return errors.New("once")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	start(t, c)
	publish(t, b, topic, ev("thing.happened", "s", `{}`))
	if a, b := <-attempts, <-attempts; a != 1 || b != 2 {
		t.Fatalf("attempts %d, %d; want 1, 2", a, b)
	}
}
