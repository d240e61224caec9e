package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/internal/testenv"
)

// natsBroker connects to the test NATS server; the streams of the topics
// passed to topic() are deleted when the test ends.
func natsBroker(t testing.TB) (*natsbroker.Broker, func() string) {
	t.Helper()
	url := testenv.NATS.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := natsbroker.Connect(ctx, url, natsbroker.Options{Name: "eventkit-consumer-test",
		Stream: natsbroker.StreamOptions{Storage: jetstream.MemoryStorage}})
	if err != nil {
		t.Fatal(err)
	}
	return b, trackedTopics(t, b, func(ctx context.Context, tp string) { _ = b.DeleteTopic(ctx, tp) })
}

// Over NATS: a poison event is dead-lettered after its attempts (Nack with
// delay between them), an undecodable message at once, the others flow.
func TestNATSPoisonAndUndecodable(t *testing.T) {
	t.Parallel()
	b, newTopic := natsBroker(t)
	topic := newTopic()
	dlq := collect(t, b, topic+".dlq")
	poison := ev("x", "p", `"poison"`)
	c := newConsumer(t, b, consumer.Config{Concurrency: 4, Retry: fastRetry(3)})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		if e.ID == poison.ID {
			return errors.New("always fails")
		}
		return nil
	}))
	start(t, c)
	publish(t, b, topic, poison)
	var batch []eventkit.Event
	for i := range 20 {
		batch = append(batch, ev("x", "s"+strconv.Itoa(i), `{}`))
	}
	publish(t, b, topic, batch...)
	if err := b.PublishRaw(context.Background(), topic, nil, []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	got := map[string]deadletter.Info{}
	for range 2 {
		dl := receive(t, dlq, 15*time.Second)
		info, _ := deadletter.InfoOf(dl)
		got[info.Reason] = info
		if info.Undecodable && string(dl.Data) != "not an event" {
			t.Fatalf("undecodable data %q", dl.Data)
		}
	}
	if got[deadletter.ReasonMaxAttempts].Attempts != 3 || got[deadletter.ReasonUndecodable].Attempts != 1 {
		t.Fatalf("dead letters %+v", got)
	}
	eventually(t, 10*time.Second, "20 handled", func() bool { return c.Stats().Handled == 20 })
}

// Over NATS: per-subject order with 16 workers across 100 subjects.
func TestNATSOrderedPerSubject(t *testing.T) {
	t.Parallel()
	b, newTopic := natsBroker(t)
	topic := newTopic()
	const subjects, perSubject = 100, 5
	var mu sync.Mutex
	got := map[string][]int{}
	failed := map[string]bool{}
	c := newConsumer(t, b, consumer.Config{Concurrency: 16, OrderedBySubject: true, Retry: fastRetry(5)})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		seq, _ := strconv.Atoi(string(e.Data))
		mu.Lock()
		defer mu.Unlock()
		if seq == 2 && !failed[e.ID] {
			failed[e.ID] = true
			return errors.New("transient")
		}
		got[e.Subject] = append(got[e.Subject], seq)
		return nil
	}))
	start(t, c)
	publish(t, b, topic, subjectRounds(subjects, perSubject)...)
	handledInOrder(t, c, &mu, got, subjects, perSubject)
}

// Over NATS: shutdown with work in progress settles everything and a second
// consumer gets the rest. Delivery is at least once: a message the server
// sent to the closed subscription's pull request comes back after the ack
// wait, and may also have been redelivered (the test logs duplicates; the
// inbox is what removes them).
func TestNATSShutdownAndResume(t *testing.T) {
	t.Parallel()
	b, newTopic := natsBroker(t)
	topic := newTopic()
	var mu sync.Mutex
	done := map[string]int{}
	who := map[string][]string{}
	handler := func(name string) consumer.Handler {
		return consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
			time.Sleep(20 * time.Millisecond)
			m, _ := consumer.MetaFrom(ctx)
			mu.Lock()
			done[e.ID]++
			who[e.ID] = append(who[e.ID], fmt.Sprint(name, " ", time.Now().Format("05.000"), " attempt ", m.Attempt))
			mu.Unlock()
			return nil
		})
	}
	cfg := consumer.Config{Concurrency: 4, AckWait: 2 * time.Second}
	c1 := newConsumer(t, b, cfg)
	_ = c1.Handle(topic, "g", handler("c1"))
	r1 := start(t, c1)
	var batch []eventkit.Event
	for i := range 60 {
		batch = append(batch, ev("x", "s"+strconv.Itoa(i), `{}`))
	}
	publish(t, b, topic, batch...)
	eventually(t, 10*time.Second, "some handled", func() bool { return c1.Stats().Handled >= 8 })
	if err := r1.stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("c1 stopped at %s", time.Now().Format("05.000"))
	if s := c1.Stats(); s.InFlight != 0 || s.Handling != 0 {
		t.Fatalf("stats after stop %+v", s)
	}
	c2 := newConsumer(t, b, cfg)
	_ = c2.Handle(topic, "g", handler("c2"))
	start(t, c2)
	eventually(t, 20*time.Second, "all 60 handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range batch {
			if done[e.ID] == 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for id, w := range who {
		if len(w) != 1 {
			t.Logf("handled more than once (at least once): %s: %v", id, w)
		}
	}
}
