package redisbroker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's view of the server: a key prefix of its own, deleted
// with everything under it when the test ends.
type env struct {
	url    string
	prefix string
	raw    *goredis.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url := testenv.Redis.URL(t)
	o, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{url: url, prefix: testenv.Name("ekt-test") + ":", raw: goredis.NewClient(o)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		iter := e.raw.Scan(ctx, 0, e.prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			_ = e.raw.Del(ctx, keys...).Err()
		}
		_ = e.raw.Close()
	})
	return e
}

// broker returns a broker on e, closed with t.
func (e *env) broker(t *testing.T, o redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	if o.URL == "" && o.Client == nil {
		o.URL = e.url
	}
	o.Prefix = e.prefix
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := redisbroker.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	closeBroker(t, b)
	return b
}

// xadd adds a raw entry as another tool (redis-cli XADD) would.
func (e *env) xadd(t *testing.T, topic string, fields ...any) {
	t.Helper()
	if err := e.raw.XAdd(context.Background(), &goredis.XAddArgs{Stream: e.prefix + topic, Values: fields}).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	e := newEnv(t)
	publishRaw := func(topic string, h map[string]string, body []byte) error {
		vals := []any{}
		for k, v := range h {
			vals = append(vals, k, v)
		}
		vals = append(vals, redisbroker.DataField, body)
		return e.raw.XAdd(context.Background(), &goredis.XAddArgs{Stream: e.prefix + topic, Values: vals}).Err()
	}
	brokertest.Run(t, brokertest.Config{
		New: func(t *testing.T) broker.Broker { return e.broker(t, redisbroker.Options{}) },
		// The test server keeps nothing across a restart (no AOF), so it
		// claims no Durable; a child server with an AOF checks the claim.
		DurableCheckedBy: "TestConformanceDurable",
		// A client with a low MaxPayload; the raw client writes any size.
		Limited: func(t *testing.T, limit int) (broker.Broker, func(string, map[string]string, []byte) error) {
			return e.broker(t, redisbroker.Options{MaxPayload: limit}), publishRaw
		},
		// The client's connections go away under the subscription, which
		// is not closed (its pending entries stay unacked).
		KillConnection: func(t *testing.T, b broker.Broker) { _ = b.(*redisbroker.Broker).Client().Close() },
		PublishRaw: func(t *testing.T, topic string, h map[string]string, body []byte) error {
			return publishRaw(topic, h, body)
		},
		// The topic's key holds a string: every XADD fails with WRONGTYPE.
		FailingTopic: func(t *testing.T) string {
			topic := testenv.Name("ekt")
			if err := e.raw.Set(context.Background(), e.prefix+topic, "not a stream", 0).Err(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.raw.Del(context.Background(), e.prefix+topic).Err() })
			return topic
		},
	})
}

// collect is a handler that sends every delivery to a channel and leaves
// settling to the test.
func collect() (broker.Handler, chan broker.Delivery) {
	ch := make(chan broker.Delivery, 10000)
	return func(_ context.Context, d broker.Delivery) error {
		ch <- d
		return nil
	}, ch
}

func recv(t *testing.T, ch chan broker.Delivery, n int, within time.Duration) []broker.Delivery {
	t.Helper()
	out := make([]broker.Delivery, 0, n)
	deadline := time.After(within)
	for len(out) < n {
		select {
		case d := <-ch:
			out = append(out, d)
		case <-deadline:
			t.Fatalf("got %d deliveries of %d within %v", len(out), n, within)
		}
	}
	return out
}

func quiet(t *testing.T, ch chan broker.Delivery, d time.Duration) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("unexpected delivery of %s (attempt %d, decode error %v)", got.Event().ID, got.Attempt(), got.DecodeErr())
	case <-time.After(d):
	}
}

func subscribe(t *testing.T, b broker.Broker, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) broker.Subscription {
	t.Helper()
	sub, err := b.Subscribe(context.Background(), topic, group, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = sub.Close(ctx)
	})
	return sub
}

func closeBroker(t *testing.T, b broker.Broker) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
}

func events(n int) []eventkit.Event {
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("test.event", "application/json", fmt.Appendf(nil, `{"n":%d}`, i), eventkit.WithSubject(fmt.Sprint("s", i)))
	}
	return evs
}

// pending is the number of entries in the group's PEL.
func (e *env) pending(t *testing.T, topic, group string) int64 {
	t.Helper()
	p, err := e.raw.XPending(context.Background(), e.prefix+topic, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	return p.Count
}

// TestRedisCounterSemantics checks the facts about the PEL's delivery
// counter that Attempt() relies on (see scripts.go).
func TestRedisCounterSemantics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	key := e.prefix + "counter"
	r := e.raw
	if err := r.XGroupCreateMkStream(ctx, key, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"1-1", "2-1"} {
		if err := r.XAdd(ctx, &goredis.XAddArgs{Stream: key, ID: id, Values: []any{"a", "1"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{key, ">"}, Count: 10, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	count := func(id string) (int64, time.Duration, string) {
		t.Helper()
		p, err := r.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: key, Group: "g", Start: id, End: id, Count: 1}).Result()
		if err != nil || len(p) != 1 {
			t.Fatalf("XPENDING %s: %v %v", id, p, err)
		}
		return p[0].RetryCount, p[0].Idle, p[0].Consumer
	}
	if n, _, _ := count("1-1"); n != 1 {
		t.Fatalf("after XREADGROUP: counter %d, want 1", n)
	}
	time.Sleep(30 * time.Millisecond)
	if err := r.XClaimJustID(ctx, &goredis.XClaimArgs{Stream: key, Group: "g", Consumer: "c1", Messages: []string{"1-1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if n, idle, _ := count("1-1"); n != 1 || idle >= 30*time.Millisecond {
		t.Fatalf("after XCLAIM JUSTID: counter %d idle %v, want 1 and reset", n, idle)
	}
	if err := r.XClaim(ctx, &goredis.XClaimArgs{Stream: key, Group: "g", Consumer: "c1", Messages: []string{"1-1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := count("1-1"); n != 2 {
		t.Fatalf("after XCLAIM: counter %d, want 2", n)
	}
	time.Sleep(20 * time.Millisecond)
	if err := r.XAutoClaim(ctx, &goredis.XAutoClaimArgs{Stream: key, Group: "g", Consumer: "c2", MinIdle: 10 * time.Millisecond, Start: "0", Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _, c := count("1-1"); n != 3 || c != "c2" {
		t.Fatalf("after XAUTOCLAIM: counter %d owner %s, want 3 and c2", n, c)
	}
	// An entry deleted while pending is dropped from the PEL by XAUTOCLAIM.
	if err := r.XDel(ctx, key, "2-1").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	_, _, deleted, err := r.XAutoClaimWithDeleted(ctx, &goredis.XAutoClaimArgs{Stream: key, Group: "g", Consumer: "c2", MinIdle: 10 * time.Millisecond, Start: "2-0", Count: 10}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0] != "2-1" {
		t.Fatalf("XAUTOCLAIM deleted ids = %v, want [2-1]", deleted)
	}
	if n := e.pending(t, "counter", "g"); n != 1 {
		t.Fatalf("PEL has %d entries after the deleted one was reclaimed, want 1", n)
	}
}

// A subscriber whose connection goes away without settling anything: a
// second consumer reclaims its entries after the ack wait with attempt 2,
// and when that one dies too, a third gets them with attempt 3.
func TestCrashedConsumerReclaimed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	topic := testenv.Name("crash")
	const ackWait = 500 * time.Millisecond
	evs := events(20)
	for round := 1; round <= 3; round++ {
		o, _ := goredis.ParseURL(e.url)
		client := goredis.NewClient(o)
		b := e.broker(t, redisbroker.Options{Client: client})
		if round == 1 {
			if err := b.Publish(context.Background(), topic, evs...); err != nil {
				t.Fatal(err)
			}
		}
		h, ch := collect()
		subscribe(t, b, topic, "g", h, broker.WithAckWait(ackWait), broker.WithMaxInFlight(100))
		got := recv(t, ch, len(evs), 10*time.Second)
		seen := map[string]bool{}
		for _, d := range got {
			if d.Attempt() != round {
				t.Fatalf("round %d: %s has attempt %d", round, d.Event().ID, d.Attempt())
			}
			seen[d.Event().ID] = true
		}
		if len(seen) != len(evs) {
			t.Fatalf("round %d: %d distinct events of %d", round, len(seen), len(evs))
		}
		if round < 3 {
			// Crash: the connection goes away, nothing is settled.
			_ = client.Close()
			continue
		}
		for _, d := range got {
			if err := d.Ack(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		quiet(t, ch, 2*ackWait)
		if n := e.pending(t, topic, "g"); n != 0 {
			t.Fatalf("%d entries still pending after all were acked", n)
		}
		_ = client.Close()
	}
}

func TestMaxLenTrims(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{MaxLen: 100})
	topic := testenv.Name("maxlen")
	for range 20 {
		if err := b.Publish(context.Background(), topic, events(100)...); err != nil {
			t.Fatal(err)
		}
	}
	n, err := e.raw.XLen(context.Background(), b.StreamKey(topic)).Result()
	if err != nil {
		t.Fatal(err)
	}
	// MAXLEN ~ trims whole macro nodes (stream-node-max-entries, 100 by default).
	if n < 100 || n > 300 {
		t.Fatalf("XLEN = %d after 2000 entries with MaxLen 100, want about 100", n)
	}
}

// Entries trimmed or deleted while pending are acked away, not looped on:
// whether they come back through a Nack or through XAUTOCLAIM.
func TestDeletedWhilePending(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{})
	topic := testenv.Name("trim")
	h, ch := collect()
	subscribe(t, b, topic, "g", h, broker.WithAckWait(300*time.Millisecond))
	if err := b.Publish(context.Background(), topic, events(6)...); err != nil {
		t.Fatal(err)
	}
	got := recv(t, ch, 6, 5*time.Second)
	if err := e.raw.XTrimMaxLen(context.Background(), b.StreamKey(topic), 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, d := range got[:3] {
		if err := d.Nack(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	}
	// The other three are left unsettled: XAUTOCLAIM finds them deleted.
	quiet(t, ch, 1500*time.Millisecond)
	if n := e.pending(t, topic, "g"); n != 0 {
		t.Fatalf("%d deleted entries still pending", n)
	}
	// The subscription still works.
	ev := events(1)
	if err := b.Publish(context.Background(), topic, ev...); err != nil {
		t.Fatal(err)
	}
	if d := recv(t, ch, 1, 5*time.Second)[0]; d.Event().ID != ev[0].ID || d.Attempt() != 1 {
		t.Fatalf("got %s attempt %d, want %s attempt 1", d.Event().ID, d.Attempt(), ev[0].ID)
	} else {
		_ = d.Ack(context.Background())
	}
}

// Entries added by other tools are delivered with DecodeErr (raw data
// kept) and never stall the subscription.
func TestForeignEntries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{})
	topic := testenv.Name("foreign")
	e.xadd(t, topic, "foo", "bar") // redis-cli XADD key * foo bar
	e.xadd(t, topic, "ce_specversion", "1.0", "ce_id", "x", "data", "{}")
	e.xadd(t, topic, "ce_specversion", "1.0", "ce_id", "x", "ce_source", "/s", "ce_type", "t", "ce_time", "yesterday", "data", "\x00\xff")
	e.xadd(t, topic, "ce_specversion", "0.3", "ce_id", "x", "ce_source", "/s", "ce_type", "t", "data", "old")
	good := events(1)[0]
	if err := b.Publish(context.Background(), topic, good); err != nil {
		t.Fatal(err)
	}
	h, ch := collect()
	subscribe(t, b, topic, "g", h, broker.WithAckWait(300*time.Millisecond))
	got := recv(t, ch, 5, 5*time.Second)
	for i, d := range got[:4] {
		var de *eventkit.DecodeError
		if !errors.As(d.DecodeErr(), &de) {
			t.Fatalf("entry %d: DecodeErr = %v, want a *eventkit.DecodeError", i, d.DecodeErr())
		}
		if len(de.Raw) == 0 {
			t.Errorf("entry %d: raw bytes not kept", i)
		}
		if d.Event().ID != "" {
			t.Errorf("entry %d: Event() not zero", i)
		}
		t.Logf("entry %d: %v (raw %q)", i, de, de.Raw)
		if err := d.Term(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var de *eventkit.DecodeError
	if errors.As(got[0].DecodeErr(), &de); string(de.Raw) != `{"foo":"bar"}` {
		t.Errorf("entry without data: Raw = %q, want the fields as JSON", de.Raw)
	}
	if got[4].DecodeErr() != nil || got[4].Event().ID != good.ID {
		t.Fatalf("last delivery: %v %s, want the good event", got[4].DecodeErr(), got[4].Event().ID)
	}
	_ = got[4].Ack(context.Background())
	quiet(t, ch, time.Second)
	if n := e.pending(t, topic, "g"); n != 0 {
		t.Fatalf("%d entries still pending", n)
	}
}

// A delay longer than the ack wait: the entry stays in this consumer's PEL,
// kept fresh so that a competing consumer's XAUTOCLAIM does not take it
// early, and comes back once, after the delay, with attempt 2.
func TestNackDelayLongerThanAckWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	topic := testenv.Name("delay")
	const ackWait, delay = 300 * time.Millisecond, 1500 * time.Millisecond
	h, ch := collect()
	for range 2 {
		b := e.broker(t, redisbroker.Options{})
		subscribe(t, b, topic, "g", h, broker.WithAckWait(ackWait))
	}
	b := e.broker(t, redisbroker.Options{})
	ev := events(1)
	if err := b.Publish(context.Background(), topic, ev...); err != nil {
		t.Fatal(err)
	}
	first := recv(t, ch, 1, 5*time.Second)[0]
	nacked := time.Now()
	if err := first.Nack(context.Background(), delay); err != nil {
		t.Fatal(err)
	}
	again := recv(t, ch, 1, 5*time.Second)[0]
	if el := time.Since(nacked); el < delay {
		t.Fatalf("redelivered after %v, before the delay of %v", el, delay)
	}
	if again.Event().ID != ev[0].ID || again.Attempt() != 2 {
		t.Fatalf("redelivery: %s attempt %d, want %s attempt 2", again.Event().ID, again.Attempt(), ev[0].ID)
	}
	if err := again.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	quiet(t, ch, 3*ackWait)
}

// Close hands entries fetched but never given to the handler back to the
// group at once, with their counter restored: another consumer gets them
// with attempt 1 without waiting for the ack wait.
func TestCloseHandsBackUndelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	topic := testenv.Name("handback")
	b1 := e.broker(t, redisbroker.Options{})
	evs := events(50)
	if err := b1.Publish(context.Background(), topic, evs...); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	sub1, err := b1.Subscribe(context.Background(), topic, "g", func(ctx context.Context, d broker.Delivery) error {
		started <- struct{}{}
		<-release
		return d.Ack(ctx)
	}, broker.WithMaxInFlight(100))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = sub1.Close(context.Background())
	}()
	time.Sleep(100 * time.Millisecond)
	close(release)
	<-closed
	b2 := e.broker(t, redisbroker.Options{})
	h, ch := collect()
	subscribe(t, b2, topic, "g", h) // default ack wait: 30s
	got := recv(t, ch, len(evs)-1, 5*time.Second)
	for _, d := range got {
		if d.Attempt() != 1 {
			t.Errorf("%s: attempt %d, want 1 (never given to a handler before)", d.Event().ID, d.Attempt())
		}
		if d.Event().ID == evs[0].ID {
			t.Errorf("the acked event %s came back", d.Event().ID)
		}
		_ = d.Ack(context.Background())
	}
}

// With SyncAck, Ack returns after the XACK: nothing is pending then.
func TestSyncAck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{SyncAck: true})
	topic := testenv.Name("syncack")
	h, ch := collect()
	subscribe(t, b, topic, "g", h)
	if err := b.Publish(context.Background(), topic, events(3)...); err != nil {
		t.Fatal(err)
	}
	for _, d := range recv(t, ch, 3, 5*time.Second) {
		if err := d.Ack(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.pending(t, topic, "g"); n != 0 {
		t.Fatalf("%d entries pending after Ack returned", n)
	}
}

func TestGroupStartNewest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{GroupStart: redisbroker.StartNewest})
	if b.Capabilities().Replay {
		t.Fatal("Replay claimed with GroupStart newest")
	}
	topic := testenv.Name("newest")
	if err := b.Publish(context.Background(), topic, events(2)...); err != nil {
		t.Fatal(err)
	}
	h, ch := collect()
	subscribe(t, b, topic, "g", h)
	ev := events(1)
	if err := b.Publish(context.Background(), topic, ev...); err != nil {
		t.Fatal(err)
	}
	d := recv(t, ch, 1, 5*time.Second)[0]
	if d.Event().ID != ev[0].ID {
		t.Fatalf("first delivery %s, want %s (published after the group)", d.Event().ID, ev[0].ID)
	}
	_ = d.Ack(context.Background())
	quiet(t, ch, 300*time.Millisecond)
}

// The server drops the subscription's connections (CLIENT KILL): the
// subscription reconnects and goes on; nothing is lost.
func TestReconnectAfterConnectionsKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o, err := goredis.ParseURL(e.url)
	if err != nil {
		t.Fatal(err)
	}
	o.ClientName = testenv.Name("ekt-kill")
	c := goredis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	b := e.broker(t, redisbroker.Options{Client: c})
	topic := testenv.Name("kill")
	h, ch := collect()
	subscribe(t, b, topic, "g", h, broker.WithAckWait(time.Second))
	evs := events(20)
	if err := b.Publish(context.Background(), topic, evs[:10]...); err != nil {
		t.Fatal(err)
	}
	for _, d := range recv(t, ch, 10, 5*time.Second) {
		_ = d.Ack(context.Background())
	}
	list, err := e.raw.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " name="+o.ClientName+" ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				if e.raw.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err() == nil {
					killed++
				}
			}
		}
	}
	if killed == 0 {
		t.Fatal("found no connection to kill")
	}
	// Publish may hit a dead pooled connection once; the caller retries.
	for try := 0; ; try++ {
		err := b.Publish(context.Background(), topic, evs[10:]...)
		if err == nil {
			break
		}
		if try == 3 {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < 10 {
		d := recv(t, ch, 1, 10*time.Second)[0]
		seen[d.Event().ID] = true
		_ = d.Ack(context.Background())
	}
	for _, ev := range evs[10:] {
		if !seen[ev.ID] {
			t.Fatalf("event %s lost after the connections were killed", ev.ID)
		}
	}
	t.Logf("killed %d connections", killed)
}

func consumers(t *testing.T, e *env, key, group string) []string {
	t.Helper()
	cs, err := e.raw.XInfoConsumers(context.Background(), key, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		names = append(names, fmt.Sprintf("%s(pending %d)", c.Name, c.Pending))
	}
	return names
}

// Consumer names do not pile up: a subscription that closes with nothing
// pending removes its own, and Subscribe prunes idle ones without pending
// entries, but never one that still has some.
func TestConsumersPruned(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{PruneAfter: 200 * time.Millisecond})
	topic := testenv.Name("prune")
	key := b.StreamKey(topic)
	ctx := context.Background()
	h, ch := collect()
	sub, err := b.Subscribe(ctx, topic, "g", h)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, events(1)...); err != nil {
		t.Fatal(err)
	}
	_ = recv(t, ch, 1, 5*time.Second)[0].Ack(ctx)
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if cs := consumers(t, e, key, "g"); len(cs) != 0 {
		t.Fatalf("consumers after a clean Close: %v, want none", cs)
	}
	// Leftovers of crashed processes: one with a pending entry, one without.
	if err := e.raw.XGroupCreateConsumer(ctx, key, "g", "idle-empty").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, events(1)...); err != nil {
		t.Fatal(err)
	}
	if err := e.raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "idle-holding", Streams: []string{key, ">"}, Count: 1, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	h2, ch2 := collect()
	subscribe(t, b, topic, "g", h2, broker.WithAckWait(time.Hour))
	cs := consumers(t, e, key, "g")
	for _, c := range cs {
		if strings.HasPrefix(c, "idle-empty") {
			t.Fatalf("idle consumer without pending entries not pruned: %v", cs)
		}
	}
	if !slices.Contains(cs, "idle-holding(pending 1)") {
		t.Fatalf("consumer with a pending entry was pruned: %v", cs)
	}
	quiet(t, ch2, 100*time.Millisecond)
}

// The stream is deleted under a running subscription (with an entry waiting
// for a delayed redelivery): the group is re-created and new events flow.
func TestStreamDeletedWhileSubscribed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{})
	topic := testenv.Name("del")
	h, ch := collect()
	subscribe(t, b, topic, "g", h, broker.WithAckWait(time.Second))
	ctx := context.Background()
	if err := b.Publish(ctx, topic, events(1)...); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, ch, 1, 5*time.Second)[0].Nack(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := e.raw.Del(ctx, b.StreamKey(topic)).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the delayed entry is due now, its group is gone
	ev := events(1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Until the group is back, XADD re-creates only the stream.
		if err := b.Publish(ctx, topic, ev...); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-ch:
			if d.Event().ID != ev[0].ID {
				t.Fatalf("got %s, want %s", d.Event().ID, ev[0].ID)
			}
			_ = d.Ack(ctx)
			return
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery after the stream was deleted")
		}
	}
}

func TestCapabilitiesAndLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{MaxPayload: 2048})
	ctx := context.Background()
	c := b.Capabilities()
	aof, err := e.raw.ConfigGet(ctx, "append*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if c.Durable != (aof["appendonly"] == "yes" && aof["appendfsync"] == "always") {
		t.Errorf("Durable = %v with appendonly %q, appendfsync %q", c.Durable, aof["appendonly"], aof["appendfsync"])
	}
	if c.Name != "redis" || !c.Ordered || c.OrderedPerSubject || c.NativeDelay || c.NativeDedupe || !c.Replay || c.MaxPayload != 2048 {
		t.Errorf("capabilities: %+v", c)
	}
	topic := testenv.Name("limit")
	small := events(1)[0]
	big := eventkit.New("blob", "application/octet-stream", make([]byte, 4096))
	err = b.Publish(ctx, topic, small, big)
	var se *eventkit.SizeError
	if !errors.Is(err, eventkit.ErrTooLarge) || !errors.As(err, &se) {
		t.Fatalf("Publish(4 KiB) = %v, want a *eventkit.SizeError", err)
	}
	if se.Limit != 2048 || !strings.Contains(se.Where, "MaxPayload") {
		t.Errorf("size error does not name the limit: %+v", se)
	}
	if n, _ := e.raw.XLen(ctx, b.StreamKey(topic)).Result(); n != 0 {
		t.Errorf("%d entries written by a rejected batch", n)
	}
	if _, err := redisbroker.New(ctx, redisbroker.Options{}); err == nil {
		t.Error("New without URL or Client succeeded")
	}
	if _, err := redisbroker.New(ctx, redisbroker.Options{URL: e.url, GroupStart: "1-0"}); err == nil {
		t.Error("New with a bad GroupStart succeeded")
	}
	if _, err := b.Subscribe(ctx, topic, "bad group", func(context.Context, broker.Delivery) error { return nil }); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Errorf("Subscribe with a bad group name = %v", err)
	}
}

// A worker pool behind one subscription settles deliveries concurrently,
// mixing acks, immediate and delayed nacks: every event ends acked, each
// redelivery has the next attempt number, and nothing stays pending.
func TestWorkerPoolSettling(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{})
	topic := testenv.Name("pool")
	work := make(chan broker.Delivery, 1000) // the handler never waits: MaxInFlight must bound
	const maxInFlight = 32
	var mu sync.Mutex
	lastAttempt := map[string]int{}
	acked := map[string]bool{}
	inflight, peak := 0, 0
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				id := d.Event().ID
				mu.Lock()
				if d.Attempt() != lastAttempt[id]+1 {
					t.Errorf("%s: attempt %d after %d", id, d.Attempt(), lastAttempt[id])
				}
				lastAttempt[id] = d.Attempt()
				mu.Unlock()
				h := int(id[len(id)-1]) + w // pseudo-random per event
				ctx := context.Background()
				mu.Lock()
				inflight-- // before settling: settling frees the slot
				mu.Unlock()
				var err error
				switch {
				case d.Attempt() == 1 && h%5 == 0:
					err = d.Nack(ctx, 0)
				case d.Attempt() == 1 && h%7 == 0:
					err = d.Nack(ctx, 50*time.Millisecond)
				default:
					mu.Lock()
					acked[id] = true
					mu.Unlock()
					err = d.Ack(ctx)
				}
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	sub := subscribe(t, b, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		mu.Unlock()
		work <- d
		return nil
	}, broker.WithMaxInFlight(maxInFlight), broker.WithAckWait(5*time.Second))
	evs := events(500)
	for i := 0; i < len(evs); i += 100 {
		if err := b.Publish(context.Background(), topic, evs[i:i+100]...); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n == len(evs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events acked", n, len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	close(work)
	wg.Wait()
	if n := e.pending(t, topic, "g"); n != 0 {
		t.Fatalf("%d entries pending after every event was acked", n)
	}
	if peak > maxInFlight {
		t.Fatalf("%d deliveries unsettled at once, MaxInFlight %d", peak, maxInFlight)
	}
	redelivered := 0
	for _, a := range lastAttempt {
		if a > 1 {
			redelivered++
		}
	}
	t.Logf("redelivered %d of %d, peak in flight %d", redelivered, len(evs), peak)
	if redelivered == 0 {
		t.Fatal("no nacks happened: the test did not test them")
	}
}

// Subscribe is safe for concurrent use, also with Close: every subscription
// a Subscribe handed out is stopped by Close, and a Subscribe after Close
// returns broker.ErrClosed. (Subscribe used to add to the broker's set
// under the read lock, a concurrent map write that -race reports.)
func TestConcurrentSubscribe(t *testing.T) {
	e := newEnv(t)
	b := e.broker(t, redisbroker.Options{})
	h, _ := collect()
	const n = 8
	subs := make([]broker.Subscription, n)
	var wg sync.WaitGroup
	for i := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := b.Subscribe(context.Background(), "conc", fmt.Sprintf("g%d", i), h)
			if err != nil {
				t.Errorf("Subscribe %d: %v", i, err)
				return
			}
			subs[i] = s
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, s := range subs {
		if s == nil {
			continue
		}
		select {
		case <-s.Done():
		case <-ctx.Done():
			t.Fatalf("subscription %d not stopped by Close", i)
		}
	}
	if _, err := b.Subscribe(context.Background(), "conc", "late", h); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
}
