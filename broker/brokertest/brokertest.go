// Package brokertest is the conformance suite that every broker adapter
// runs. Guarantee: an adapter that passes Run keeps the common contract of
// package broker against a real server (or the in-memory broker), and every
// optional guarantee its Capabilities declare.
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Config{
//			New: func(t *testing.T) broker.Broker { return newBroker(t) },
//		})
//	}
//
// Capabilities.Durable is checked by RunDurable, across a restart of a
// server the test owns; Run, whose cases share the server, fails for a
// broker claiming Durable unless Config.DurableCheckedBy names the test
// that does.
//
// Limits: a guarantee the Capabilities do not declare is not checked, and
// the cases whose Config hook is unset (FailingTopic, Reject,
// KillConnection) are skipped.
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// Config tells the suite how to make brokers.
type Config struct {
	// New returns a new broker (client) for the test. Several may be made in
	// one test (competing consumers). The suite closes each one it makes.
	New func(t *testing.T) broker.Broker
	// Topic returns a topic name no other test uses (default testenv.Name("ekt")).
	Topic func(t *testing.T) string
	// AckWait is passed to subscriptions in tests that wait for an unacked
	// delivery to come back (default 2s).
	AckWait time.Duration
	// PublishRaw, if set, publishes body (with optional headers) to topic as
	// a foreign tool would, bypassing eventkit's encoding. The suite then
	// checks that garbage arrives as a delivery with DecodeErr and does not
	// stall the subscription.
	PublishRaw func(t *testing.T, topic string, headers map[string]string, body []byte) error
	// Limited, if set, returns a broker (client) whose size limit, on
	// publish and on consume, is limit bytes, and a function that publishes
	// body (with optional headers) to a topic of the same server as a
	// foreign tool would, past that limit (the server's own limit must be
	// larger). The OversizedMessage case is skipped without it.
	Limited func(t *testing.T, limit int) (broker.Broker, func(topic string, headers map[string]string, body []byte) error)
	// Timeout bounds each wait for deliveries (default 30s).
	Timeout time.Duration
	// Setup, if set, runs before a subscription is used in a test, after it
	// was made (e.g. to wait for a consumer group to be assigned partitions).
	Settle func(t *testing.T, sub broker.Subscription)
	// FailingTopic, if set, returns a topic to which this broker fails every
	// publish, event by event, at the broker (not in validation): RabbitMQ
	// a topic with no queue bound (unroutable), Redis a key holding another
	// type, NATS a stream whose max_msg_size no event fits. The concurrent
	// failure cases publish to it beside good topics.
	FailingTopic func(t *testing.T) string
	// Reject, if set, sets up a broker and topic on which one event can be
	// made to fail at the broker (see Reject); the PartialFailureOrder case
	// is skipped without it.
	Reject func(t *testing.T) Reject
	// KillConnection, if set, drops b's connection to the server as a
	// crash would (no unsubscribe, no close of its subscriptions). The
	// ConnectionDropRedelivers case is skipped without it.
	KillConnection func(t *testing.T, b broker.Broker)
	// Restart restarts the server, keeping its data, and returns when it
	// is back. Only RunDurable uses it (Run's cases share the server).
	Restart func(t *testing.T)
	// DurableCheckedBy names the test that checks Capabilities.Durable
	// with RunDurable on a server of its own, for a Config whose server
	// cannot be restarted (a shared one). Run's Capabilities/Durable case
	// fails for a broker claiming Durable when it is empty.
	DurableCheckedBy string
}

func (c *Config) defaults() {
	if c.Topic == nil {
		c.Topic = func(*testing.T) string { return testenv.Name("ekt") }
	}
	if c.AckWait == 0 {
		c.AckWait = 2 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Settle == nil {
		c.Settle = func(*testing.T, broker.Subscription) {}
	}
}

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, cfg Config) {
	cfg.defaults()
	s := &suite{cfg: cfg}
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"RoundTripEveryField", s.roundTrip},
		{"InvalidEventRejected", s.invalid},
		{"NackRedeliversWithAttempt", s.nack},
		{"NackWithDelay", s.nackDelay},
		{"TermIsFinal", s.term},
		{"HandlerErrorNacks", s.handlerError},
		{"CrashWithoutAckRedelivers", s.crash},
		{"CompetingConsumersShare", s.competing},
		{"TwoGroupsEachGetAll", s.twoGroups},
		{"Order", s.order},
		{"OrderPerSubject", s.orderPerSubject},
		{"Backpressure", s.backpressure},
		{"ContextCancelStops", s.cancel},
		{"CloseWaitsForHandler", s.closeWaits},
		{"CloseHandsBackUnsettled", s.closeHandBack},
		{"PublishAfterClose", s.publishAfterClose},
		{"ConcurrentCloseWaits", s.concurrentClose},
		{"LargePayload", s.large},
		{"ConcurrentPublishers", s.concurrentPublishers},
		{"ConcurrentPublishFailures", s.concurrentPublishFailures},
		{"PartialFailureOrder", s.partialFailureOrder},
		{"ForeignMessage", s.foreign},
		{"OversizedMessage", s.oversized},
		{"NamesDoNotCollide", s.namesDoNotCollide},
		{"HostileNamesRejected", s.hostileNames},
		{"Capabilities", s.capabilities},
		{"ProvisionKeepsEventsForGroups", s.provisioning},
		{"CloseWaitsForLaterSettle", s.closeWaitsForLaterSettle},
		{"ConnectionDropRedelivers", s.connectionDrop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct{ cfg Config }

func (s *suite) broker(t *testing.T) broker.Broker {
	t.Helper()
	b := s.cfg.New(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// received is one delivery as seen by a collecting handler.
type received struct {
	ev      eventkit.Event
	err     error
	attempt int
	d       broker.Delivery
}

// collector is a handler that records deliveries and settles them as act says.
type collector struct {
	ch  chan received
	act func(d broker.Delivery) error // nil: ack
}

func newCollector(act func(d broker.Delivery) error) *collector {
	return &collector{ch: make(chan received, 100000), act: act}
}

func (c *collector) handle(ctx context.Context, d broker.Delivery) error {
	ev := d.Event().Clone()
	c.ch <- received{ev: ev, err: d.DecodeErr(), attempt: d.Attempt(), d: d}
	if c.act == nil {
		return d.Ack(ctx)
	}
	return c.act(d)
}

func (s *suite) subscribe(t *testing.T, ctx context.Context, b broker.Broker, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) broker.Subscription {
	t.Helper()
	sub, err := b.Subscribe(ctx, topic, group, h, opts...)
	if err != nil {
		t.Fatalf("Subscribe(%s, %s): %v", topic, group, err)
	}
	t.Cleanup(func() {
		// Tests may leave deliveries unsettled on purpose: wait briefly.
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = sub.Close(cctx)
	})
	s.cfg.Settle(t, sub)
	return sub
}

// wait receives n deliveries or fails the test.
func (s *suite) wait(t *testing.T, c *collector, n int) []received {
	t.Helper()
	out := make([]received, 0, n)
	timeout := time.NewTimer(s.cfg.Timeout)
	defer timeout.Stop()
	for len(out) < n {
		select {
		case r := <-c.ch:
			out = append(out, r)
		case <-timeout.C:
			t.Fatalf("got %d deliveries of %d after %v", len(out), n, s.cfg.Timeout)
		}
	}
	return out
}

// quiet checks that no delivery arrives within d.
func quiet(t *testing.T, c *collector, d time.Duration) {
	t.Helper()
	select {
	case r := <-c.ch:
		t.Fatalf("unexpected delivery of %s (attempt %d)", r.ev.ID, r.attempt)
	case <-time.After(d):
	}
}

func mkEvents(n int, subject func(i int) string) []eventkit.Event {
	evs := make([]eventkit.Event, n)
	for i := range evs {
		sub := ""
		if subject != nil {
			sub = subject(i)
		}
		evs[i] = eventkit.New("test.event", "application/json", fmt.Appendf(nil, `{"n":%d}`, i),
			eventkit.WithSubject(sub), eventkit.WithSource("/brokertest"))
	}
	return evs
}

func (s *suite) publish(t *testing.T, ctx context.Context, b broker.Broker, topic string, evs ...eventkit.Event) {
	t.Helper()
	if err := b.Publish(ctx, topic, evs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

// publishAwait publishes evs to topic and waits, up to the suite's Timeout
// for each, for one signal on delivered per event (sent, or closed, by the
// handler when it has the delivery); it fails the test with what if one
// does not come.
func (s *suite) publishAwait(t *testing.T, ctx context.Context, b broker.Broker, topic string, delivered <-chan struct{}, what string, evs ...eventkit.Event) {
	t.Helper()
	s.publish(t, ctx, b, topic, evs...)
	for range evs {
		select {
		case <-delivered:
		case <-time.After(s.cfg.Timeout):
			t.Fatal(what)
		}
	}
}

func (s *suite) roundTrip(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	c := newCollector(nil)
	s.subscribe(t, ctx, b, topic, "g", c.handle)
	data := []byte{0, 1, 2, 0xff, 'x', '"', '\n'}
	want := eventkit.Event{
		ID: eventkit.NewID(), Type: "order.created", Source: "/orders/eu-1", Subject: "order-42",
		Time:        time.Date(2026, 11, 29, 10, 11, 12, 123456789, time.UTC),
		DataVersion: "3", DataContentType: "application/octet-stream", DataSchema: "https://example.com/schemas/order.created/3",
		Data:       data,
		Extensions: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "correlationid": "c-1", "causationid": "ä-ü"},
	}
	json := eventkit.New("order.shipped", "application/json", []byte(`{"order_id":"o-1","carrier":"DHL"}`), eventkit.WithSubject("order-42"))
	s.publish(t, ctx, b, topic, want, json)
	got := s.wait(t, c, 2)
	for i, w := range []eventkit.Event{want, json} {
		var g *received
		for j := range got {
			if got[j].ev.ID == w.ID {
				g = &got[j]
			}
		}
		if g == nil {
			t.Fatalf("event %d (%s) not received", i, w.ID)
		}
		if g.err != nil {
			t.Fatalf("DecodeErr: %v", g.err)
		}
		if g.attempt != 1 {
			t.Errorf("attempt = %d, want 1", g.attempt)
		}
		if g.d.Topic() != topic {
			t.Errorf("Topic() = %q, want %q", g.d.Topic(), topic)
		}
		assertEqual(t, g.ev, w)
	}
}

func assertEqual(t *testing.T, got, want eventkit.Event) {
	t.Helper()
	if got.ID != want.ID || got.Type != want.Type || got.Source != want.Source || got.Subject != want.Subject ||
		got.DataVersion != want.DataVersion || got.DataContentType != want.DataContentType || got.DataSchema != want.DataSchema {
		t.Errorf("attributes differ:\n got  %+v\n want %+v", got, want)
	}
	if !got.Time.Equal(want.Time) {
		t.Errorf("time = %v, want %v", got.Time, want.Time)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Errorf("data = %q, want %q", got.Data, want.Data)
	}
	if len(got.Extensions) != len(want.Extensions) {
		t.Errorf("extensions = %v, want %v", got.Extensions, want.Extensions)
	}
	for k, v := range want.Extensions {
		if got.Extensions[k] != v {
			t.Errorf("extension %s = %q, want %q", k, got.Extensions[k], v)
		}
	}
}

func (s *suite) invalid(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	c := newCollector(nil)
	s.subscribe(t, ctx, b, topic, "g", c.handle)
	good := mkEvents(1, nil)[0]
	bad := good
	bad.ID, bad.Type = eventkit.NewID(), ""
	err := b.Publish(ctx, topic, good, bad)
	if !errors.Is(err, eventkit.ErrInvalidEvent) {
		t.Fatalf("Publish(invalid) = %v, want ErrInvalidEvent", err)
	}
	var pe *broker.PublishError
	// Nothing of the call is sent, so both events are named: the invalid
	// one with its error, the other as not sent.
	if !errors.As(err, &pe) || len(pe.Failed) != 2 || pe.Failed[1].Index != 1 ||
		!errors.Is(pe.Failed[0].Err, broker.ErrNotSent) || !errors.Is(pe.Failed[1].Err, eventkit.ErrInvalidEvent) {
		t.Fatalf("want a *PublishError naming event 0 as not sent and event 1 as invalid, got %#v", err)
	}
	// Nothing of the call was sent: the next event is the first delivery.
	next := mkEvents(1, nil)[0]
	s.publish(t, ctx, b, topic, next)
	got := s.wait(t, c, 1)
	if got[0].ev.ID != next.ID {
		t.Fatalf("first delivery is %s, want %s (part of an invalid batch was sent)", got[0].ev.ID, next.ID)
	}
	if err := b.Publish(ctx, "bad topic!", next); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Errorf("Publish to a bad topic name = %v, want ErrInvalidTopic", err)
	}
}

func (s *suite) nack(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	c := newCollector(func(d broker.Delivery) error {
		if d.Attempt() < 3 {
			return d.Nack(context.Background(), 0)
		}
		return d.Ack(context.Background())
	})
	s.subscribe(t, ctx, b, topic, "g", c.handle, broker.WithAckWait(s.cfg.AckWait))
	ev := mkEvents(1, nil)[0]
	s.publish(t, ctx, b, topic, ev)
	got := s.wait(t, c, 3)
	for i, r := range got {
		if r.ev.ID != ev.ID || r.attempt != i+1 {
			t.Fatalf("delivery %d: id %s attempt %d, want %s attempt %d", i, r.ev.ID, r.attempt, ev.ID, i+1)
		}
	}
	quiet(t, c, s.cfg.AckWait+500*time.Millisecond)
	if err := got[2].d.Ack(ctx); !errors.Is(err, broker.ErrAlreadySettled) {
		t.Errorf("second Ack = %v, want ErrAlreadySettled", err)
	}
}

func (s *suite) nackDelay(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	const delay = 1500 * time.Millisecond
	evs := mkEvents(2, nil)
	var mu sync.Mutex
	var nackedAt time.Time
	c := newCollector(func(d broker.Delivery) error {
		if d.Event().ID == evs[0].ID && d.Attempt() == 1 {
			mu.Lock()
			nackedAt = time.Now()
			mu.Unlock()
			return d.Nack(context.Background(), delay)
		}
		return d.Ack(context.Background())
	})
	s.subscribe(t, ctx, b, topic, "g", c.handle, broker.WithAckWait(10*time.Second))
	s.publish(t, ctx, b, topic, evs[0])
	s.wait(t, c, 1)
	s.publish(t, ctx, b, topic, evs[1])
	// The delayed event does not block the one behind it.
	second := s.wait(t, c, 1)[0]
	if second.ev.ID != evs[1].ID {
		t.Fatalf("event behind a delayed nack not delivered first: got %s attempt %d", second.ev.ID, second.attempt)
	}
	re := s.wait(t, c, 1)[0]
	mu.Lock()
	elapsed := time.Since(nackedAt)
	mu.Unlock()
	if re.ev.ID != evs[0].ID || re.attempt != 2 {
		t.Fatalf("redelivery: %s attempt %d, want %s attempt 2", re.ev.ID, re.attempt, evs[0].ID)
	}
	if elapsed < delay*8/10 {
		t.Fatalf("redelivered %v after Nack(%v)", elapsed, delay)
	}
}

func (s *suite) term(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	c := newCollector(func(d broker.Delivery) error { return d.Term(context.Background()) })
	s.subscribe(t, ctx, b, topic, "g", c.handle, broker.WithAckWait(s.cfg.AckWait))
	s.publish(t, ctx, b, topic, mkEvents(1, nil)...)
	s.wait(t, c, 1)
	quiet(t, c, s.cfg.AckWait+time.Second)
}

func (s *suite) handlerError(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	var calls sync.Map
	h := func(ctx context.Context, d broker.Delivery) error {
		calls.Store(d.Attempt(), true)
		if d.Attempt() == 1 {
			return errors.New("transient")
		}
		if d.Attempt() == 2 {
			return eventkit.Permanent(errors.New("never"))
		}
		return d.Ack(ctx)
	}
	c := newCollector(nil)
	wrapped := func(ctx context.Context, d broker.Delivery) error {
		c.ch <- received{ev: d.Event(), attempt: d.Attempt(), d: d}
		return h(ctx, d)
	}
	s.subscribe(t, ctx, b, topic, "g", wrapped, broker.WithAckWait(s.cfg.AckWait))
	s.publish(t, ctx, b, topic, mkEvents(1, nil)...)
	got := s.wait(t, c, 2)
	if got[1].attempt != 2 {
		t.Fatalf("after a returned error: attempt %d, want 2", got[1].attempt)
	}
	// A permanent error terms the delivery: no third attempt.
	quiet(t, c, s.cfg.AckWait+time.Second)
}

func (s *suite) crash(t *testing.T) {
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	b1, b2 := s.broker(t), s.broker(t)
	hold := newCollector(func(broker.Delivery) error { return nil }) // never settles
	sub1 := s.subscribe(t, ctx, b1, topic, "g", hold.handle, broker.WithAckWait(s.cfg.AckWait), broker.WithMaxInFlight(100))
	evs := mkEvents(10, func(i int) string { return fmt.Sprintf("s%d", i) })
	s.publish(t, ctx, b1, topic, evs...)
	s.wait(t, hold, len(evs))
	// The subscriber "dies": its subscription and connection go away
	// without settling anything.
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	_ = sub1.Close(dead)
	_ = b1.Close(dead)
	c := newCollector(nil)
	s.subscribe(t, ctx, b2, topic, "g", c.handle, broker.WithAckWait(s.cfg.AckWait))
	got := s.wait(t, c, len(evs))
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.ev.ID] = true
		if r.attempt < 2 {
			t.Errorf("redelivered %s with attempt %d, want >= 2", r.ev.ID, r.attempt)
		}
	}
	for _, e := range evs {
		if !seen[e.ID] {
			t.Errorf("event %s lost after the subscriber died", e.ID)
		}
	}
}

func (s *suite) competing(t *testing.T) {
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	b1, b2 := s.broker(t), s.broker(t)
	c := newCollector(nil)
	var mu sync.Mutex
	per := map[int]int{}
	mk := func(k int) broker.Handler {
		return func(ctx context.Context, d broker.Delivery) error {
			mu.Lock()
			per[k]++
			mu.Unlock()
			time.Sleep(time.Millisecond) // give the other subscriber a chance
			return c.handle(ctx, d)
		}
	}
	s.subscribe(t, ctx, b1, topic, "g", mk(1))
	s.subscribe(t, ctx, b2, topic, "g", mk(2))
	const n = 400
	evs := mkEvents(n, func(i int) string { return fmt.Sprintf("subject-%d", i%40) })
	s.publish(t, ctx, b1, topic, evs...)
	got := s.wait(t, c, n)
	seen := map[string]int{}
	for _, r := range got {
		seen[r.ev.ID]++
	}
	for _, e := range evs {
		if seen[e.ID] == 0 {
			t.Fatalf("event %s not delivered", e.ID)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if per[1] == 0 || per[2] == 0 {
		t.Errorf("work not shared between competing consumers: %v", per)
	}
	t.Logf("share: %v, duplicates: %d", per, len(got)-len(seen))
}

func (s *suite) twoGroups(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	ca, cb := newCollector(nil), newCollector(nil)
	s.subscribe(t, ctx, b, topic, "ga", ca.handle)
	s.subscribe(t, ctx, b, topic, "gb", cb.handle)
	evs := mkEvents(50, nil)
	s.publish(t, ctx, b, topic, evs...)
	for _, c := range []*collector{ca, cb} {
		got := s.wait(t, c, len(evs))
		seen := map[string]bool{}
		for _, r := range got {
			seen[r.ev.ID] = true
		}
		if len(seen) != len(evs) {
			t.Fatalf("a group got %d distinct events of %d", len(seen), len(evs))
		}
	}
}

func (s *suite) order(t *testing.T) {
	b := s.broker(t)
	if !b.Capabilities().Ordered {
		t.Skip("broker does not claim ordered delivery")
	}
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	c := newCollector(nil)
	s.subscribe(t, ctx, b, topic, "g", c.handle)
	evs := mkEvents(500, func(int) string { return "one-subject" })
	for i := 0; i < len(evs); i += 50 {
		s.publish(t, ctx, b, topic, evs[i:i+50]...)
	}
	got := s.wait(t, c, len(evs))
	for i, r := range got {
		if r.ev.ID != evs[i].ID {
			t.Fatalf("delivery %d is %s, want %s: out of order", i, r.ev.ID, evs[i].ID)
		}
	}
}

func (s *suite) orderPerSubject(t *testing.T) {
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	b1, b2 := s.broker(t), s.broker(t)
	if !b1.Capabilities().OrderedPerSubject {
		t.Skip("broker does not claim per-subject order across competing consumers")
	}
	c := newCollector(nil)
	s.subscribe(t, ctx, b1, topic, "g", c.handle)
	s.subscribe(t, ctx, b2, topic, "g", c.handle)
	evs := mkEvents(600, func(i int) string { return fmt.Sprintf("agg-%d", i%12) })
	s.publish(t, ctx, b1, topic, evs...)
	got := s.wait(t, c, len(evs))
	pos := map[string]int{}
	for i, e := range evs {
		pos[e.ID] = i
	}
	last := map[string]int{}
	for _, r := range got {
		p := pos[r.ev.ID]
		if l, ok := last[r.ev.Subject]; ok && p < l {
			t.Fatalf("subject %s: event #%d delivered after #%d", r.ev.Subject, p, l)
		}
		last[r.ev.Subject] = p
	}
}

func (s *suite) backpressure(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	const limit = 5
	c := newCollector(func(broker.Delivery) error { return nil }) // hold
	s.subscribe(t, ctx, b, topic, "g", c.handle, broker.WithMaxInFlight(limit), broker.WithAckWait(30*time.Second))
	evs := mkEvents(30, nil)
	s.publish(t, ctx, b, topic, evs...)
	held := s.wait(t, c, limit)
	quiet(t, c, time.Second) // no more than the limit while nothing is settled
	for _, r := range held[:2] {
		if err := r.d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	more := s.wait(t, c, 2) // two settled, two more delivered
	quiet(t, c, 500*time.Millisecond)
	for _, r := range append(held[2:], more...) {
		_ = r.d.Ack(ctx)
	}
}

func (s *suite) cancel(t *testing.T) {
	b := s.broker(t)
	topic := s.cfg.Topic(t)
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCollector(nil)
	sub, err := b.Subscribe(sctx, topic, "g", c.handle)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.Settle(t, sub)
	ctx := s.ctx(t)
	s.publish(t, ctx, b, topic, mkEvents(1, nil)...)
	s.wait(t, c, 1)
	cancel()
	select {
	case <-sub.Done():
	case <-time.After(s.cfg.Timeout):
		t.Fatal("subscription did not stop after its context was cancelled")
	}
	if err := sub.Err(); err != nil {
		t.Errorf("Err() after cancel = %v, want nil", err)
	}
	// Events published after it stopped all go to the group's next
	// subscriber (a state to wait for, not a quiet window): the stopped
	// one would otherwise compete for them.
	after := mkEvents(3, nil)
	s.publish(t, ctx, b, topic, after...)
	next := newCollector(nil)
	s.subscribe(t, ctx, s.broker(t), topic, "g", next.handle)
	s.expectAll(t, next, after, "published after the subscription's context was cancelled, not received by the group's next subscriber")
	select {
	case r := <-c.ch:
		t.Fatalf("%s delivered to a subscription after its context was cancelled", r.ev.ID)
	default:
	}
}

func (s *suite) closeWaits(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	started := make(chan struct{}, 1)
	var mu sync.Mutex
	var acked bool
	var hctxErr error
	sub := s.subscribe(t, ctx, b, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		hctxErr = ctx.Err()
		mu.Unlock()
		err := d.Ack(ctx)
		mu.Lock()
		acked = err == nil
		mu.Unlock()
		return err
	})
	s.publishAwait(t, ctx, b, topic, started, "no delivery", mkEvents(1, nil)...)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !acked || hctxErr != nil {
		t.Fatalf("Close did not wait for the handler: acked=%v handler ctx err=%v", acked, hctxErr)
	}
	select {
	case <-sub.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
}

func (s *suite) publishAfterClose(t *testing.T) {
	b := s.cfg.New(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	s.publish(t, ctx, b, topic, mkEvents(1, nil)...)
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	expectClosed(t, ctx, b, topic)
}

// expectClosed checks a closed broker: Publish and Subscribe return
// ErrClosed, and Close again returns nil.
func expectClosed(t *testing.T, ctx context.Context, b broker.Broker, topic string) {
	t.Helper()
	if err := b.Publish(ctx, topic, mkEvents(1, nil)...); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(ctx, topic, "g", func(context.Context, broker.Delivery) error { return nil }); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close again: %v", err)
	}
}

func (s *suite) large(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	size := 1 << 20
	if max := b.Capabilities().MaxPayload; max > 0 && max-16<<10 < size {
		size = max - 16<<10
		t.Logf("broker limit %d bytes: testing %d bytes", max, size)
	}
	data := make([]byte, size)
	_, _ = rand.Read(data)
	c := newCollector(nil)
	s.subscribe(t, ctx, b, topic, "g", c.handle)
	ev := eventkit.New("blob.stored", "application/octet-stream", data)
	s.publish(t, ctx, b, topic, ev)
	got := s.wait(t, c, 1)
	if !bytes.Equal(got[0].ev.Data, data) {
		t.Fatal("large payload corrupted")
	}
	huge := eventkit.New("blob.stored", "application/octet-stream", make([]byte, 16<<20))
	err := b.Publish(ctx, topic, huge)
	if !errors.Is(err, eventkit.ErrTooLarge) {
		t.Fatalf("Publish(16 MiB) = %v, want an error wrapping eventkit.ErrTooLarge", err)
	}
	t.Logf("over the limit: %v", err)
}

func (s *suite) concurrentPublishers(t *testing.T) {
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	c := newCollector(nil)
	s.subscribe(t, ctx, b, topic, "g", c.handle)
	const pubs, per = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, pubs)
	all := make([][]eventkit.Event, pubs)
	for p := range pubs {
		all[p] = mkEvents(per, func(i int) string { return fmt.Sprintf("p%d", p) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i += 10 {
				if err := b.Publish(ctx, topic, all[p][i:i+10]...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Publish: %v", err)
	}
	got := s.wait(t, c, pubs*per)
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.ev.ID] = true
	}
	for _, evs := range all {
		for _, e := range evs {
			if !seen[e.ID] {
				t.Fatalf("event %s lost", e.ID)
			}
		}
	}
}

func (s *suite) foreign(t *testing.T) {
	if s.cfg.PublishRaw == nil {
		t.Skip("Config.PublishRaw not set")
	}
	b := s.broker(t)
	ctx, topic := s.ctx(t), s.cfg.Topic(t)
	c := newCollector(func(d broker.Delivery) error {
		if d.DecodeErr() != nil {
			return d.Term(context.Background())
		}
		return d.Ack(context.Background())
	})
	s.subscribe(t, ctx, b, topic, "g", c.handle, broker.WithAckWait(s.cfg.AckWait))
	garbage := []byte("\x00\xffnot an event{")
	if err := s.cfg.PublishRaw(t, topic, nil, garbage); err != nil {
		t.Fatal(err)
	}
	if err := s.cfg.PublishRaw(t, topic, map[string]string{"x-other-tool": "1"}, []byte(`{"hello":"world"}`)); err != nil {
		t.Fatal(err)
	}
	good := mkEvents(1, nil)[0]
	s.publish(t, ctx, b, topic, good)
	got := s.wait(t, c, 3)
	var bad int
	for _, r := range got {
		if r.err != nil {
			bad++
			var de *eventkit.DecodeError
			if !errors.As(r.err, &de) {
				t.Errorf("DecodeErr is %T, want *eventkit.DecodeError", r.err)
			} else if len(de.Raw) == 0 {
				t.Errorf("DecodeError does not keep the raw bytes")
			}
			continue
		}
		if r.ev.ID != good.ID {
			t.Errorf("unexpected event %s", r.ev.ID)
		}
	}
	if bad != 2 {
		t.Fatalf("%d deliveries had a decode error, want 2", bad)
	}
	quiet(t, c, s.cfg.AckWait+500*time.Millisecond) // termed garbage is not redelivered
}

// namesDoNotCollide subscribes pairs of (topic, group) that naive name
// mappings send to one queue or topic ("<topic>.<group>" for ("a.b", "c") and
// ("a", "b.c"); "<topic>.retry.<group>" for a user's topic "a.retry.g"): each
// subscription must get its own topic's events only. A broker may instead
// refuse a name with ErrInvalidTopic.
func (s *suite) namesDoNotCollide(t *testing.T) {
	ctx := s.ctx(t)
	b := s.broker(t)
	type sg struct{ topic, group string }
	t1, t2 := s.cfg.Topic(t), s.cfg.Topic(t)
	pairs := [][2]sg{
		{{t1 + ".b", "c"}, {t1, "b.c"}},
		{{t2, "g"}, {t2 + ".retry.g", "h"}},
	}
	if d, ok := b.(interface {
		DeleteTopic(ctx context.Context, topic string) error
	}); ok {
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, p := range pairs {
				for _, x := range p {
					if x.topic != t1 && x.topic != t2 { // the suite's own topics are cleaned up by Config
						_ = d.DeleteTopic(cctx, x.topic)
					}
				}
			}
		})
	}
	for _, p := range pairs {
		var cs [2]*collector
		var ids [2]map[string]bool
		rejected := false
		for i, x := range p {
			cs[i] = newCollector(nil)
			sub, err := b.Subscribe(ctx, x.topic, x.group, cs[i].handle)
			if errors.Is(err, broker.ErrInvalidTopic) {
				rejected = true
				break
			}
			if err != nil {
				t.Fatalf("Subscribe(%s, %s): %v", x.topic, x.group, err)
			}
			t.Cleanup(func() {
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = sub.Close(cctx)
			})
			s.cfg.Settle(t, sub)
		}
		if rejected {
			continue
		}
		for i, x := range p {
			evs := mkEvents(3, nil)
			ids[i] = map[string]bool{}
			for _, e := range evs {
				ids[i][e.ID] = true
			}
			err := b.Publish(ctx, x.topic, evs...)
			if errors.Is(err, broker.ErrInvalidTopic) {
				rejected = true
				break
			}
			if err != nil {
				t.Fatalf("Publish(%s): %v", x.topic, err)
			}
		}
		if rejected {
			continue
		}
		for i, x := range p {
			for _, r := range s.wait(t, cs[i], 3) {
				if !ids[i][r.ev.ID] {
					t.Errorf("(%s, %s) got event %s of (%s, %s): they share a queue or topic",
						x.topic, x.group, r.ev.ID, p[1-i].topic, p[1-i].group)
				}
			}
		}
	}
}

// hostileNames checks that topic and group names with quotes, separators,
// wildcards ('*', '>'), spaces, control bytes, Unicode, or 1 KB of letters
// are refused with ErrInvalidTopic by Publish and Subscribe, before they
// reach the broker.
func (s *suite) hostileNames(t *testing.T) {
	ctx := s.ctx(t)
	b := s.broker(t)
	topic := s.cfg.Topic(t)
	h := broker.AutoAck(func(context.Context, eventkit.Event, int) error { return nil })
	for _, n := range []string{"", `a"b`, "a'b", "a`b", "a;b", "a b", "a*", "a>", "a.*", "a.>", "*", ">", "a/b", `a\b`,
		"a:b", "a@b", "a#b", "a\x00b", "a\nb", "ä", "日本", strings.Repeat("a", 1024)} {
		if err := b.Publish(ctx, n, mkEvents(1, nil)...); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("Publish(topic %q) = %v, want ErrInvalidTopic", n, err)
		}
		for _, tg := range [][2]string{{n, "g"}, {topic, n}} {
			sub, err := b.Subscribe(ctx, tg[0], tg[1], h)
			if !errors.Is(err, broker.ErrInvalidTopic) {
				t.Errorf("Subscribe(topic %q, group %q) = %v, want ErrInvalidTopic", tg[0], tg[1], err)
			}
			if sub != nil {
				_ = sub.Close(ctx)
			}
		}
	}
}
