package consumer_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/lruinbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// peaks records the most handler calls seen at once, per subject and in
// all.
type peaks struct {
	mu        sync.Mutex
	cur       map[string]int
	perSubj   int
	all, peak int
}

func newPeaks() *peaks { return &peaks{cur: map[string]int{}} }

// enter counts a call of subject in and returns the function that counts
// it out.
func (p *peaks) enter(subject string) func() {
	p.mu.Lock()
	p.cur[subject]++
	p.all++
	p.perSubj = max(p.perSubj, p.cur[subject])
	p.peak = max(p.peak, p.all)
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		p.cur[subject]--
		p.all--
		p.mu.Unlock()
	}
}

func (p *peaks) get() (perSubject, all int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.perSubj, p.all
}

func (p *peaks) peakAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// Three routes of one consumer (Config: Unordered, Concurrency 1) run the
// same stream of two subjects: the PerSubject route with 4 workers runs
// one event of a subject at a time but both subjects at once, the
// Unordered route with 4 workers runs one subject's events concurrently,
// and the route without options keeps the Config's single worker.
func TestRouteModes(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	c := newConsumer(t, b, consumer.Config{Retry: fastRetry(3)})
	const per = 12
	type routeCase struct {
		name  string
		opts  []consumer.RouteOption
		topic string
		p     *peaks
	}
	cases := []*routeCase{
		{name: "per-subject", opts: []consumer.RouteOption{consumer.WithMode(consumer.PerSubject()), consumer.WithConcurrency(4)}},
		{name: "unordered", opts: []consumer.RouteOption{consumer.WithConcurrency(4)}},
		{name: "config", opts: nil},
	}
	for _, rc := range cases {
		rc.topic, rc.p = testenv.Name("t"), newPeaks()
		if err := c.HandleFunc(rc.topic, "g", func(ctx context.Context, e eventkit.Event) error {
			defer rc.p.enter(e.Subject)()
			time.Sleep(15 * time.Millisecond)
			return nil
		}, rc.opts...); err != nil {
			t.Fatal(err)
		}
	}
	r := start(t, c)
	waitReady(t, r)
	for _, rc := range cases {
		var evs []eventkit.Event
		for i := range per {
			evs = append(evs, ev("x", "s"+strconv.Itoa(i%2), strconv.Itoa(i)))
		}
		publish(t, b, rc.topic, evs...)
	}
	eventually(t, 20*time.Second, "all handled", func() bool { return c.Stats().Handled == uint64(len(cases)*per) })
	for _, rc := range cases {
		perSubject, _ := rc.p.get()
		t.Logf("%s: at most %d per subject, %d in all", rc.name, perSubject, rc.p.peakAll())
	}
	if ps, _ := cases[0].p.get(); ps != 1 || cases[0].p.peakAll() < 2 {
		t.Errorf("PerSubject route with 4 workers: %d at once per subject (want 1), %d in all (want 2)", ps, cases[0].p.peakAll())
	}
	if ps, _ := cases[1].p.get(); ps < 2 {
		t.Errorf("Unordered route with 4 workers: %d at once per subject, want > 1", ps)
	}
	if all := cases[2].p.peakAll(); all != 1 {
		t.Errorf("route without options (Concurrency 1): %d at once, want 1", all)
	}
}

// A route's WithMode replaces the Config's Mode for that route only.
func TestRouteModeOverridesConfig(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	c := newConsumer(t, b, consumer.Config{Mode: consumer.PerSubject(), Concurrency: 4})
	ordered, unordered := newPeaks(), newPeaks()
	tOrdered, tUnordered := testenv.Name("t"), testenv.Name("t")
	h := func(p *peaks) func(ctx context.Context, e eventkit.Event) error {
		return func(ctx context.Context, e eventkit.Event) error {
			defer p.enter(e.Subject)()
			time.Sleep(15 * time.Millisecond)
			return nil
		}
	}
	if err := c.HandleFunc(tOrdered, "g", h(ordered)); err != nil {
		t.Fatal(err)
	}
	if err := c.HandleFunc(tUnordered, "g", h(unordered), consumer.WithMode(consumer.Unordered())); err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	waitReady(t, r)
	for _, topic := range []string{tOrdered, tUnordered} {
		var evs []eventkit.Event
		for i := range 8 {
			evs = append(evs, ev("x", "s", strconv.Itoa(i)))
		}
		publish(t, b, topic, evs...)
	}
	eventually(t, 20*time.Second, "all handled", func() bool { return c.Stats().Handled == 16 })
	if ps, _ := ordered.get(); ps != 1 {
		t.Errorf("Config PerSubject: %d at once for one subject, want 1", ps)
	}
	if ps, _ := unordered.get(); ps < 2 {
		t.Errorf("WithMode(Unordered()): %d at once for one subject, want > 1", ps)
	}
}

// WithRetry: one route dead-letters after its own MaxAttempts, the other
// after the Config's.
func TestRouteRetry(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	c := newConsumer(t, b, consumer.Config{Retry: fastRetry(5)})
	tOwn, tConfig := testenv.Name("t"), testenv.Name("t")
	var mu sync.Mutex
	attempts := map[string]int{}
	fail := func(ctx context.Context, e eventkit.Event) error {
		m, _ := consumer.MetaFrom(ctx)
		mu.Lock()
		attempts[m.Topic]++
		mu.Unlock()
		return errors.New("down")
	}
	if err := c.HandleFunc(tOwn, "g", fail, consumer.WithRetry(fastRetry(2))); err != nil {
		t.Fatal(err)
	}
	if err := c.HandleFunc(tConfig, "g", fail); err != nil {
		t.Fatal(err)
	}
	dlOwn, dlConfig := collect(t, b, tOwn+".dlq"), collect(t, b, tConfig+".dlq")
	r := start(t, c)
	waitReady(t, r)
	publish(t, b, tOwn, ev("x", "s", "{}"))
	publish(t, b, tConfig, ev("x", "s", "{}"))
	for _, w := range []struct {
		ch   <-chan eventkit.Event
		want int
	}{{dlOwn, 2}, {dlConfig, 5}} {
		info, ok := deadletter.InfoOf(receive(t, w.ch, 10*time.Second))
		if !ok {
			t.Fatal("not a dead letter")
		}
		if info.Attempts != w.want || info.Reason != deadletter.ReasonMaxAttempts {
			t.Errorf("dead letter of %s: %d attempts, reason %s; want %d, %s", info.Topic, info.Attempts, info.Reason, w.want, deadletter.ReasonMaxAttempts)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts[tOwn] != 2 || attempts[tConfig] != 5 {
		t.Errorf("handler calls: WithRetry route %d (want 2), Config route %d (want 5)", attempts[tOwn], attempts[tConfig])
	}
}

// WithDeadLetterTopic sends that route's dead letters to the named topic;
// the other route keeps Config.DeadLetterTopic's.
func TestRouteDeadLetterTopic(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	c := newConsumer(t, b, consumer.Config{Retry: fastRetry(2)})
	tOwn, tConfig, named := testenv.Name("t"), testenv.Name("t"), testenv.Name("poison")
	fail := func(ctx context.Context, e eventkit.Event) error { return eventkit.Permanent(errors.New("bad")) }
	if err := c.HandleFunc(tOwn, "g", fail, consumer.WithDeadLetterTopic(named)); err != nil {
		t.Fatal(err)
	}
	if err := c.HandleFunc(tConfig, "g", fail); err != nil {
		t.Fatal(err)
	}
	dlNamed, dlDefault, dlConfig := collect(t, b, named), collect(t, b, tOwn+".dlq"), collect(t, b, tConfig+".dlq")
	r := start(t, c)
	waitReady(t, r)
	publish(t, b, tOwn, ev("x", "own", "{}"))
	publish(t, b, tConfig, ev("x", "config", "{}"))
	if info, _ := deadletter.InfoOf(receive(t, dlNamed, 10*time.Second)); info.Topic != tOwn {
		t.Errorf("dead letter on %s is of %s, want %s", named, info.Topic, tOwn)
	}
	if info, _ := deadletter.InfoOf(receive(t, dlConfig, 10*time.Second)); info.Topic != tConfig {
		t.Errorf("dead letter on %s.dlq is of %s", tConfig, info.Topic)
	}
	select {
	case e := <-dlDefault:
		t.Fatalf("dead letter on %s.dlq despite WithDeadLetterTopic: %s", tOwn, e.Subject)
	case <-time.After(100 * time.Millisecond):
	}
	if s := c.Stats(); s.DeadLettered != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// A route's derived defaults follow its options unless the Config set
// them: WithConcurrency(16) gets MaxInFlight 64 from a Config that left it
// 0, and keeps an explicit Config.MaxInFlight.
func TestRouteDerivedMaxInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		maxInFlight int
		want        int
	}{{"default", 0, 64}, {"explicit", 20, 20}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t)
			c := newConsumer(t, b, consumer.Config{MaxInFlight: tc.maxInFlight})
			topic := testenv.Name("t")
			release := make(chan struct{})
			if err := c.HandleFunc(topic, "g", func(ctx context.Context, e eventkit.Event) error {
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}, consumer.WithConcurrency(16), consumer.WithMode(consumer.PerSubject())); err != nil {
				t.Fatal(err)
			}
			r := start(t, c)
			waitReady(t, r)
			var evs []eventkit.Event
			for i := range 200 {
				evs = append(evs, ev("x", "s"+strconv.Itoa(i%16), "{}"))
			}
			publish(t, b, topic, evs...)
			eventually(t, 5*time.Second, "in flight at the route's limit", func() bool { return c.Stats().InFlight == tc.want })
			for range 10 {
				time.Sleep(10 * time.Millisecond)
				if s := c.Stats(); s.InFlight != tc.want {
					t.Fatalf("in flight %d, want %d", s.InFlight, tc.want)
				}
			}
			close(release)
			eventually(t, 20*time.Second, "all handled", func() bool { return c.Stats().Handled == 200 })
		})
	}
}

func TestModeErrors(t *testing.T) {
	b := newBroker(t)
	var seqIn inbox.Inbox = &sqlinbox.Inbox{} // Sequencer and Batcher (never used)
	lru := lruinbox.New(lruinbox.Options{})
	isMode := func(err error) bool { var me *consumer.ModeError; return errors.As(err, &me) }
	for _, tc := range []struct {
		name string
		cfg  consumer.Config
		mode bool // a *ModeError
	}{
		{"Mode with OrderedBySubject", consumer.Config{Mode: consumer.Strict(), Inbox: seqIn, OrderedBySubject: true}, true},
		{"Mode with StrictOrder", consumer.Config{Mode: consumer.PerSubject(), StrictOrder: true, Inbox: seqIn}, true},
		{"Mode with InboxBatch", consumer.Config{Mode: consumer.PerSubject(), InboxBatch: 8, Inbox: seqIn}, true},
		{"Mode with InboxBatchWait", consumer.Config{Mode: consumer.Batched(8, 0), InboxBatchWait: time.Millisecond, Inbox: seqIn}, true},
		{"Batched(1)", consumer.Config{Mode: consumer.Batched(1, time.Millisecond), Inbox: seqIn}, true},
		{"Batched(0)", consumer.Config{Mode: consumer.Batched(0, 0), Inbox: seqIn}, true},
		{"PerSubjectBatched(1)", consumer.Config{Mode: consumer.PerSubjectBatched(1, 0), Inbox: seqIn}, true},
		{"Strict without inbox", consumer.Config{Mode: consumer.Strict()}, false},
		{"Strict without Sequencer", consumer.Config{Mode: consumer.Strict(), Inbox: lru}, false},
		{"Batched without Batcher", consumer.Config{Mode: consumer.Batched(8, 0), Inbox: lru}, false},
		{"StrictBatched without SequenceBatcher", consumer.Config{Mode: consumer.StrictBatched(8, 0), Inbox: lru}, false},
		{"StrictBatched(1)", consumer.Config{Mode: consumer.StrictBatched(1, 0), Inbox: seqIn}, true},
	} {
		_, err := consumer.New(b, tc.cfg)
		if err == nil {
			t.Errorf("%s: New accepted it", tc.name)
			continue
		}
		if isMode(err) != tc.mode {
			t.Errorf("%s: %v: *ModeError %v, want %v", tc.name, err, isMode(err), tc.mode)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	for _, cfg := range []consumer.Config{
		{Mode: consumer.Strict(), Inbox: seqIn},
		{Mode: consumer.PerSubjectBatched(64, 0), Inbox: seqIn},
		{Mode: consumer.Unordered(), OrderedBySubject: true}, // Unordered is the zero Mode
		{StrictOrder: true, Inbox: seqIn},
		{OrderedBySubject: true, InboxBatch: 8, Inbox: seqIn},
	} {
		if _, err := consumer.New(b, cfg); err != nil {
			t.Errorf("New(%s): %v", cfg.Mode, err)
		}
	}

	// Route options are validated by Handle.
	c, err := consumer.New(b, consumer.Config{Inbox: lru, MaxInFlight: 8})
	if err != nil {
		t.Fatal(err)
	}
	h := consumer.HandlerFunc(func(context.Context, eventkit.Event) error { return nil })
	for _, tc := range []struct {
		name string
		opt  consumer.RouteOption
		mode bool
	}{
		{"Strict without Sequencer", consumer.WithMode(consumer.Strict()), false},
		{"Batched without Batcher", consumer.WithMode(consumer.Batched(8, 0)), false},
		{"Batched(1)", consumer.WithMode(consumer.Batched(1, 0)), true},
		{"WithConcurrency(0)", consumer.WithConcurrency(0), false},
		{"Concurrency above the Config's MaxInFlight", consumer.WithConcurrency(9), false},
		{"WithMaxInFlight(0)", consumer.WithMaxInFlight(0), false},
		{"WithHandlerTimeout(0)", consumer.WithHandlerTimeout(0), false},
		{`WithDeadLetterTopic("")`, consumer.WithDeadLetterTopic(""), false},
		{"WithDeadLetterTopic(own topic)", consumer.WithDeadLetterTopic("orders"), false},
	} {
		err := c.Handle("orders", "g", h, tc.opt)
		if err == nil {
			t.Errorf("%s: Handle accepted it", tc.name)
			continue
		}
		if isMode(err) != tc.mode {
			t.Errorf("%s: %v: *ModeError %v, want %v", tc.name, err, isMode(err), tc.mode)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	// Refused routes were not registered.
	if err := c.Handle("orders", "g", h, consumer.WithConcurrency(8), consumer.WithDeadLetterTopic("orders.poison")); err != nil {
		t.Fatal(err)
	}
	sc, err := consumer.New(b, consumer.Config{Inbox: seqIn})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Handle("orders", "g", h, consumer.WithMode(consumer.Strict())); err != nil {
		t.Fatal(err)
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[consumer.Mode]string{
		consumer.Unordered():                     "unordered",
		{}:                                       "unordered",
		consumer.PerSubject():                    "per-subject",
		consumer.Strict():                        "strict",
		consumer.Batched(64, 2*time.Millisecond): "batched(64, 2ms)",
		consumer.PerSubjectBatched(8, 5*time.Millisecond): "per-subject-batched(8, 5ms)",
	} {
		if got := m.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

func TestModeBatch(t *testing.T) {
	for _, tc := range []struct {
		m    consumer.Mode
		size int
		wait time.Duration
	}{
		{consumer.Unordered(), 0, 0},
		{consumer.PerSubject(), 0, 0},
		{consumer.Strict(), 0, 0},
		{consumer.Batched(64, 5*time.Millisecond), 64, 5 * time.Millisecond},
		{consumer.PerSubjectBatched(8, 0), 8, 0},
	} {
		if size, wait := tc.m.Batch(); size != tc.size || wait != tc.wait {
			t.Errorf("%s: Batch() = %d, %s; want %d, %s", tc.m, size, wait, tc.size, tc.wait)
		}
	}
}
