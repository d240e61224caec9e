package memorybroker

import (
	"context"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

var _ broker.Provisioner = (*Broker)(nil)

// groupLocked returns the group of a topic, creating both if needed; a new
// group starts at the oldest event kept.
func (b *Broker) groupLocked(topicName, groupName string) *group {
	t := b.topicLocked(topicName)
	g := t.groups[groupName]
	if g == nil {
		g = &group{t: t, name: groupName, next: t.base, pend: map[uint64]*pending{}, notify: make(chan struct{})}
		t.groups[groupName] = g
	}
	return g
}

// Provision implements broker.Provisioner: it creates topic and each group
// (which then keeps every event published from now on, see Options) as
// Subscribe would.
func (b *Broker) Provision(ctx context.Context, topic string, groups ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := adapterkit.CheckProvision(topic, groups, b.subs.Closed()); err != nil {
		return err
	}
	b.topicLocked(topic)
	for _, g := range groups {
		b.groupLocked(topic, g)
	}
	return nil
}
