package kafkabroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/eventkit/eventkit/broker"
)

// DeleteTopic deletes topic and the retry topics of the given groups, with
// every record in them, and the groups' committed offsets. It is meant for
// tests, benchmarks and decommissioning; a missing topic is not an error.
func (b *Broker) DeleteTopic(ctx context.Context, topic string, groups ...string) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	topics := []string{topic}
	for _, g := range groups {
		topics = append(topics, b.opts.RetryTopic(topic, g))
	}
	resp, err := b.adm.DeleteTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("kafka: delete topics %q: %w", topics, err)
	}
	var errs []error
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("kafka: delete topic %q: %w", r.Topic, r.Err))
		}
		b.topics.Delete(r.Topic)
	}
	if len(groups) > 0 {
		names := make([]string, len(groups))
		for i, g := range groups {
			names[i] = b.opts.GroupID(topic, g)
		}
		if resp, err := b.adm.DeleteGroups(ctx, names...); err == nil {
			for _, r := range resp {
				if r.Err != nil && !errors.Is(r.Err, kerr.GroupIDNotFound) {
					errs = append(errs, fmt.Errorf("kafka: delete group %q: %w", r.Group, r.Err))
				}
			}
		}
	}
	return errors.Join(errs...)
}
