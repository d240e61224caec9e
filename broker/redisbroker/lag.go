package redisbroker

import (
	"context"
	"fmt"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit/broker"
)

// ConsumerLag reports how many entries of topic's stream group has not
// settled yet: the entries delivered and not acknowledged (the group's
// pending entries list, XINFO GROUPS "pending") plus those not delivered
// yet (XINFO GROUPS "lag"; when Redis cannot tell, after entries were
// deleted from the middle of the stream, they are counted with XRANGE from
// the group's last delivered id). ok is false, with no error, when the
// stream or the group does not exist. It reads and changes nothing.
func (b *Broker) ConsumerLag(ctx context.Context, topic, group string) (lag int64, ok bool, err error) {
	if err := broker.ValidateName("topic", topic); err != nil {
		return 0, false, err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return 0, false, err
	}
	key := b.StreamKey(topic)
	groups, err := b.rdb.XInfoGroups(ctx, key).Result()
	if err != nil {
		if err == goredis.Nil || strings.HasPrefix(err.Error(), "ERR no such key") {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("redis broker: XINFO GROUPS %s: %w", key, err)
	}
	for _, g := range groups {
		if g.Name != group {
			continue
		}
		undelivered := g.Lag
		if undelivered < 0 {
			if undelivered, err = b.countAfter(ctx, key, g.LastDeliveredID); err != nil {
				return 0, true, err
			}
		}
		return g.Pending + undelivered, true, nil
	}
	return 0, false, nil
}

// countAfter counts the entries of key after id, a page at a time.
func (b *Broker) countAfter(ctx context.Context, key, id string) (int64, error) {
	var n int64
	for {
		msgs, err := b.rdb.XRangeN(ctx, key, "("+id, "+", 1000).Result()
		if err != nil {
			return 0, fmt.Errorf("redis broker: XRANGE %s: %w", key, err)
		}
		n += int64(len(msgs))
		if len(msgs) < 1000 {
			return n, nil
		}
		id = msgs[len(msgs)-1].ID
	}
}
