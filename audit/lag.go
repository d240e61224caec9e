package audit

import (
	"context"
	"fmt"
)

// ConsumerLagger is implemented by brokers that report how far one group is
// behind on one topic without listing the groups (Kafka, RabbitMQ, Redis
// Streams: see each adapter's ConsumerLag for what it counts). ok is false
// when the broker does not know the group on the topic (or the topic).
type ConsumerLagger interface {
	ConsumerLag(ctx context.Context, topic, group string) (lag int64, ok bool, err error)
}

// LagOf reports the lag of each of groups on topic that b knows, as
// GroupLag rows whose Pending is the adapter's figure and Note says what it
// counts.
func LagOf(ctx context.Context, b ConsumerLagger, broker, topic string, groups []string) ([]GroupLag, error) {
	var out []GroupLag
	for _, g := range groups {
		n, ok, err := b.ConsumerLag(ctx, topic, g)
		if err != nil {
			return out, fmt.Errorf("audit: lag of group %q on topic %q: %w", g, topic, err)
		}
		if !ok {
			continue
		}
		out = append(out, GroupLag{Topic: topic, Group: g, Pending: uint64(max(n, 0)), Note: lagNotes[broker]})
	}
	return out, nil
}

var lagNotes = map[string]string{
	"kafka":    "records not committed (topic and retry topic)",
	"rabbitmq": "messages ready in the group's queue and retry queues (unacked not counted)",
	"redis":    "entries pending (unacked) plus not yet delivered",
}
