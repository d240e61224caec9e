package consumer_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	p := consumer.RetryPolicy{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.2}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 50: time.Second} {
		for range 100 {
			d := p.Backoff(attempt)
			if d < want*8/10 || d > want*12/10 {
				t.Fatalf("Backoff(%d) = %s, want %s ±20%%", attempt, d, want)
			}
		}
	}
	if d := (consumer.RetryPolicy{Initial: 10 * time.Millisecond, Jitter: -1}).Backoff(3); d != 40*time.Millisecond {
		t.Fatalf("no jitter: %s", d)
	}
	if consumer.RetryAfter(time.Second, nil) != nil {
		t.Fatal("RetryAfter(nil) != nil")
	}
	err := consumer.RetryAfter(time.Second, context.DeadlineExceeded)
	if !errors.Is(err, context.DeadlineExceeded) || eventkit.IsPermanent(err) {
		t.Fatal("RetryAfter must wrap and not be permanent")
	}
}

// With InboxRetention, Run prunes old inbox keys in the background.
func TestInboxRetentionDuringRun(t *testing.T) {
	t.Parallel()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "r.db")+"?_txlock=immediate&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	in, _ := sqlinbox.New(db, sqlinbox.SQLite, sqlinbox.Options{})
	ctx := context.Background()
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// An old key, processed "long ago": backdate it.
	_ = in.Process(ctx, inbox.Key{Consumer: "g", EventID: "old"}, func(context.Context) error { return nil })
	if _, err := db.Exec(`UPDATE processed_events SET processed_at = '2000-01-01T00:00:00.000000Z'`); err != nil {
		t.Fatal(err)
	}
	b := newBroker(t)
	topic := testenv.Name("t")
	c := newConsumer(t, b, consumer.Config{Inbox: in, InboxRetention: time.Hour, InboxPruneInterval: 10 * time.Millisecond})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(context.Context, eventkit.Event) error { return nil }))
	r := start(t, c)
	publish(t, b, topic, ev("x", "s", `{}`))
	count := func() int {
		var n int
		_ = db.QueryRow(`SELECT COUNT(*) FROM processed_events`).Scan(&n)
		return n
	}
	eventually(t, 5*time.Second, "old key pruned, new key kept", func() bool { return c.Stats().Handled == 1 && count() == 1 })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}
