package rabbitmqbroker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mk(n int) []eventkit.Event {
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("test.event", "application/json", fmt.Appendf(nil, `{"n":%d}`, i), eventkit.WithSource("/rabbitmq_test"))
	}
	return evs
}

type rec struct {
	id      string
	attempt int
	at      time.Time
	d       broker.Delivery
}

func collect(act func(broker.Delivery) error) (chan rec, broker.Handler) {
	ch := make(chan rec, 10000)
	return ch, func(ctx context.Context, d broker.Delivery) error {
		ch <- rec{id: d.Event().ID, attempt: d.Attempt(), at: time.Now(), d: d}
		if act == nil {
			return d.Ack(ctx)
		}
		return act(d)
	}
}

func next(t *testing.T, ch chan rec, within time.Duration) rec {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("no delivery within %v", within)
		return rec{}
	}
}

func none(t *testing.T, ch chan rec, within time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("unexpected delivery %s attempt %d", r.id, r.attempt)
	case <-time.After(within):
	}
}

// A topic nobody subscribed to and nobody provisioned has no queue bound:
// the server returns the events and Publish reports them, instead of
// dropping them silently.
func TestPublishUnroutable(t *testing.T) {
	t.Parallel()
	b := newBroker(t, rabbitmqbroker.Options{})
	ctx, topic := ctxT(t, 20*time.Second), testenv.Name("ekt")
	t.Cleanup(func() { _ = b.DeleteTopology(context.Background(), topic, "g") })
	evs := mk(3)
	err := b.Publish(ctx, topic, evs...)
	var pe *broker.PublishError
	if !errors.Is(err, rabbitmqbroker.ErrUnroutable) || !errors.As(err, &pe) || len(pe.Failed) != 3 {
		t.Fatalf("Publish to a topic without queues = %v, want a PublishError of 3 wrapping ErrUnroutable", err)
	}
	for i, f := range pe.Failed {
		if f.Index != i || f.ID != evs[i].ID {
			t.Errorf("failure %d names %d/%s, want %d/%s", i, f.Index, f.ID, i, evs[i].ID)
		}
	}
	t.Logf("unroutable: %v", err)
	// Once a group is provisioned, the same events are stored for it, even
	// before anyone consumes (durable queue).
	if err := b.Provision(ctx, topic, "g"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, evs...); err != nil {
		t.Fatalf("Publish after Provision: %v", err)
	}
	got, h := collect(nil)
	sub, err := b.Subscribe(ctx, topic, "g", h)
	if err != nil {
		t.Fatal(err)
	}
	for i := range evs {
		if r := next(t, got, 10*time.Second); r.id != evs[i].ID {
			t.Fatalf("delivery %d = %s, want %s", i, r.id, evs[i].ID)
		}
	}
	// Deleting the group's queue under a subscription stops it with
	// ErrQueueDeleted; it does not silently re-create the queue.
	if err := b.DeleteTopology(ctx, topic, "g"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("subscription still running after its queue was deleted")
	}
	if !errors.Is(sub.Err(), rabbitmqbroker.ErrQueueDeleted) {
		t.Fatalf("Err() = %v, want ErrQueueDeleted", sub.Err())
	}
	if err := b.Publish(ctx, topic, evs[0]); !errors.Is(err, rabbitmqbroker.ErrUnroutable) {
		t.Fatalf("Publish after the queue was deleted = %v, want ErrUnroutable", err)
	}
}

// A group created after events were published does not see them (no replay).
func TestNoReplayForNewGroup(t *testing.T) {
	t.Parallel()
	topic := provisionedTopic(t, rabbitmqbroker.Options{}, "ga")
	b := newBroker(t, rabbitmqbroker.Options{})
	ctx := ctxT(t, 20*time.Second)
	old := mk(2)
	if err := b.Publish(ctx, topic, old...); err != nil {
		t.Fatal(err)
	}
	got, h := collect(nil)
	if _, err := b.Subscribe(ctx, topic, "gb", h); err != nil {
		t.Fatal(err)
	}
	fresh := mk(1)
	if err := b.Publish(ctx, topic, fresh...); err != nil {
		t.Fatal(err)
	}
	if r := next(t, got, 10*time.Second); r.id != fresh[0].ID {
		t.Fatalf("new group got %s, want only the event published after it was created", r.id)
	}
	none(t, got, 300*time.Millisecond)
}

func TestOversizeNamesLimit(t *testing.T) {
	t.Parallel()
	b := newBroker(t, rabbitmqbroker.Options{MaxMessageSize: 1000})
	if got := b.Capabilities().MaxPayload; got != 1000 {
		t.Fatalf("MaxPayload = %d, want 1000", got)
	}
	ev := eventkit.New("blob", "application/octet-stream", make([]byte, 2000))
	err := b.Publish(ctxT(t, 5*time.Second), testenv.Name("ekt"), ev)
	var se *eventkit.SizeError
	if !errors.Is(err, eventkit.ErrTooLarge) || !errors.As(err, &se) {
		t.Fatalf("Publish(2000 bytes) = %v, want a SizeError", err)
	}
	if se.Limit != 1000 || !strings.Contains(se.Where, "MaxMessageSize") {
		t.Fatalf("SizeError = %+v, want limit 1000 named MaxMessageSize", se)
	}
}

// Nack(delay) goes through a retry queue of the bucket the delay rounds up
// to, and comes back with the attempt incremented; delays beyond the largest
// bucket are capped.
func TestNackDelayBuckets(t *testing.T) {
	t.Parallel()
	for _, qt := range []string{rabbitmqbroker.QueueQuorum, rabbitmqbroker.QueueClassic} {
		t.Run(qt, func(t *testing.T) {
			t.Parallel()
			opts := rabbitmqbroker.Options{QueueType: qt, DelayBuckets: []time.Duration{200 * time.Millisecond, 600 * time.Millisecond}}
			topic := provisionedTopic(t, opts, "g")
			b := newBroker(t, opts)
			ctx := ctxT(t, 30*time.Second)
			delays := []time.Duration{300 * time.Millisecond, time.Hour} // -> 600ms, capped 600ms
			got, h := collect(func(d broker.Delivery) error {
				if d.Attempt() <= len(delays) {
					return d.Nack(context.Background(), delays[d.Attempt()-1])
				}
				return d.Ack(context.Background())
			})
			if _, err := b.Subscribe(ctx, topic, "g", h); err != nil {
				t.Fatal(err)
			}
			ev := mk(1)[0]
			if err := b.Publish(ctx, topic, ev); err != nil {
				t.Fatal(err)
			}
			prev := next(t, got, 10*time.Second)
			for i := range delays {
				r := next(t, got, 10*time.Second)
				if r.id != ev.ID || r.attempt != i+2 {
					t.Fatalf("redelivery %d: %s attempt %d, want %s attempt %d", i, r.id, r.attempt, ev.ID, i+2)
				}
				if el := r.at.Sub(prev.at); el < 550*time.Millisecond || el > 5*time.Second {
					t.Errorf("Nack(%v) redelivered after %v, want the 600ms bucket", delays[i], el)
				}
				prev = r
			}
			none(t, got, 800*time.Millisecond)
			// The retry queue exists with the bucket's name.
			ch := amqpChannel(t)
			name := rabbitmqbroker.RetryQueueName(rabbitmqbroker.QueueName(topic, "g"), 600*time.Millisecond)
			if _, err := ch.QueueDeclarePassive(name, true, false, false, false, nil); err != nil {
				t.Fatalf("retry queue %s: %v", name, err)
			}
		})
	}
}

// A delivery left unsettled beyond AckWait is redelivered with the attempt
// incremented; settling the stale delivery afterwards says so.
func TestAckWaitExpiry(t *testing.T) {
	t.Parallel()
	topic := provisionedTopic(t, rabbitmqbroker.Options{}, "g")
	b := newBroker(t, rabbitmqbroker.Options{})
	ctx := ctxT(t, 20*time.Second)
	got, h := collect(func(d broker.Delivery) error {
		if d.Attempt() == 1 {
			return nil // hold it
		}
		return d.Ack(context.Background())
	})
	if _, err := b.Subscribe(ctx, topic, "g", h, broker.WithAckWait(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, mk(1)...); err != nil {
		t.Fatal(err)
	}
	first := next(t, got, 10*time.Second)
	second := next(t, got, 10*time.Second)
	if second.attempt != 2 || second.at.Sub(first.at) < 450*time.Millisecond {
		t.Fatalf("redelivery attempt %d after %v, want attempt 2 after the 500ms ack wait", second.attempt, second.at.Sub(first.at))
	}
	if err := first.d.Ack(ctx); !errors.Is(err, broker.ErrAlreadySettled) {
		t.Fatalf("Ack of the expired delivery = %v, want ErrAlreadySettled", err)
	}
	none(t, got, 700*time.Millisecond)
}

// A quorum queue counts every redelivery after a crash exactly.
func TestCrashAttemptsQuorum(t *testing.T) {
	t.Parallel()
	topic := provisionedTopic(t, rabbitmqbroker.Options{}, "g")
	ctx := ctxT(t, 30*time.Second)
	pub := newBroker(t, rabbitmqbroker.Options{})
	ev := mk(1)[0]
	if err := pub.Publish(ctx, topic, ev); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 3; want++ {
		b := newBroker(t, rabbitmqbroker.Options{})
		got, h := collect(func(broker.Delivery) error { return nil })
		if _, err := b.Subscribe(ctx, topic, "g", h); err != nil {
			t.Fatal(err)
		}
		if r := next(t, got, 10*time.Second); r.attempt != want {
			t.Fatalf("after %d crashes: attempt %d, want %d", want-1, r.attempt, want)
		}
		dead, cancel := context.WithCancel(context.Background())
		cancel()
		_ = b.Close(dead) // crash: nothing settled
	}
}

// Subscribing a group whose queue exists with another type fails with the
// server's reason instead of retrying forever.
func TestQueueTypeConflict(t *testing.T) {
	t.Parallel()
	topic := provisionedTopic(t, rabbitmqbroker.Options{QueueType: rabbitmqbroker.QueueClassic}, "g")
	b := newBroker(t, rabbitmqbroker.Options{QueueType: rabbitmqbroker.QueueQuorum})
	_, err := b.Subscribe(ctxT(t, 10*time.Second), topic, "g", func(context.Context, broker.Delivery) error { return nil })
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Fatalf("Subscribe on a classic queue with QueueType quorum = %v, want 406 PRECONDITION_FAILED", err)
	}
}

// closeConnections closes, from the server side, every connection with the
// given client-provided name, and returns how many it closed.
func closeConnections(t *testing.T, name string) int {
	t.Helper()
	expr := fmt.Sprintf(`length([rabbit_networking:close_connection(P, "eventkit test") || P <- rabbit_networking:connections(), `+
		`lists:keyfind(<<"connection_name">>, 1, proplists:get_value(client_properties, rabbit_networking:connection_info(P, [client_properties]), [])) =:= {<<"connection_name">>, longstr, <<"%s">>}]).`, name)
	out, err := exec.Command("rabbitmqctl", "eval", expr).CombinedOutput()
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("rabbitmqctl eval failed (%v): %s", err, out))
	}
	var n int
	if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &n); err != nil {
		t.Fatalf("rabbitmqctl eval: %q", out)
	}
	return n
}

// The server closes the connections of a publisher and a subscriber in the
// middle of a stream of 2,000+ events. The publisher retries what Publish
// reported as failed; every event arrives, and the subscription resumes by
// itself.
func TestReconnect(t *testing.T) {
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		testenv.Unavailable(t, "rabbitmqctl is not installed (it comes with the rabbitmq-server package)")
	}
	t.Parallel()
	name := testenv.Name("ekt-reconnect")
	opts := rabbitmqbroker.Options{ConnectionName: name, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond}
	streamThroughOutage(t, opts, func() {
		if n := closeConnections(t, name); n != 2 {
			t.Fatalf("closed %d connections named %s, want 2", n, name)
		}
	})
}

// The TCP connections of a publisher and a subscriber are cut abruptly (no
// AMQP close) in the middle of a stream: publishes awaiting their confirm
// are reported as failed, never as sent, and retried; nothing is lost.
func TestConnectionCut(t *testing.T) {
	t.Parallel()
	p := newProxy(t, strings.TrimPrefix(strings.TrimSuffix(hostOf(testenv.RabbitMQ.URL(t)), "/"), "amqp://"))
	opts := rabbitmqbroker.Options{URL: "amqp://guest:guest@" + p.addr() + "/", ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond}
	streamThroughOutage(t, opts, p.cut)
}

func hostOf(u string) string {
	if i := strings.LastIndexByte(u, '@'); i >= 0 {
		u = u[i+1:]
	}
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	return u
}

// proxy forwards TCP connections to the server and can cut them all.
type proxy struct {
	ln    net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, to string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, to: to}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, s); _ = c.Close() }()
		}
	}()
	// Registered first, so it runs after the brokers' cleanups.
	t.Cleanup(func() { _ = ln.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// cut closes every proxied connection abruptly.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func streamThroughOutage(t *testing.T, opts rabbitmqbroker.Options, outage func()) {
	topic := provisionedTopic(t, rabbitmqbroker.Options{}, "g")
	pub, sub := newBroker(t, opts), newBroker(t, opts)
	ctx := ctxT(t, 60*time.Second)

	var mu sync.Mutex
	seen := map[string]int{}
	s, err := sub.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		mu.Lock()
		seen[d.Event().ID]++
		mu.Unlock()
		return d.Ack(ctx)
	}, broker.WithMaxInFlight(100))
	if err != nil {
		t.Fatal(err)
	}
	// The publisher streams batches without pause, so the close catches
	// publishes awaiting their confirm, until at least `total` events were
	// published and `after` of them after the connections were closed
	// (rabbitmqctl takes a few seconds to start, so the stream may end up
	// longer than `total`).
	const total, after, batch = 2000, 500, 50
	var evs []eventkit.Event // written by the publisher, read after pubDone
	var published, failures, failedEvents atomic.Int64
	var closedAt atomic.Int64
	closedAt.Store(-1)
	pubDone := make(chan error, 1)
	go func() {
		for {
			n, c := published.Load(), closedAt.Load()
			if n >= total && c >= 0 && n-c >= after {
				break
			}
			todo := mk(batch)
			evs = append(evs, todo...)
			for len(todo) > 0 {
				err := pub.Publish(ctx, topic, todo...)
				if err == nil {
					break
				}
				failures.Add(1)
				var pe *broker.PublishError
				if errors.As(err, &pe) {
					failedEvents.Add(int64(len(pe.Failed)))
					var again []eventkit.Event
					for _, ix := range pe.FailedIndexes() {
						again = append(again, todo[ix])
					}
					todo = again
				} else if !errors.Is(err, rabbitmqbroker.ErrNotConnected) {
					pubDone <- err
					return
				}
				if ctx.Err() != nil {
					pubDone <- ctx.Err()
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			published.Add(batch)
		}
		pubDone <- nil
	}()

	for published.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}
	outage()
	at := published.Load()
	closedAt.Store(at)
	t.Logf("outage after %d events published", at)
	if err := <-pubDone; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	sent := len(evs)
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got == sent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d distinct events of %d after the reconnection", got, sent)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-s.Done():
		t.Fatalf("subscription stopped: %v", s.Err())
	default:
	}
	mu.Lock()
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	mu.Unlock()
	for _, e := range evs {
		if seen[e.ID] == 0 {
			t.Fatalf("event %s lost", e.ID)
		}
	}
	t.Logf("all %d events received; %d Publish calls failed (%d events) and were retried; %d duplicates",
		sent, failures.Load(), failedEvents.Load(), dups)
}

// Deliveries handed to a pool of goroutines are settled concurrently (as
// the consumer runtime does): every event is acked exactly once and none
// comes back.
func TestConcurrentSettle(t *testing.T) {
	t.Parallel()
	topic := provisionedTopic(t, rabbitmqbroker.Options{}, "g")
	b := newBroker(t, rabbitmqbroker.Options{})
	ctx := ctxT(t, 30*time.Second)
	work := make(chan broker.Delivery)
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				mu.Lock()
				seen[d.Event().ID]++
				n := seen[d.Event().ID]
				mu.Unlock()
				var err error
				if n == 1 && d.Event().Data[len(d.Event().Data)-2] == '7' {
					err = d.Nack(ctx, 0) // some go round once more
				} else {
					err = d.Ack(ctx)
				}
				if err != nil {
					t.Errorf("settle: %v", err)
				}
			}
		}()
	}
	sub, err := b.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		work <- d
		return nil
	}, broker.WithMaxInFlight(64))
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	evs := mk(n)
	if err := b.Publish(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, e := range evs {
		want++
		if e.Data[len(e.Data)-2] == '7' {
			want++
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, c := range seen {
			total += c
		}
		mu.Unlock()
		if total >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries of %d", total, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	close(work)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, c := range seen {
		total += c
	}
	if len(seen) != n || total != want {
		t.Fatalf("%d distinct events, %d deliveries; want %d and %d", len(seen), total, n, want)
	}
}

func TestServerVersionAndQueueType(t *testing.T) {
	t.Parallel()
	b := newBroker(t, rabbitmqbroker.Options{})
	t.Logf("RabbitMQ %s, queue type %s", b.ServerVersion(), b.QueueType())
	if b.ServerVersion() == "" {
		t.Fatal("no server version")
	}
	var maj, min int
	if _, err := fmt.Sscanf(b.ServerVersion(), "%d.%d", &maj, &min); err != nil {
		t.Fatalf("version %q: %v", b.ServerVersion(), err)
	}
	if maj > 3 || (maj == 3 && min >= 8) {
		if b.QueueType() != rabbitmqbroker.QueueQuorum {
			t.Fatalf("queue type %s on %s, want quorum", b.QueueType(), b.ServerVersion())
		}
	}
}

// Confirmed events survive a broker restart, and a Broker reconnects by
// itself once the server is back. It restarts the server, so it runs only
// when EVENTKIT_RABBITMQ_RESTART=1, on a private node (privateNodeCtl).
func TestDurableAcrossRestart(t *testing.T) {
	forEachQueueTypeRestarted(t, func(t *testing.T, opts rabbitmqbroker.Options) {
		topic := provisionedTopic(t, opts, "g")
		b := newBroker(t, opts)
		ctx := ctxT(t, 120*time.Second)
		evs := mk(100)
		if err := b.Publish(ctx, topic, evs...); err != nil {
			t.Fatal(err)
		}
		restartNode(t)
		got, h := collect(nil)
		var sub broker.Subscription
		var err error
		for i := 0; i < 50; i++ { // quorum queues take a moment to elect a leader after a restart
			if sub, err = b.Subscribe(ctx, topic, "g", h); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("Subscribe after restart: %v", err)
		}
		defer sub.Close(ctx)
		for i := range evs {
			if r := next(t, got, 30*time.Second); r.id != evs[i].ID {
				t.Fatalf("after restart: delivery %d = %s, want %s", i, r.id, evs[i].ID)
			}
		}
	})
}

// TestConformanceDurable runs brokertest.RunDurable on both queue types,
// the server restarted with rabbitmqctl stop_app and start_app. Like
// TestDurableAcrossRestart it runs only on a private node.
func TestConformanceDurable(t *testing.T) {
	forEachQueueTypeRestarted(t, func(t *testing.T, opts rabbitmqbroker.Options) {
		brokertest.RunDurable(t, brokertest.Config{
			New:     func(t *testing.T) broker.Broker { return newBroker(t, opts) },
			Topic:   func(t *testing.T) string { return provisionedTopic(t, opts, "g", "later") },
			Restart: restartNode,
		})
	})
}

// If the delayed re-publish fails (here: its retry queue was deleted), the
// message is requeued without delay rather than lost, and the next delayed
// Nack declares the retry queue again.
func TestNackDelayFallback(t *testing.T) {
	t.Parallel()
	opts := rabbitmqbroker.Options{DelayBuckets: []time.Duration{300 * time.Millisecond}}
	topic := provisionedTopic(t, opts, "g")
	b := newBroker(t, opts)
	ctx := ctxT(t, 30*time.Second)
	admin := amqpChannel(t)
	retryQueue := rabbitmqbroker.RetryQueueName(rabbitmqbroker.QueueName(topic, "g"), 300*time.Millisecond)
	got, h := collect(func(d broker.Delivery) error {
		switch d.Attempt() {
		case 1, 3:
			return d.Nack(context.Background(), 300*time.Millisecond)
		case 2:
			if _, err := admin.QueueDelete(retryQueue, false, false, false); err != nil {
				t.Errorf("delete retry queue: %v", err)
			}
			return d.Nack(context.Background(), 300*time.Millisecond)
		}
		return d.Ack(context.Background())
	})
	if _, err := b.Subscribe(ctx, topic, "g", h); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, mk(1)...); err != nil {
		t.Fatal(err)
	}
	var rs []rec
	for i := 0; i < 4; i++ {
		rs = append(rs, next(t, got, 10*time.Second))
		if rs[i].attempt != i+1 {
			t.Fatalf("delivery %d has attempt %d", i, rs[i].attempt)
		}
	}
	gaps := []time.Duration{rs[1].at.Sub(rs[0].at), rs[2].at.Sub(rs[1].at), rs[3].at.Sub(rs[2].at)}
	if gaps[0] < 250*time.Millisecond || gaps[2] < 250*time.Millisecond || gaps[1] > 250*time.Millisecond {
		t.Fatalf("gaps between attempts %v: want delayed, immediate (fallback), delayed", gaps)
	}
	none(t, got, 500*time.Millisecond)
}

// While the server blocks publishers (memory alarm), Publish does not hang
// on the socket: it waits until its ctx ends and fails with ErrBlocked, and
// succeeds once the alarm clears. It sets an alarm on the server, so it
// runs only when EVENTKIT_RABBITMQ_RESTART=1, on a private node
// (privateNodeCtl).
func TestPublishBlocked(t *testing.T) {
	if os.Getenv("EVENTKIT_RABBITMQ_RESTART") != "1" {
		t.Skip("sets a memory alarm on the RabbitMQ server: set EVENTKIT_RABBITMQ_RESTART=1 and EVENTKIT_RABBITMQ_CTL (a private node)")
	}
	privateNodeCtl(t)
	topic := provisionedTopic(t, rabbitmqbroker.Options{}, "g")
	b := newBroker(t, rabbitmqbroker.Options{})
	ctx := ctxT(t, 60*time.Second)
	if err := b.Publish(ctx, topic, mk(1)...); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if out, err := rabbitmqctl(t, "set_vm_memory_high_watermark", "0.4"); err != nil {
			t.Errorf("restore watermark: %v: %s", err, out)
		}
	}
	t.Cleanup(restore)
	if out, err := rabbitmqctl(t, "set_vm_memory_high_watermark", "absolute", "1"); err != nil {
		t.Fatalf("set alarm: %v: %s", err, out)
	}
	// The server sends connection.blocked on the next publish.
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err = b.Publish(pctx, topic, mk(1)...)
		cancel()
		if errors.Is(err, rabbitmqbroker.ErrBlocked) {
			break
		}
	}
	if !errors.Is(err, rabbitmqbroker.ErrBlocked) {
		t.Fatalf("Publish under a memory alarm = %v, want ErrBlocked", err)
	}
	t.Logf("blocked: %v", err)
	restore()
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := b.Publish(pctx, topic, mk(1)...); err != nil {
		t.Fatalf("Publish after the alarm cleared: %v", err)
	}
}

// forEachQueueTypeRestarted runs fn for each queue type, for tests that
// restart the server: only when EVENTKIT_RABBITMQ_RESTART=1, on a private
// node (privateNodeCtl).
func forEachQueueTypeRestarted(t *testing.T, fn func(t *testing.T, opts rabbitmqbroker.Options)) {
	if os.Getenv("EVENTKIT_RABBITMQ_RESTART") != "1" {
		t.Skip("restarts the RabbitMQ server: set EVENTKIT_RABBITMQ_RESTART=1 and EVENTKIT_RABBITMQ_CTL (a private node)")
	}
	privateNodeCtl(t)
	for _, qt := range []string{rabbitmqbroker.QueueQuorum, rabbitmqbroker.QueueClassic} {
		t.Run(qt, func(t *testing.T) { fn(t, rabbitmqbroker.Options{QueueType: qt, ConnectTimeout: 60 * time.Second}) })
	}
}

// restartNode restarts the private node's RabbitMQ application, its data kept.
func restartNode(t *testing.T) {
	t.Helper()
	for _, cmd := range []string{"stop_app", "start_app"} {
		if out, err := rabbitmqctl(t, cmd); err != nil {
			t.Fatalf("rabbitmqctl %s: %v: %s", cmd, err, out)
		}
	}
}
