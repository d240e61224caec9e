package natsbroker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// TestCollidingNamesRejected: sanitizeName maps "x.b" and "x_b_<hash of
// x.b>" to one stream name (and group names to one consumer). The second
// topic or group must be refused, not given the first one's stream or
// consumer.
func TestCollidingNamesRejected(t *testing.T) {
	url := testenv.NATS.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Connect(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	dotted := testenv.Name("ekt") + ".b"
	twin := sanitizeName(dotted)
	if strings.Contains(twin, ".") || b.StreamName(twin) != b.StreamName(dotted) {
		t.Fatalf("test premise: %q and %q should share a stream name", dotted, twin)
	}
	defer b.DeleteTopic(context.Background(), dotted)
	h := broker.AutoAck(func(context.Context, eventkit.Event, int) error { return nil })
	sub, err := b.Subscribe(ctx, dotted, "g.x", h)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	if err := b.Publish(ctx, twin, eventkit.New("t", "application/json", []byte(`{}`))); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Errorf("Publish to %q (same stream as %q) = %v, want ErrInvalidTopic", twin, dotted, err)
	}
	if s, err := b.Subscribe(ctx, dotted, sanitizeName("g.x"), h); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Errorf("Subscribe group %q (same consumer as g.x) = %v, want ErrInvalidTopic", sanitizeName("g.x"), err)
		if s != nil {
			_ = s.Close(context.Background())
		}
	}
}
