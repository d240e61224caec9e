package rabbitmqbroker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
)

// TestReturnedSubjectStopsItsLaterEvents publishes, with a window of one
// (each confirm is in before the next event is sent), events of two
// subjects to an exchange with no queue: the first event of each subject is
// returned, and the later ones of that subject must not be sent at all
// (broker.ErrNotSent), so that a retry of the first cannot land behind them.
func TestReturnedSubjectStopsItsLaterEvents(t *testing.T) {
	t.Parallel()
	opts := rabbitmqbroker.Options{PublishWindow: 1}
	topic := provisionedTopic(t, opts)
	b := newBroker(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs := make([]eventkit.Event, 6)
	for i := range evs {
		evs[i] = eventkit.New("test.event", "application/json", []byte(`{}`), eventkit.WithSubject(fmt.Sprintf("s%d", i%2)))
	}
	err := b.Publish(ctx, topic, evs...)
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != len(evs) {
		t.Fatalf("Publish = %v, want all %d events named", err, len(evs))
	}
	for _, f := range pe.Failed {
		want := broker.ErrNotSent
		if f.Index < 2 {
			want = rabbitmqbroker.ErrUnroutable
		}
		if !errors.Is(f.Err, want) || f.ID != evs[f.Index].ID {
			t.Errorf("event %d (%s): %v, want %v", f.Index, f.ID, f.Err, want)
		}
	}
}

// TestSameKeyAndIDInOneCall publishes a call in which several messages look
// alike to basic.return (the same event three times; ids over 255 bytes,
// which travel without a message id) to a routable and to an unroutable
// topic: every one must be accepted on the first and returned on the second.
func TestSameKeyAndIDInOneCall(t *testing.T) {
	t.Parallel()
	opts := rabbitmqbroker.Options{}
	good, bad := provisionedTopic(t, opts, "g"), provisionedTopic(t, opts)
	b := newBroker(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ev := eventkit.New("test.event", "application/json", []byte(`{}`))
	evs := []eventkit.Event{ev, ev, ev}
	for range 3 {
		long := eventkit.New("test.event", "application/json", []byte(`{}`))
		long.ID = strings.Repeat("x", 300) + eventkit.NewID()
		evs = append(evs, long)
	}
	if err := b.Publish(ctx, good, evs...); err != nil {
		t.Fatalf("Publish to a routable topic = %v", err)
	}
	err := b.Publish(ctx, bad, evs...)
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != len(evs) {
		t.Fatalf("Publish to an unroutable topic = %v, want all %d returned", err, len(evs))
	}
	for _, f := range pe.Failed {
		if !errors.Is(f.Err, rabbitmqbroker.ErrUnroutable) {
			t.Errorf("event %d: %v, want ErrUnroutable", f.Index, f.Err)
		}
	}
}
