package redisinbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/inboxtest"
	"github.com/eventkit/eventkit/inbox/redisinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func client(t *testing.T) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(testenv.Redis.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestSuite(t *testing.T) {
	inboxtest.Exercise(t, func(t *testing.T) inbox.Inbox {
		return redisinbox.New(client(t), redisinbox.Options{Prefix: testenv.Name("inbox") + ":", TTL: time.Minute})
	}, inboxtest.WithExpiry(func(t *testing.T) inbox.Inbox {
		return redisinbox.New(client(t), redisinbox.Options{Prefix: testenv.Name("inbox") + ":", Lease: 300 * time.Millisecond, TTL: 600 * time.Millisecond})
	}, 300*time.Millisecond, 600*time.Millisecond))
}

// The documented windows: a reservation outlived by its handler lets a
// duplicate in; a key past its TTL is processed again.
func TestLeaseAndTTLWindows(t *testing.T) {
	t.Parallel()
	rdb := client(t)
	in := redisinbox.New(rdb, redisinbox.Options{Prefix: testenv.Name("inbox") + ":", Lease: 100 * time.Millisecond, TTL: 300 * time.Millisecond})
	ctx := context.Background()
	key := inbox.Key{Consumer: "c", EventID: "e1"}
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- in.Process(ctx, key, func(context.Context) error {
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	if err := in.Process(ctx, key, func(context.Context) error { return nil }); !errors.Is(err, inbox.ErrInProgress) {
		t.Fatalf("during lease: %v, want ErrInProgress", err)
	}
	time.Sleep(150 * time.Millisecond) // lease over, handler still running
	ran := false
	if err := in.Process(ctx, key, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("after lease: err=%v ran=%v (the documented window)", err, ran)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := in.Process(ctx, key, func(context.Context) error { return nil }); !errors.Is(err, inbox.ErrDuplicate) {
		t.Fatalf("after done: %v", err)
	}
	time.Sleep(400 * time.Millisecond) // TTL over
	if err := in.Process(ctx, key, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("after TTL: %v", err)
	}
}

// Redis unreachable: Process fails without calling the handler.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	in := redisinbox.New(rdb, redisinbox.Options{})
	ran := false
	err := in.Process(context.Background(), inbox.Key{Consumer: "c", EventID: "e"}, func(context.Context) error { ran = true; return nil })
	if err == nil || ran || errors.Is(err, inbox.ErrDuplicate) {
		t.Fatalf("err=%v ran=%v", err, ran)
	}
}
