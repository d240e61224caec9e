package kafkabroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/eventkit/eventkit/broker"
)

// ConsumerLag reports how many records of topic, and of group's retry
// topic, group has not committed yet: per partition, the end offset less
// the group's committed offset (less the start offset where the group has
// committed nothing, or committed below it: a group without a commit starts
// at the oldest record kept). Records handed to a subscriber and settled
// count until the next commit (Options.CommitInterval). ok is false, with
// no error, when the topic does not exist or the group (GroupID) has
// neither committed an offset on the topic or its retry topic nor has a
// member. It reads and changes nothing.
func (b *Broker) ConsumerLag(ctx context.Context, topic, group string) (lag int64, ok bool, err error) {
	if b.isClosed() {
		return 0, false, broker.ErrClosed
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return 0, false, err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return 0, false, err
	}
	gid := b.opts.GroupID(topic, group)
	retry := b.opts.RetryTopic(topic, group)
	committed, err := b.adm.FetchOffsets(ctx, gid)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return 0, false, fmt.Errorf("kafka: committed offsets of group %q: %w", gid, err)
	}
	known := len(committed[topic]) > 0 || len(committed[retry]) > 0
	if !known {
		dg, err := b.adm.DescribeGroups(ctx, gid)
		if err != nil {
			return 0, false, fmt.Errorf("kafka: describe group %q: %w", gid, err)
		}
		if g, found := dg[gid]; !found || len(g.Members) == 0 {
			return 0, false, nil
		}
	}
	ends, err := b.adm.ListEndOffsets(ctx, topic, retry)
	if err != nil {
		return 0, false, fmt.Errorf("kafka: end offsets of %q: %w", topic, err)
	}
	starts, err := b.adm.ListStartOffsets(ctx, topic, retry)
	if err != nil {
		return 0, false, fmt.Errorf("kafka: start offsets of %q: %w", topic, err)
	}
	topicSeen := false
	var errs []error
	ends.Each(func(e kadm.ListedOffset) {
		if e.Err != nil {
			if !errors.Is(e.Err, kerr.UnknownTopicOrPartition) {
				errs = append(errs, fmt.Errorf("kafka: end offset of %s/%d: %w", e.Topic, e.Partition, e.Err))
			}
			return
		}
		if e.Topic == topic {
			topicSeen = true
		}
		from := int64(0)
		if s, found := starts.Lookup(e.Topic, e.Partition); found && s.Err == nil && s.Offset > 0 {
			from = s.Offset
		}
		if c, found := committed.Lookup(e.Topic, e.Partition); found && c.Err == nil && c.At > from {
			from = c.At
		}
		if e.Offset > from {
			lag += e.Offset - from
		}
	})
	if err := errors.Join(errs...); err != nil {
		return 0, false, err
	}
	if !topicSeen {
		return 0, false, nil
	}
	return lag, true, nil
}
