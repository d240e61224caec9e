package redisbroker

import (
	"context"
	"fmt"

	"github.com/eventkit/eventkit/broker"
)

// DeleteTopic deletes topic's stream with every entry and consumer group in
// it. It is meant for tests, benchmarks and decommissioning; a missing
// stream is not an error.
func (b *Broker) DeleteTopic(ctx context.Context, topic string) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	key := b.StreamKey(topic)
	if err := b.rdb.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("redis broker: DEL %s: %w", key, err)
	}
	return nil
}
