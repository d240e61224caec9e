package redisbroker

import (
	"context"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

var _ broker.Provisioner = (*Broker)(nil)

// Provision implements broker.Provisioner: it creates each group on topic's
// stream (and the stream if needed) as Subscribe would, starting at
// Options.GroupStart; an existing group is left as it is. Without groups
// there is nothing to create: XADD creates the stream.
func (b *Broker) Provision(ctx context.Context, topic string, groups ...string) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := adapterkit.CheckProvision(topic, groups, b.subs.Closed()); err != nil {
		return err
	}
	for _, g := range groups {
		if err := b.createGroup(ctx, b.StreamKey(topic), g); err != nil {
			return err
		}
	}
	return nil
}
