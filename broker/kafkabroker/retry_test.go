package kafkabroker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

type got struct {
	id      string
	attempt int
	topic   string
	at      time.Time
	d       broker.Delivery
}

func collect(ch chan got, act func(d broker.Delivery) error) broker.Handler {
	return func(ctx context.Context, d broker.Delivery) error {
		ch <- got{id: d.Event().ID, attempt: d.Attempt(), topic: d.Topic(), at: time.Now(), d: d}
		if act == nil {
			return d.Ack(ctx)
		}
		return act(d)
	}
}

// subscribeG subscribes to topic in group "g" with collect(ch, act) on a
// new channel ch, and waits until the subscription has partitions.
func subscribeG(t *testing.T, b *Broker, topic string, act func(d broker.Delivery) error, opts ...broker.SubscribeOption) (broker.Subscription, chan got) {
	t.Helper()
	ch := make(chan got, 1000)
	sub, err := b.Subscribe(context.Background(), topic, "g", collect(ch, act), opts...)
	if err != nil {
		t.Fatal(err)
	}
	waitAssigned(t, sub)
	return sub, ch
}

// publishAll publishes evs to topic and waits for len(evs) deliveries on ch.
func publishAll(t *testing.T, b *Broker, topic string, evs []eventkit.Event, ch chan got) {
	t.Helper()
	if err := b.Publish(context.Background(), topic, evs...); err != nil {
		t.Fatal(err)
	}
	for range evs {
		next(t, ch)
	}
}

// noMore fails if ch gets a delivery within d.
func noMore(t *testing.T, ch chan got, d time.Duration, what string) {
	t.Helper()
	select {
	case g := <-ch:
		t.Fatalf("%s: %s attempt %d", what, g.id, g.attempt)
	case <-time.After(d):
	}
}

func next(t *testing.T, ch chan got) got {
	t.Helper()
	select {
	case g := <-ch:
		return g
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery")
		return got{}
	}
}

// onePartition returns options for a one-broker cluster with one partition
// per topic, and a broker on them closed with t.
func onePartition(t *testing.T) (Options, *Broker) {
	opts := testOptions(newCluster(t, 1))
	opts.Partitions = 1
	b := newBroker(t, opts)
	closeAll(t, b)
	return opts, b
}

func closeAll(t *testing.T, bs ...*Broker) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, b := range bs {
			_ = b.Close(ctx)
		}
	})
}

// Nack(delay) goes through the retry topic: attempts count up, each
// redelivery waits its delay, the original topic is kept, and the retry
// record carries the retry headers.
func TestRetryTopicAttemptsAndDelay(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	b := newBroker(t, testOptions(c))
	closeAll(t, b)
	ctx := context.Background()
	topic := testenv.Name("retry")
	const delay = 400 * time.Millisecond
	sub, ch := subscribeG(t, b, topic, func(d broker.Delivery) error {
		if d.Attempt() < 3 {
			return d.Nack(context.Background(), delay)
		}
		return d.Ack(context.Background())
	})
	ev := mkEvents(1, 1)[0]
	if err := b.Publish(ctx, topic, ev); err != nil {
		t.Fatal(err)
	}
	var prev time.Time
	for want := 1; want <= 3; want++ {
		g := next(t, ch)
		if g.id != ev.ID || g.attempt != want || g.topic != topic {
			t.Fatalf("delivery %d: id %s attempt %d topic %s", want, g.id, g.attempt, g.topic)
		}
		if want > 1 {
			if gap := g.at.Sub(prev); gap < delay*8/10 {
				t.Fatalf("attempt %d came %v after the nack, want >= %v", want, gap, delay)
			}
			rec := g.d.(*Delivery).Record()
			ri := parseRetry(rec.Headers, "")
			if rec.Topic != sub.(*Subscription).RetryTopic() || ri.topic != topic || ri.attempt != want {
				t.Fatalf("retry record on %s: headers say topic %q attempt %d", rec.Topic, ri.topic, ri.attempt)
			}
		}
		prev = g.at
	}
	noMore(t, ch, time.Second, "unexpected delivery")
}

// A delayed retry does not hold back the partition it came from, and a
// delivery left unsettled past its ack wait is redelivered (attempt 2)
// through the retry topic.
func TestAckWaitExpiry(t *testing.T) {
	t.Parallel()
	opts, b := onePartition(t)
	ctx := context.Background()
	topic := testenv.Name("expiry")
	evs := mkEvents(3, 1)
	sub, ch := subscribeG(t, b, topic, func(d broker.Delivery) error {
		if d.Event().ID == evs[0].ID && d.Attempt() == 1 {
			return nil // lost by the handler: never settled
		}
		return d.Ack(context.Background())
	}, broker.WithAckWait(500*time.Millisecond))
	if err := b.Publish(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	// The two behind the unsettled one are delivered at once.
	for i := range 3 {
		if g := next(t, ch); g.id != evs[i].ID || g.attempt != 1 {
			t.Fatalf("delivery %d: %s attempt %d", i, g.id, g.attempt)
		}
	}
	g := next(t, ch)
	if g.id != evs[0].ID || g.attempt != 2 {
		t.Fatalf("after the ack wait: %s attempt %d, want %s attempt 2", g.id, g.attempt, evs[0].ID)
	}
	// Everything settled: a new member of the group gets nothing.
	waitCommitted(t, sub.(*Subscription))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sub.Close(cctx); err != nil {
		t.Fatal(err)
	}
	b2 := newBroker(t, opts)
	closeAll(t, b2)
	_, ch2 := subscribeG(t, b2, topic, nil)
	noMore(t, ch2, time.Second, "redelivered after everything was settled")
}

// waitCommitted waits until no partition of s has unsettled records.
func waitCommitted(t *testing.T, s *Subscription) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "every record settled", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, st := range s.parts {
			if len(st.q) > 0 {
				return false
			}
		}
		return true
	})
}

// Offsets are committed only up to the first unsettled record: acking later
// records does not commit past an earlier unsettled one. A member taking
// over after a crash redelivers from it, with attempt 2.
func TestCommitIsContiguous(t *testing.T) {
	t.Parallel()
	opts, b1 := onePartition(t)
	ctx := context.Background()
	topic := testenv.Name("contig")
	evs := mkEvents(5, 1)
	sub, ch := subscribeG(t, b1, topic, func(d broker.Delivery) error {
		if d.Event().ID == evs[1].ID {
			return nil // held
		}
		return d.Ack(context.Background())
	}, broker.WithAckWait(time.Minute))
	publishAll(t, b1, topic, evs, ch)
	time.Sleep(3 * opts.CommitInterval) // let the committer run
	dead, cancel := context.WithCancel(ctx)
	cancel()
	_ = sub.Close(dead) // dies with evs[1] unsettled
	_ = b1.Close(dead)

	b2 := newBroker(t, opts)
	closeAll(t, b2)
	_, ch2 := subscribeG(t, b2, topic, nil)
	for i := 1; i < len(evs); i++ {
		g := next(t, ch2)
		if g.id != evs[i].ID || g.attempt != 2 {
			t.Fatalf("redelivery: %s attempt %d, want %s (event %d) attempt 2", g.id, g.attempt, evs[i].ID, i)
		}
	}
	noMore(t, ch2, 500*time.Millisecond, "unexpected delivery")
}

// With one partition, a single subscriber gets everything in publish order.
func TestOrderedSinglePartition(t *testing.T) {
	t.Parallel()
	_, b := onePartition(t)
	if !b.Capabilities().Ordered {
		t.Fatal("one partition should claim Ordered")
	}
	ctx := context.Background()
	topic := testenv.Name("ord")
	_, ch := subscribeG(t, b, topic, nil)
	evs := mkEvents(300, 7)
	for i := 0; i < len(evs); i += 30 {
		if err := b.Publish(ctx, topic, evs[i:i+30]...); err != nil {
			t.Fatal(err)
		}
	}
	for i := range evs {
		if g := next(t, ch); g.id != evs[i].ID {
			t.Fatalf("delivery %d is %s, want %s", i, g.id, evs[i].ID)
		}
	}
}

// An event over the record limit fails before anything is sent, with an
// error that names the limit; the valid events of the call are not sent
// either.
func TestTooLargeNamesLimit(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	opts := testOptions(c)
	opts.MaxMessageBytes = 4096
	b := newBroker(t, opts)
	closeAll(t, b)
	if b.Capabilities().MaxPayload != 4096 {
		t.Fatalf("MaxPayload = %d", b.Capabilities().MaxPayload)
	}
	small := mkEvents(1, 1)[0]
	big := eventkit.New("blob", "application/octet-stream", make([]byte, 5000))
	err := b.Publish(context.Background(), testenv.Name("big"), small, big)
	var se *eventkit.SizeError
	if !errors.Is(err, eventkit.ErrTooLarge) || !errors.As(err, &se) || se.Limit != 4096 || se.Where == "" {
		t.Fatalf("Publish = %v, want a SizeError naming the 4096-byte limit", err)
	}
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 2 || pe.Failed[1].Index != 1 || !errors.Is(pe.Failed[0].Err, broker.ErrNotSent) {
		t.Fatalf("want a PublishError naming event 1 too large and event 0 not sent, got %v", err)
	}
	// The broker's own limit is read at New.
	b2 := newBroker(t, testOptions(c))
	closeAll(t, b2)
	if got := b2.Capabilities().MaxPayload; got != DefaultMaxMessageBytes {
		t.Fatalf("MaxPayload from the broker = %d, want %d", got, DefaultMaxMessageBytes)
	}
}

// Records are keyed by subject and carry the CloudEvents Kafka binding.
func TestRecordMapping(t *testing.T) {
	e := eventkit.New("order.created", "application/json", []byte(`{}`), eventkit.WithSubject("order-1"),
		eventkit.WithExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	r := Record("orders", e)
	if string(r.Key) != "order-1" || string(r.Value) != "{}" {
		t.Fatalf("key %q value %q", r.Key, r.Value)
	}
	h := map[string]string{}
	for _, x := range r.Headers {
		h[x.Key] = string(x.Value)
	}
	if h["ce_id"] != e.ID || h["ce_specversion"] != "1.0" || h["content-type"] != "application/json" || h["ce_traceparent"] == "" {
		t.Fatalf("headers %v", h)
	}
	back, err := DecodeRecord(r)
	if err != nil || back.ID != e.ID || back.Subject != "order-1" {
		t.Fatalf("decode: %v %+v", err, back)
	}
	if _, err := DecodeRecord(&kgo.Record{Value: []byte("x")}); !errors.Is(err, eventkit.ErrDecode) {
		t.Fatalf("garbage decoded: %v", err)
	}
}

func TestNames(t *testing.T) {
	if got := DefaultGroupID("orders", "billing"); got != "billing@orders" {
		t.Fatal(got)
	}
	long := make([]byte, 200)
	for i := range long {
		long[i] = 'a'
	}
	rt := DefaultRetryTopic(string(long), string(long))
	if len(rt) > 249 || rt == DefaultRetryTopic(string(long), string(long[1:])) {
		t.Fatalf("retry topic %q (%d chars)", rt, len(rt))
	}
	if broker.ValidateName("topic", rt[:200]) != nil {
		t.Fatalf("retry topic %q has characters Kafka does not allow", rt)
	}
}

// crash stops s like a killed process: nothing more is committed (not even
// on the rebalance its leaving causes), nothing is settled.
func crash(s *Subscription) {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.noCommit, s.stopping, s.hard = true, true, true
		s.mu.Unlock()
		s.runCancel()
		<-s.runDone
		close(s.bgStop)
		<-s.bgDone
		s.hcancel()
		s.cl.Close()
		s.b.forget(s)
		close(s.done)
	})
}

// A member that dies right after records were handed to its handler (no
// final commit, no commit on leaving) has them redelivered with attempt 2:
// the delivered marker was committed before the handler saw them.
func TestCrashKeepsAttempts(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	opts := testOptions(c)
	opts.CommitInterval = time.Hour // nothing settled gets committed before the crash
	b1 := newBroker(t, opts)
	closeAll(t, b1)
	topic := testenv.Name("crash")
	evs := mkEvents(20, 5)
	sub, ch := subscribeG(t, b1, topic, func(d broker.Delivery) error {
		if d.Event().Subject == "agg-0" {
			return d.Ack(context.Background()) // settled, never committed
		}
		return nil // in flight at the crash
	}, broker.WithAckWait(time.Minute))
	publishAll(t, b1, topic, evs, ch)
	crash(sub.(*Subscription))

	b2 := newBroker(t, opts)
	closeAll(t, b2)
	_, ch2 := subscribeG(t, b2, topic, nil)
	// Every record in flight at the crash comes back with attempt 2; the
	// settled ones (agg-0) come back too unless a marker commit already
	// moved the offset past them.
	want := map[string]bool{}
	for _, e := range evs {
		if e.Subject != "agg-0" {
			want[e.ID] = true
		}
	}
	for len(want) > 0 {
		g := next(t, ch2)
		if g.attempt != 2 {
			t.Errorf("%s redelivered with attempt %d, want 2", g.id, g.attempt)
		}
		delete(want, g.id)
	}
}
