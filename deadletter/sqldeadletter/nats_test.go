package sqldeadletter_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/lruinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// On real NATS JetStream, within the stream's duplicate window: two groups
// dead-letter the same event and both dead letters are stored (one row per
// group, keyed by the original id); Store.Replay (what `eventkit dlq replay`
// runs) of one of them is delivered, to that group only, with the original
// event id. With the original id as Nats-Msg-Id the second dead letter and
// the replay were dropped as duplicates while Publish reported success.
func TestNATSDeadLettersAndReplayWithinDuplicateWindow(t *testing.T) {
	db, dialect := open(t, "sqlite")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := sqldeadletter.New(db, dialect, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := natsbroker.Connect(ctx, testenv.NATS.URL(t), natsbroker.Options{Stream: natsbroker.StreamOptions{Storage: jetstream.MemoryStorage}})
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.Name("dlnats")
	defer func() {
		_ = b.DeleteTopic(context.Background(), topic)
		_ = b.DeleteTopic(context.Background(), topic+".dlq")
		_ = b.Close(context.Background())
	}()

	e := eventkit.New("order.created", "application/json", []byte(`{}`), eventkit.WithSubject("o-1"))
	var fixed atomic.Bool
	var mu sync.Mutex
	seen := map[string][]string{} // group -> ids the handler saw
	c, err := consumer.New(b, consumer.Config{Retry: consumer.RetryPolicy{MaxAttempts: 1}, Inbox: lruinbox.New(lruinbox.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"billing", "shipping"} {
		_ = c.HandleFunc(topic, g, func(ctx context.Context, ev eventkit.Event) error {
			mu.Lock()
			seen[g] = append(seen[g], ev.ID)
			mu.Unlock()
			if ev.ID == e.ID && (g == "shipping" || !fixed.Load()) {
				return eventkit.Permanent(errors.New(g + " refuses"))
			}
			return nil
		})
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() { stop(); <-done }()
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	subs, err := deadletter.Collect(ctx, b, st, "", topic+".dlq")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range subs {
			_ = s.Close(context.Background())
		}
	}()
	if err := b.Publish(ctx, topic, e); err != nil {
		t.Fatal(err)
	}
	var entries []sqldeadletter.Entry
	testenv.WaitFor(t, 20*time.Second, "the dead letters", func() bool {
		entries, err = st.List(ctx, sqldeadletter.Filter{Topic: topic})
		return err == nil && len(entries) == 2
	})
	for _, en := range entries {
		if en.EventID != e.ID {
			t.Fatalf("entry %+v: want the original event id %s", en, e.ID)
		}
	}

	fixed.Store(true)
	res, err := st.Replay(ctx, b, sqldeadletter.Filter{Topic: topic, Group: "billing"})
	if err != nil || res.Replayed != 1 {
		t.Fatalf("Replay = %+v, %v", res, err)
	}
	sentinel := eventkit.New("order.created", "application/json", []byte(`{}`), eventkit.WithSubject("o-1"))
	if err := b.Publish(ctx, topic, sentinel); err != nil {
		t.Fatal(err)
	}
	count := func(g string) int { mu.Lock(); defer mu.Unlock(); return len(seen[g]) }
	testenv.WaitFor(t, 20*time.Second, "the dead letters", func() bool { return count("billing") == 3 && count("shipping") == 2 })
	mu.Lock()
	defer mu.Unlock()
	if seen["billing"][1] != e.ID {
		t.Fatalf("billing saw the replay as %s, want %s", seen["billing"][1], e.ID)
	}
	if seen["shipping"][1] != sentinel.ID {
		t.Fatalf("shipping handled the replay meant for billing: %v", seen["shipping"])
	}
}
