package consumer_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	kafkabroker "github.com/eventkit/eventkit/broker/kafkabroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/lruinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// realBroker is one broker of the test machine for a test: a broker, a
// fresh topic name, and cleanup of what the test created on the server.
type realBroker struct {
	name string
	open func(t *testing.T) (broker.Broker, func() string)
}

// realBrokers are every adapter, each on its real server (Kafka: kfake in
// this process).
var realBrokers = []realBroker{
	{"memory", func(t *testing.T) (broker.Broker, func() string) {
		return newBroker(t), func() string { return testenv.Name("t") }
	}},
	{"nats", func(t *testing.T) (broker.Broker, func() string) {
		b, topic := natsBroker(t)
		return b, topic
	}},
	{"rabbitmq", func(t *testing.T) (broker.Broker, func() string) {
		url := testenv.RabbitMQ.URL(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := rabbitmqbroker.New(ctx, rabbitmqbroker.Options{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		return b, trackedTopics(t, b, func(ctx context.Context, tp string) {
			_ = b.DeleteTopology(ctx, tp, "a", "b", "g", deadletter.DefaultGroup, "late")
		})
	}},
	{"redis", func(t *testing.T) (broker.Broker, func() string) {
		url := testenv.Redis.URL(t)
		prefix := testenv.Name("ekc") + ":"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := redisbroker.New(ctx, redisbroker.Options{URL: url, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rdb := b.Client()
			if keys, err := rdb.Keys(ctx, prefix+"*").Result(); err == nil && len(keys) > 0 {
				_ = rdb.Del(ctx, keys...).Err()
			}
			_ = b.Close(ctx)
		})
		return b, func() string { return testenv.Name("t") }
	}},
	{"kafka", func(t *testing.T) (broker.Broker, func() string) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := kafkabroker.New(ctx, kafkabroker.Options{Brokers: c.ListenAddrs(), SessionTimeout: 10 * time.Second,
			HeartbeatInterval: 100 * time.Millisecond, CommitInterval: 100 * time.Millisecond, FetchMaxWait: 200 * time.Millisecond})
		if err != nil {
			c.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Close(ctx)
			c.Close()
		})
		return b, func() string { return testenv.Name("t") }
	}},
}

func eachBroker(t *testing.T, fn func(t *testing.T, b broker.Broker, topic string)) {
	for _, rb := range realBrokers {
		t.Run(rb.name, func(t *testing.T) {
			t.Parallel()
			b, newTopic := rb.open(t)
			fn(t, b, newTopic())
		})
	}
}

// waitReady waits for the consumer to be subscribed.
func waitReady(t *testing.T, r *running) {
	t.Helper()
	select {
	case <-r.c.Ready():
	case err := <-r.done:
		t.Fatalf("Run returned before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("consumer not ready after 30s")
	}
}

// The dead-letter topic is provisioned with the collector's group before it
// is needed: a poison event is dead-lettered although nothing ever
// subscribed to "<topic>.dlq" (on RabbitMQ the publish was unroutable and
// retried in place for ever, the subject's worker stuck), the later event
// of its subject flows, and a collector that starts afterwards finds the
// dead letter.
func TestDeadLetterTopicProvisioned(t *testing.T) {
	t.Parallel()
	eachBroker(t, func(t *testing.T, b broker.Broker, topic string) {
		poison := ev("x", "s-1", `"poison"`)
		after := ev("x", "s-1", `"after"`)
		var handledAfter atomic.Bool
		c := newConsumer(t, b, consumer.Config{OrderedBySubject: true, Retry: fastRetry(2), ShutdownTimeout: time.Second})
		_ = c.HandleFunc(topic, "g", func(ctx context.Context, e eventkit.Event) error {
			if e.ID == poison.ID {
				return eventkit.Permanent(errors.New("poison"))
			}
			handledAfter.Store(true)
			return nil
		})
		run := start(t, c)
		waitReady(t, run)
		publish(t, b, topic, poison, after)
		eventually(t, 30*time.Second, "the later event of the subject handled", handledAfter.Load)
		eventually(t, 10*time.Second, "dead-lettered", func() bool { return c.Stats().DeadLettered == 1 })
		if s := c.Stats(); s.DeadLetterFailed != 0 {
			t.Fatalf("stats %+v", s)
		}
		got := receive(t, lateSubscriber(t, b, topic+".dlq", deadletter.DefaultGroup), 30*time.Second)
		if info, ok := deadletter.InfoOf(got); !ok || info.EventID != poison.ID || info.Group != "g" {
			t.Fatalf("dead letter %+v (ok %v)", info, ok)
		}
	})
}

// Two groups dead-letter the same event within JetStream's duplicate window:
// both dead letters are stored (each has an id of its own; with the
// original id as Nats-Msg-Id the second was dropped while Publish reported
// success). A replay of the event, also within the window, goes to the
// failing group only, whose handler and inbox see the original id, so a
// second replay of the applied event is a duplicate without effect.
func TestDeadLettersAndReplaysHaveTheirOwnIdentity(t *testing.T) {
	t.Parallel()
	eachBroker(t, func(t *testing.T, b broker.Broker, topic string) {
		dlq := lateSubscriber(t, b, topic+".dlq", "ops")
		e := ev("x", "s-1", `"e"`)
		var fixed atomic.Bool
		var mu sync.Mutex
		calls := map[string][]eventkit.Event{}
		handler := func(group string) consumer.HandlerFunc {
			return func(ctx context.Context, got eventkit.Event) error {
				mu.Lock()
				calls[group] = append(calls[group], got.Clone())
				mu.Unlock()
				if got.ID == e.ID && (group == "b" || !fixed.Load()) {
					return eventkit.Permanent(errors.New("cannot handle in " + group))
				}
				return nil
			}
		}
		count := func(group string) int { mu.Lock(); defer mu.Unlock(); return len(calls[group]) }
		c := newConsumer(t, b, consumer.Config{Retry: fastRetry(2), Inbox: lruinbox.New(lruinbox.Options{})})
		_ = c.Handle(topic, "a", handler("a"))
		_ = c.Handle(topic, "b", handler("b"))
		waitReady(t, start(t, c))
		publish(t, b, topic, e)

		byGroup := map[string]eventkit.Event{}
		for range 2 {
			dl := receive(t, dlq, 30*time.Second)
			info, ok := deadletter.InfoOf(dl)
			if !ok || info.EventID != e.ID || dl.ID == e.ID {
				t.Fatalf("dead letter %s: %+v", dl.ID, info)
			}
			byGroup[info.Group] = dl
		}
		if len(byGroup) != 2 {
			t.Fatalf("dead letters by group: %v", byGroup)
		}

		// Replay a's dead letter (b still fails: a replay to b would be
		// dead-lettered again). sentinel, on the same subject, shows that
		// each group got past the replay.
		fixed.Store(true)
		sentinel := ev("x", "s-1", `"sentinel"`)
		publish(t, b, topic, deadletter.Replay(byGroup["a"]), sentinel)
		eventually(t, 30*time.Second, "both groups handled the sentinel", func() bool { return count("a") == 3 && count("b") == 2 })
		mu.Lock()
		replayed := calls["a"][1]
		mu.Unlock()
		if replayed.ID != e.ID || replayed.Extension(deadletter.ExtReplayOf) != "" || replayed.Extension(deadletter.ExtReplayGroup) != "" {
			t.Fatalf("the handler saw the replay as %s %v, want the original id %s", replayed.ID, replayed.Extensions, e.ID)
		}
		if n := count("b"); n != 2 {
			t.Fatalf("group b handled the replay meant for a (%d calls)", n)
		}

		// A replay of what a has applied meanwhile is a duplicate for its inbox.
		before := c.Stats().Duplicates
		publish(t, b, topic, deadletter.Replay(byGroup["a"]))
		eventually(t, 30*time.Second, "the second replay skipped as a duplicate", func() bool { return c.Stats().Duplicates == before+1 })
		if n := count("a"); n != 3 {
			t.Fatalf("the handler ran for an applied event again (%d calls)", n)
		}
		if s := c.Stats(); s.DeadLettered != 2 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// hideProvisioner publishes through p but is not a broker.Provisioner, so
// the runtime cannot provision the dead-letter topic.
type hideProvisioner struct{ p broker.Publisher }

func (h hideProvisioner) Publish(ctx context.Context, topic string, evs ...eventkit.Event) error {
	return h.p.Publish(ctx, topic, evs...)
}

// A dead-letter publish that cannot succeed (RabbitMQ: "<topic>.dlq" has no
// queue, ErrUnroutable) is counted and handled by the bounded policy: a few
// tries, then the event goes back to the broker unacked, so the subject's
// worker is free and the next event of the subject flows; the event comes
// back and is dead-lettered once the dead-letter topic works.
func TestDeadLetterPublishFailureIsBounded(t *testing.T) {
	t.Parallel()
	for _, rb := range realBrokers {
		if rb.name != "rabbitmq" {
			continue
		}
		b, newTopic := rb.open(t)
		topic := newTopic()
		poison := ev("x", "s-1", `"poison"`)
		after := ev("x", "s-1", `"after"`)
		var handledAfter atomic.Bool
		var poisonCalls atomic.Int32
		c := newConsumer(t, b, consumer.Config{OrderedBySubject: true, Retry: fastRetry(2), DeadLetterPublisher: hideProvisioner{b}})
		_ = c.HandleFunc(topic, "g", func(ctx context.Context, e eventkit.Event) error {
			if e.ID == poison.ID {
				poisonCalls.Add(1)
				return eventkit.Permanent(errors.New("poison"))
			}
			handledAfter.Store(true)
			return nil
		})
		waitReady(t, start(t, c))
		publish(t, b, topic, poison, after)
		eventually(t, 30*time.Second, "the later event of the subject handled", handledAfter.Load)
		eventually(t, 10*time.Second, "the poison event handled again", func() bool { return poisonCalls.Load() >= 2 })
		if s := c.Stats(); s.DeadLettered != 0 || s.DeadLetterFailed < 3 {
			t.Fatalf("stats %+v", s)
		}
		// The operator provisions the dead-letter topic: the next round
		// dead-letters the event.
		dlq := topic + ".dlq"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := b.(broker.Provisioner).Provision(ctx, dlq, "late"); err != nil {
			t.Fatal(err)
		}
		cancel()
		eventually(t, 30*time.Second, "dead-lettered", func() bool { return c.Stats().DeadLettered == 1 })
		got := receive(t, lateSubscriber(t, b, dlq, "late"), 10*time.Second)
		if info, _ := deadletter.InfoOf(got); info.EventID != poison.ID {
			t.Fatalf("dead letter %+v", info)
		}
	}
}

// On NATS the ack wait follows the handler timeout also with
// OrderedBySubject (it was the worst case of every retry in place, ~3
// minutes by default, so a killed consumer's events came back that late),
// and the group's unacked limit (MaxAckPending) comes from the Config.
func TestNATSSubscriptionSettings(t *testing.T) {
	t.Parallel()
	b, newTopic := natsBroker(t)
	topic := newTopic()
	c := newConsumer(t, b, consumer.Config{OrderedBySubject: true, HandlerTimeout: 5 * time.Second, GroupMaxInFlight: 777})
	_ = c.HandleFunc(topic, "g", func(context.Context, eventkit.Event) error { return nil })
	waitReady(t, start(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := b.JetStream().Consumer(ctx, b.StreamName(topic), natsbroker.ConsumerName("g"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	if cfg.AckWait != 35*time.Second || cfg.MaxAckPending != 777 {
		t.Fatalf("AckWait %s MaxAckPending %d, want 35s and 777", cfg.AckWait, cfg.MaxAckPending)
	}
	// The dead-letter topic's collector group exists already.
	if _, err := b.JetStream().Consumer(ctx, b.StreamName(topic+".dlq"), natsbroker.ConsumerName(deadletter.DefaultGroup)); err != nil {
		t.Fatalf("dead-letter group not provisioned: %v", err)
	}
}

// On NATS a retry in place that outlasts the ack wait extends it
// (InProgress) instead of letting the server hand a copy out meanwhile: the
// handler runs exactly once per attempt, and no copy queues up behind it.
func TestNATSRetryInPlaceExtendsAckWait(t *testing.T) {
	t.Parallel()
	b, newTopic := natsBroker(t)
	topic := newTopic()
	first := ev("x", "s-1", `"first"`)
	var calls atomic.Int32
	var sentinelSeen atomic.Bool
	c := newConsumer(t, b, consumer.Config{OrderedBySubject: true, AckWait: 2 * time.Second,
		Retry: consumer.RetryPolicy{MaxAttempts: 3, Initial: 1500 * time.Millisecond, Max: 1500 * time.Millisecond, Jitter: -1}})
	_ = c.HandleFunc(topic, "g", func(ctx context.Context, e eventkit.Event) error {
		if e.ID != first.ID {
			sentinelSeen.Store(true)
			return nil
		}
		if calls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	waitReady(t, start(t, c))
	publish(t, b, topic, first)
	eventually(t, 20*time.Second, "first handled", func() bool { return c.Stats().Handled >= 1 })
	// A copy redelivered at the ack wait (2s, before the success at 3s)
	// would be queued ahead of the sentinel on the subject.
	publish(t, b, topic, ev("x", "s-1", `"sentinel"`))
	eventually(t, 20*time.Second, "sentinel handled", sentinelSeen.Load)
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times for 3 attempts: a copy was redelivered during the retry in place", n)
	}
}

// An event type without a route is dead-lettered at once with reason
// no-route (it was acked and, with an inbox, recorded as processed, so an
// old consumer swallowed a new type for good during a rolling deploy);
// IgnoreUnrouted restores skipping.
func TestUnroutedTypeDeadLettered(t *testing.T) {
	t.Parallel()
	eachBroker(t, func(t *testing.T, b broker.Broker, topic string) {
		dlq := lateSubscriber(t, b, topic+".dlq", "ops")
		r := consumer.NewRouter(nil)
		r.Route("known", consumer.HandlerFunc(func(context.Context, eventkit.Event) error { return nil }))
		in := lruinbox.New(lruinbox.Options{})
		c := newConsumer(t, b, consumer.Config{Retry: fastRetry(3), Inbox: in})
		_ = c.Handle(topic, "g", r)
		waitReady(t, start(t, c))
		unknown := ev("brand.new", "s-1", `{}`)
		publish(t, b, topic, unknown)
		info, ok := deadletter.InfoOf(receive(t, dlq, 30*time.Second))
		if !ok || info.EventID != unknown.ID || info.Reason != deadletter.ReasonNoRoute || info.Attempts != 1 {
			t.Fatalf("dead letter %+v", info)
		}
		// Not recorded in the inbox: a replay after the deploy is handled.
		ran := false
		if err := in.Process(context.Background(), inbox.Key{Consumer: "g", EventID: unknown.ID}, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
			t.Fatalf("the unrouted event was recorded in the inbox: %v", err)
		}
		r.IgnoreUnrouted()
		publish(t, b, topic, ev("brand.new", "s-1", `{}`))
		eventually(t, 30*time.Second, "the ignored type acked", func() bool { return c.Stats().Handled == 1 })
		if s := c.Stats(); s.DeadLettered != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
}
