package redisbroker

import (
	"context"

	"github.com/eventkit/eventkit/broker"
)

var _ broker.Provisioner = (*Broker)(nil)

// Provision implements broker.Provisioner: it creates each group on topic's
// stream (and the stream if needed) as Subscribe would, starting at
// Options.GroupStart; an existing group is left as it is. Without groups
// there is nothing to create: XADD creates the stream.
func (b *Broker) Provision(ctx context.Context, topic string, groups ...string) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	for _, g := range groups {
		if err := broker.ValidateName("group", g); err != nil {
			return err
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return broker.ErrClosed
	}
	for _, g := range groups {
		if err := b.createGroup(ctx, b.StreamKey(topic), g); err != nil {
			return err
		}
	}
	return nil
}
