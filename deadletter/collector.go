package deadletter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

// DefaultGroup is the consumer group Collect uses by default. The consumer
// runtime provisions it on each dead-letter topic (consumer.Config's
// DeadLetterGroup defaults to it), so dead letters published before the
// collector first ran are kept for it.
const DefaultGroup = "eventkit-dlq-collector"

// ErrNotDeadLetter is returned when an event lacks the dead-letter attributes.
var ErrNotDeadLetter = errors.New("deadletter: not a dead-letter event")

// Adder stores dead letters; sqldeadletter.Store is one. Add must be
// idempotent for a dead letter stored twice (a crash between Add and the
// ack delivers it again).
type Adder interface {
	Add(ctx context.Context, dl eventkit.Event) error
}

// Collect subscribes to each dead-letter topic and stores every dead letter
// in s before acking it (at least once: a crash between the two stores it
// again). Messages on a dead-letter topic that are not dead
// letters (garbage, or events published there by hand) are stored as
// undecodable dead letters with the reason, never dropped. It returns the
// subscriptions; close them (or cancel ctx) to stop.
func Collect(ctx context.Context, sub broker.Subscriber, s Adder, group string, topics ...string) ([]broker.Subscription, error) {
	if group == "" {
		group = DefaultGroup
	}
	var subs []broker.Subscription
	for _, topic := range topics {
		h := func(ctx context.Context, d broker.Delivery) error {
			ev := d.Event()
			if err := d.DecodeErr(); err != nil {
				ev = foreign(d.Topic(), group, rawOf(err), err)
			} else if _, ok := InfoOf(ev); !ok {
				ev = foreign(d.Topic(), group, nil, fmt.Errorf("%w on dead-letter topic: %s", ErrNotDeadLetter, ev))
				if b, err := d.Event().MarshalJSON(); err == nil {
					ev.Data = b
				}
			}
			if err := s.Add(ctx, ev); err != nil {
				slog.Default().Warn("deadletter: cannot store dead letter; will retry", "topic", d.Topic(), "error", err)
				return d.Nack(ctx, time.Second)
			}
			return d.Ack(ctx)
		}
		sb, err := sub.Subscribe(ctx, topic, group, h)
		if err != nil {
			for _, o := range subs {
				_ = o.Close(context.Background())
			}
			return nil, fmt.Errorf("deadletter: subscribe to %s: %w", topic, err)
		}
		subs = append(subs, sb)
	}
	return subs, nil
}

func rawOf(err error) []byte {
	var de *eventkit.DecodeError
	if errors.As(err, &de) {
		return de.Raw
	}
	return nil
}

// foreign wraps something found on a dead-letter topic that is not a dead
// letter into an undecodable dead letter, so it is kept and visible.
func foreign(topic, group string, raw []byte, err error) eventkit.Event {
	ev := eventkit.New(UndecodableType, "application/octet-stream", raw, eventkit.WithSource("eventkit/deadletter"))
	ev.DataVersion = ""
	now := time.Now().UTC().Format(time.RFC3339Nano)
	ev.Extensions = map[string]string{
		ExtTopic: topic, ExtGroup: group, ExtAttempts: "0",
		ExtFirstFailure: now, ExtLastFailure: now,
		ExtReason: ReasonUndecodable, ExtError: cleanText(err.Error(), 1000),
	}
	return ev
}
