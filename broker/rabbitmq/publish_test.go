package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/rabbitmq"
)

// TestReturnedSubjectStopsItsLaterEvents publishes, with a window of one
// (each confirm is in before the next event is sent), events of two
// subjects to an exchange with no queue: the first event of each subject is
// returned, and the later ones of that subject must not be sent at all
// (broker.ErrNotSent), so that a retry of the first cannot land behind them.
func TestReturnedSubjectStopsItsLaterEvents(t *testing.T) {
	t.Parallel()
	opts := rabbitmq.Options{PublishWindow: 1}
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
			want = rabbitmq.ErrUnroutable
		}
		if !errors.Is(f.Err, want) || f.ID != evs[f.Index].ID {
			t.Errorf("event %d (%s): %v, want %v", f.Index, f.ID, f.Err, want)
		}
	}
}
