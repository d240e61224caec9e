package audit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
)

// Redis returns the Stream of a Redis Streams broker: it reads a topic's
// stream with XRANGE (no consumer group, nothing changed), up to the last
// entry stored when Read began. Pos is the entry's ordinal in the read
// (1-based); Time is the entry id's millisecond part.
func Redis(b *redisbroker.Broker) Stream { return redisStream{b} }

type redisStream struct{ b *redisbroker.Broker }

func (s redisStream) Name() string { return "redis" }

func (s redisStream) Read(ctx context.Context, topic string, since time.Time, fn func(Message) error) error {
	rdb, key := s.b.Client(), s.b.StreamKey(topic)
	n, err := rdb.Exists(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("audit: stream %s of topic %q: %w", key, topic, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %q (no Redis stream %s)", ErrNoTopic, topic, key)
	}
	last, err := rdb.XRevRangeN(ctx, key, "+", "-", 1).Result()
	if err != nil {
		return fmt.Errorf("audit: read topic %q: %w", topic, err)
	}
	if len(last) == 0 {
		return nil
	}
	end, start := last[0].ID, "-"
	if !since.IsZero() {
		start = strconv.FormatInt(since.UnixMilli(), 10) + "-0"
	}
	var pos uint64
	for {
		msgs, err := rdb.XRangeN(ctx, key, start, end, 500).Result()
		if err != nil {
			return fmt.Errorf("audit: read topic %q: %w", topic, err)
		}
		for _, m := range msgs {
			pos++
			ev, derr := redisbroker.DecodeEntry(m.Values)
			var at time.Time
			if ms, err := strconv.ParseInt(m.ID[:max(strings.IndexByte(m.ID, '-'), 0)], 10, 64); err == nil {
				at = time.UnixMilli(ms).UTC()
			}
			if err := fn(Message{Pos: pos, Time: at, Event: ev, DecodeErr: derr}); err != nil {
				return err
			}
		}
		if len(msgs) < 500 {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}
