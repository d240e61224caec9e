package deadletter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/consumer"
)

// DefaultCollectorGroup is the consumer group the Collector uses.
// It is the group the consumer runtime provisions on each dead-letter topic
// (consumer.Config.DeadLetterGroup), so dead letters published before the
// collector first ran are kept for it.
const DefaultCollectorGroup = consumer.DefaultDeadLetterGroup

// Collect subscribes to each dead-letter topic and stores every dead letter
// in s before acking it. Messages on a dead-letter topic that are not dead
// letters (garbage, or events published there by hand) are stored as
// undecodable dead letters with the reason, never dropped. It returns the
// subscriptions; close them (or cancel ctx) to stop.
func Collect(ctx context.Context, sub broker.Subscriber, s *Store, group string, topics ...string) ([]broker.Subscription, error) {
	if group == "" {
		group = DefaultCollectorGroup
	}
	var subs []broker.Subscription
	for _, topic := range topics {
		h := func(ctx context.Context, d broker.Delivery) error {
			ev := d.Event()
			if err := d.DecodeErr(); err != nil {
				ev = foreign(d.Topic(), group, rawOf(err), err)
			} else if _, ok := consumer.DeadLetterInfo(ev); !ok {
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
	ev := eventkit.New(consumer.UndecodableType, "application/octet-stream", raw, eventkit.WithSource("eventkit/deadletter"))
	ev.DataVersion = ""
	now := time.Now().UTC().Format(time.RFC3339Nano)
	ev.Extensions = map[string]string{
		consumer.ExtDLQTopic: topic, consumer.ExtDLQGroup: group, consumer.ExtDLQAttempts: "0",
		consumer.ExtDLQFirstFailure: now, consumer.ExtDLQLastFailure: now,
		consumer.ExtDLQReason: consumer.ReasonUndecodable, consumer.ExtDLQError: clean(err.Error()),
	}
	return ev
}

// clean makes s a valid extension value: no control characters, valid
// UTF-8, at most 1000 bytes.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 1000 {
		s = strings.ToValidUTF8(s[:1000], "")
	}
	return s
}
