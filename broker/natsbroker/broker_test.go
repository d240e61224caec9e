package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/natsbroker/natsembed"
	"github.com/eventkit/eventkit/internal/testenv"
)

// TestMain checks for leaked goroutines. The embedded nats-server shuts down
// cleanly (Shutdown + WaitForShutdown): no goroutine needs to be ignored.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// topics hands out unique topic names and deletes their streams when the
// top-level test ends (after every subscription of its subtests is closed).
type topics struct {
	mu    sync.Mutex
	names []string
}

func (tp *topics) new(t *testing.T) string {
	name := testenv.Name("ekt")
	tp.mu.Lock()
	tp.names = append(tp.names, name)
	tp.mu.Unlock()
	return name
}

func (tp *topics) cleanup(t *testing.T, admin *natsbroker.Broker) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tp.mu.Lock()
		defer tp.mu.Unlock()
		for _, n := range tp.names {
			if err := admin.DeleteTopic(ctx, n); err != nil {
				t.Logf("delete stream of %s: %v", n, err)
			}
		}
	})
}

func connect(t testing.TB, url string) *natsbroker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := natsbroker.Connect(ctx, url, natsbroker.Options{Name: "eventkit-test"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func closeBroker(t testing.TB, b broker.Broker) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
}

// smallStream creates topic's stream with a max_msg_size of limit bytes,
// which the server enforces in its acks.
func smallStream(t *testing.T, admin *natsbroker.Broker, topic string, limit int32) {
	t.Helper()
	name := admin.StreamName(topic)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.JetStream().CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.MemoryStorage, MaxMsgSize: limit,
	}); err != nil {
		t.Fatal(err)
	}
}

func conformance(t *testing.T, newBroker func(t *testing.T) *natsbroker.Broker, admin *natsbroker.Broker, connect func(t *testing.T, opts natsbroker.Options) *natsbroker.Broker) {
	tp := &topics{}
	tp.cleanup(t, admin)
	brokertest.Run(t, brokertest.Config{
		New:              func(t *testing.T) broker.Broker { return newBroker(t) },
		Topic:            tp.new,
		DurableCheckedBy: "TestConformanceDurable",
		PublishRaw: func(t *testing.T, topic string, h map[string]string, body []byte) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return admin.PublishRaw(ctx, topic, h, body)
		},
		// The connection goes away under the subscription, which is not
		// closed (no unsubscribe, no settle).
		KillConnection: func(t *testing.T, b broker.Broker) { b.(*natsbroker.Broker).Conn().Close() },
		// A stream whose max_msg_size no event fits: the server rejects
		// every publish in its ack.
		FailingTopic: func(t *testing.T) string {
			topic := tp.new(t)
			smallStream(t, admin, topic, 1)
			return topic
		},
		// A stream taking messages up to 4 KiB, an 8 KiB event, and a
		// publish window of 1, so each ack is in before the next event.
		Reject: func(t *testing.T) brokertest.Reject {
			topic := tp.new(t)
			smallStream(t, admin, topic, 4<<10)
			b := connect(t, natsbroker.Options{PublishWindow: 1})
			closeBroker(t, b)
			return brokertest.Reject{Broker: b, Topic: topic, Poison: func(e *eventkit.Event) { e.Data = make([]byte, 8<<10) }}
		},
		// A client whose MaxEventSize is below the server's max_payload;
		// the admin client publishes past it.
		Limited: func(t *testing.T, limit int) (broker.Broker, func(string, map[string]string, []byte) error) {
			return connect(t, natsbroker.Options{MaxEventSize: limit}), func(topic string, h map[string]string, body []byte) error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return admin.PublishRaw(ctx, topic, h, body)
			}
		},
	})
}

// TestConformance runs the broker suite against the NATS server at
// testenv.NATS (127.0.0.1:4222 by default).
func TestConformance(t *testing.T) {
	url := testenv.NATS.URL(t)
	admin := connect(t, url)
	closeBroker(t, admin)
	conformance(t, func(t *testing.T) *natsbroker.Broker { return connect(t, url) }, admin,
		func(t *testing.T, opts natsbroker.Options) *natsbroker.Broker {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := natsbroker.Connect(ctx, url, opts)
			if err != nil {
				t.Fatal(err)
			}
			return b
		})
}

// TestConformanceEmbedded runs the broker suite against natsembed.Start.
func TestConformanceEmbedded(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{})
	conformance(t, func(t *testing.T) *natsbroker.Broker {
		b, err := e.Connect(context.Background(), natsbroker.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, e.Broker, func(t *testing.T, opts natsbroker.Options) *natsbroker.Broker {
		b, err := e.Connect(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func startEmbedded(t testing.TB, dir string, opts natsembed.Options) *natsembed.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := natsembed.Start(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

func mkEvents(n int) []eventkit.Event {
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("test.event", "application/json", fmt.Appendf(nil, `{"n":%d}`, i),
			eventkit.WithSubject(fmt.Sprintf("s-%d", i%7)), eventkit.WithSource("/natsbroker-test"))
	}
	return evs
}

// collect subscribes and returns a channel of acked events.
func collect(t *testing.T, b broker.Broker, topic, group string, opts ...broker.SubscribeOption) (<-chan broker.Delivery, broker.Subscription) {
	t.Helper()
	ch := make(chan broker.Delivery, 100000)
	sub, err := b.Subscribe(context.Background(), topic, group, func(ctx context.Context, d broker.Delivery) error {
		ch <- d
		return d.Ack(ctx)
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sub.Close(ctx)
	})
	return ch, sub
}

// TestNativeDedupe publishes the same events twice (as an outbox relay does
// after a crash between publish and mark-delivered): the group sees each
// once, because Nats-Msg-Id is the event id.
func TestNativeDedupe(t *testing.T) {
	url := testenv.NATS.URL(t)
	b := connect(t, url)
	closeBroker(t, b)
	topic := testenv.Name("ekt")
	t.Cleanup(func() { _ = b.DeleteTopic(context.Background(), topic) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !b.Capabilities().NativeDedupe {
		t.Fatal("NativeDedupe not claimed")
	}
	evs := mkEvents(20)
	if err := b.Publish(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	// The same events again, in another order, through another connection,
	// mixed with new ones.
	b2 := connect(t, url)
	closeBroker(t, b2)
	fresh := mkEvents(5)
	again := append([]eventkit.Event{evs[19], evs[3], fresh[0]}, evs[:10]...)
	again = append(again, fresh[1:]...)
	if err := b2.Publish(ctx, topic, again...); err != nil {
		t.Fatalf("re-publish: %v", err)
	}
	ch, _ := collect(t, b, topic, "g")
	seen := map[string]int{}
	deadline := time.After(10 * time.Second)
	for len(seen) < 25 {
		select {
		case d := <-ch:
			seen[d.Event().ID]++
		case <-deadline:
			t.Fatalf("got %d distinct events of 25", len(seen))
		}
	}
	select {
	case d := <-ch:
		t.Fatalf("duplicate delivery of %s", d.Event().ID)
	case <-time.After(time.Second):
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	info, err := b.JetStream().Stream(ctx, b.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != 25 {
		t.Errorf("stream holds %d messages, want 25", got)
	}
}

// TestTooLargeNamesLimit checks that an event over the server's
// max_payload fails before anything is sent, naming the limit.
func TestTooLargeNamesLimit(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{MaxPayload: 64 << 10, InProcessOnly: true})
	b := e.Broker
	if got := b.Capabilities().MaxPayload; got != 64<<10 {
		t.Fatalf("MaxPayload = %d, want %d", got, 64<<10)
	}
	ctx := context.Background()
	topic := testenv.Name("ekt")
	ok := eventkit.New("blob", "application/octet-stream", make([]byte, 60<<10))
	// Under the limit by eventkit's estimate, over it once headers are encoded.
	edge := eventkit.New("blob", "application/octet-stream", make([]byte, 64<<10-100), eventkit.WithExtension("pad", string(make([]byte, 0))))
	edge.Extensions = map[string]string{"padding": "0123456789012345678901234567890123456789"}
	err := b.Publish(ctx, topic, ok, edge)
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 2 || pe.Failed[1].Index != 1 || !errors.Is(pe.Failed[1].Err, eventkit.ErrTooLarge) ||
		!errors.Is(pe.Failed[0].Err, broker.ErrNotSent) {
		t.Fatalf("Publish = %v, want event 1 too large and event 0 not sent", err)
	}
	var se *eventkit.SizeError
	if !errors.As(err, &se) || se.Limit != 64<<10 || se.Where == "" {
		t.Fatalf("size error %#v does not name the limit", se)
	}
	t.Log(err)
	huge := eventkit.New("blob", "application/octet-stream", make([]byte, 1<<20))
	if err := b.Publish(ctx, topic, huge); !errors.As(err, &se) || se.Limit != 64<<10 {
		t.Fatalf("Publish(1 MiB) = %v", err)
	}
	ch, _ := collect(t, b, topic, "g")
	if err := b.Publish(ctx, topic, ok); err != nil {
		t.Fatal(err)
	}
	if d := <-ch; d.Event().ID != ok.ID {
		t.Fatalf("first delivery %s, want %s: part of a failed batch was sent", d.Event().ID, ok.ID)
	}
}

// TestConnectionClosedUnderSubscription closes the NATS connection under a
// running subscription that holds unsettled deliveries: the subscription
// stops with an error, and another subscriber of the group gets every event
// (attempt >= 2 for those that were in flight).
func TestConnectionClosedUnderSubscription(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{InProcessOnly: true})
	ctx := context.Background()
	b1, err := e.Connect(ctx, natsbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	closeBroker(t, b1)
	topic := testenv.Name("ekt")
	held := make(chan broker.Delivery, 100)
	sub, err := b1.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		held <- d // never settled
		return nil
	}, broker.WithMaxInFlight(10), broker.WithAckWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	evs := mkEvents(30)
	if err := e.Broker.Publish(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		<-held
	}
	b1.Conn().Close() // the connection dies under the subscription
	select {
	case <-sub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("subscription did not stop when its connection closed")
	}
	if sub.Err() == nil {
		t.Error("Err() = nil after the connection closed")
	}
	t.Logf("stopped with: %v", sub.Err())
	if err := b1.Publish(ctx, topic, mkEvents(1)...); err == nil {
		t.Error("Publish on a closed connection succeeded")
	}
	ch, _ := collect(t, e.Broker, topic, "g", broker.WithAckWait(time.Second))
	seen := map[string]int{}
	deadline := time.After(20 * time.Second)
	for len(seen) < len(evs) {
		select {
		case d := <-ch:
			seen[d.Event().ID] = d.Attempt()
		case <-deadline:
			t.Fatalf("got %d of %d events after the connection closed", len(seen), len(evs))
		}
	}
	redelivered := 0
	for _, a := range seen {
		if a >= 2 {
			redelivered++
		}
	}
	if redelivered < 10 {
		t.Errorf("%d events came with attempt >= 2, want at least the 10 in flight", redelivered)
	}
}

// TestPublishContextCancelled: a cancelled ctx fails the events of the call
// with the ctx error and sends nothing.
func TestPublishContextCancelled(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{InProcessOnly: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	evs := mkEvents(3)
	err := e.Broker.Publish(ctx, "t", evs...)
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 3 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish(cancelled) = %v", err)
	}
}

func TestDisableDedupe(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{InProcessOnly: true})
	ctx := context.Background()
	b, err := e.Connect(ctx, natsbroker.Options{DisableDedupe: true, Stream: natsbroker.StreamOptions{Storage: 1}})
	if err != nil {
		t.Fatal(err)
	}
	closeBroker(t, b)
	c := b.Capabilities()
	if c.NativeDedupe || c.Durable {
		t.Fatalf("capabilities %+v: want no dedupe, not durable (memory storage)", c)
	}
	ev := mkEvents(1)
	for range 2 {
		if err := b.Publish(ctx, "t", ev...); err != nil {
			t.Fatal(err)
		}
	}
	s, err := b.JetStream().Stream(ctx, b.StreamName("t"))
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("stream holds %d messages, want 2 (no dedupe)", n)
	}
}

// TestCloseCancelsStuckHandler: when Close's ctx ends while the handler is
// still running, the handler's ctx is cancelled and Close returns.
func TestCloseCancelsStuckHandler(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{InProcessOnly: true})
	ctx := context.Background()
	started := make(chan struct{})
	sub, err := e.Broker.Subscribe(ctx, "t", "g", func(ctx context.Context, d broker.Delivery) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Broker.Publish(ctx, "t", mkEvents(1)...); err != nil {
		t.Fatal(err)
	}
	<-started
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	done := make(chan error)
	go func() { done <- sub.Close(cctx) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after its ctx ended")
	}
}

// TestExistingStream: a stream that already exists for the topic with
// other settings is used as it is; one with the topic's name but other
// subjects is reported, not silently used.
func TestExistingStream(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{InProcessOnly: true})
	ctx := context.Background()
	b := e.Broker
	js := b.JetStream()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "mine", Subjects: []string{"mine.>"}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "mine", mkEvents(1)...); err != nil {
		t.Fatalf("Publish to an existing stream with other settings: %v", err)
	}
	s, _ := js.Stream(ctx, "mine")
	if s.CachedInfo().Config.MaxAge != time.Hour {
		t.Error("the existing stream's settings were changed")
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "other", Subjects: []string{"elsewhere"}}); err != nil {
		t.Fatal(err)
	}
	err := b.Publish(ctx, "other", mkEvents(1)...)
	if err == nil || !strings.Contains(err.Error(), "does not take subject") {
		t.Fatalf("Publish to a stream with foreign subjects = %v", err)
	}
}

// TestTopicDeletedUnderSubscription: deleting the stream (and so the
// consumer) stops the subscription with an error instead of leaving it
// waiting forever.
func TestTopicDeletedUnderSubscription(t *testing.T) {
	// A short pull expiry: heartbeats every second notice a lost pull.
	e := startEmbedded(t, t.TempDir(), natsembed.Options{InProcessOnly: true, Broker: natsbroker.Options{PullExpiry: 2 * time.Second}})
	ctx := context.Background()
	_, sub := collect(t, e.Broker, "t", "g")
	if err := e.Broker.DeleteTopic(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Done():
		t.Logf("stopped with: %v", sub.Err())
		if sub.Err() == nil {
			t.Error("Err() = nil")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("subscription still running after its stream was deleted")
	}
}

// TestPublishChainedHoldsSubjectBehindFailure: the server rejects a1 (over
// the stream's max_msg_size) in its ack. PublishChained sends a subject's
// next event only after the ack of the one before it, so a2 and a3 fail
// with ErrNotSent and never reach the stream, while b1 and b2 (another
// subject, in flight meanwhile) are stored. Publish pipelines instead: a2
// is sent before a1's rejection is back, and the stream would hold it.
func TestPublishChainedHoldsSubjectBehindFailure(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{InProcessOnly: true})
	ctx := context.Background()
	b := e.Broker
	const topic = "chained"
	smallStream(t, b, topic, 4<<10)
	ev := func(subject string, size int) eventkit.Event {
		return eventkit.New("test.event", "application/octet-stream", make([]byte, size), eventkit.WithSubject(subject))
	}
	a1, a2, b1, a3, b2 := ev("a", 8<<10), ev("a", 10), ev("b", 10), ev("a", 10), ev("b", 10)
	err := b.PublishChained(ctx, topic, a1, a2, b1, a3, b2)
	var pe *broker.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("PublishChained = %v, want a *PublishError", err)
	}
	failed := map[int]error{}
	for _, f := range pe.Failed {
		failed[f.Index] = f.Err
	}
	if len(failed) != 3 || failed[0] == nil || errors.Is(failed[0], broker.ErrNotSent) ||
		!errors.Is(failed[1], broker.ErrNotSent) || !errors.Is(failed[3], broker.ErrNotSent) {
		t.Fatalf("PublishChained = %v, want a1 rejected, a2 and a3 not sent, b1 and b2 stored", err)
	}
	s, err := b.JetStream().Stream(ctx, b.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, m.Header.Get("ce-id"))
	}
	if want := []string{b1.ID, b2.ID}; !slices.Equal(stored, want) {
		t.Fatalf("stream holds %v, want only b1, b2 %v", stored, want)
	}
	// A chain that goes through keeps every event of a subject in order
	// (events of different subjects may leave in another order: one
	// waiting for its subject's ack does not hold up the others).
	var evs []eventkit.Event
	want := map[string][]string{"b": {b1.ID, b2.ID}}
	for i := range 300 {
		e := ev(fmt.Sprint("s", i%3), 10)
		if i%7 == 0 {
			e = ev("", 10) // no subject: never held
		}
		evs = append(evs, e)
		want[e.Subject] = append(want[e.Subject], e.ID)
	}
	if err := b.PublishChained(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	ch, _ := collect(t, b, topic, "g")
	got := map[string][]string{}
	for range 2 + len(evs) {
		e := (<-ch).Event()
		got[e.Subject] = append(got[e.Subject], e.ID)
	}
	for subject, ids := range want {
		if subject != "" && !slices.Equal(got[subject], ids) {
			t.Fatalf("subject %q delivered as %v, want publish order %v", subject, got[subject], ids)
		}
		if len(got[subject]) != len(ids) {
			t.Fatalf("subject %q: %d delivered, want %d", subject, len(got[subject]), len(ids))
		}
	}
}

// TestClientWindow: with Options.MaxAckPending above MaxInFlight the server
// would deliver more, so the subscription's own window holds the handler
// to MaxInFlight unsettled deliveries: never more while nothing is
// settled, and one more per delivery settled.
func TestClientWindow(t *testing.T) {
	e := startEmbedded(t, t.TempDir(), natsembed.Options{InProcessOnly: true, Broker: natsbroker.Options{MaxAckPending: 1000}})
	ctx := context.Background()
	const limit = 5
	held := make(chan broker.Delivery, 100)
	sub, err := e.Broker.Subscribe(ctx, "t", "g", func(ctx context.Context, d broker.Delivery) error {
		held <- d // settled below
		return nil
	}, broker.WithMaxInFlight(limit))
	if err != nil {
		t.Fatal(err)
	}
	var got []broker.Delivery
	defer func() { // settle everything, so that Close does not wait
		for _, d := range got {
			_ = d.Ack(ctx)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = sub.Close(cctx)
	}()
	if err := e.Broker.Publish(ctx, "t", mkEvents(30)...); err != nil {
		t.Fatal(err)
	}
	take := func(n int) {
		t.Helper()
		for range n {
			select {
			case d := <-held:
				got = append(got, d)
			case <-time.After(10 * time.Second):
				t.Fatalf("got %d deliveries, want %d", len(got), n)
			}
		}
		select {
		case d := <-held:
			got = append(got, d)
			t.Fatalf("delivery %d beyond the window of %d (%d settled)", len(got), limit, len(got)-1-limit)
		case <-time.After(500 * time.Millisecond):
		}
	}
	take(limit)
	for _, d := range got[:2] {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	take(2)
}
