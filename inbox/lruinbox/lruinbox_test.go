package lruinbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/inboxtest"
	"github.com/eventkit/eventkit/inbox/lruinbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSuite(t *testing.T) {
	inboxtest.Exercise(t, func(t *testing.T) inbox.Inbox { return lruinbox.New(lruinbox.Options{}) },
		inboxtest.WithExpiry(func(t *testing.T) inbox.Inbox { return lruinbox.New(lruinbox.Options{TTL: 300 * time.Millisecond}) },
			0, 300*time.Millisecond))
}

func TestTTLAndSizeBound(t *testing.T) {
	in := lruinbox.New(lruinbox.Options{Size: 2, TTL: 50 * time.Millisecond})
	ctx := context.Background()
	noop := func(context.Context) error { return nil }
	k := func(id string) inbox.Key { return inbox.Key{Consumer: "c", EventID: id} }
	for _, id := range []string{"a", "b"} {
		if err := in.Process(ctx, k(id), noop); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.Process(ctx, k("a"), noop); !errors.Is(err, inbox.ErrDuplicate) {
		t.Fatalf("a: %v", err)
	}
	if err := in.Process(ctx, k("c"), noop); err != nil { // evicts b (a was used more recently)
		t.Fatal(err)
	}
	if in.Len() != 2 {
		t.Fatalf("Len %d", in.Len())
	}
	if err := in.Process(ctx, k("b"), noop); err != nil {
		t.Fatalf("evicted b: %v", err)
	}
	time.Sleep(60 * time.Millisecond)
	if err := in.Process(ctx, k("b"), noop); err != nil {
		t.Fatalf("expired b: %v", err)
	}
}
