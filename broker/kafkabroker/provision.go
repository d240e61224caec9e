package kafkabroker

import (
	"context"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

var _ broker.Provisioner = (*Broker)(nil)

// Provision implements broker.Provisioner: it creates topic (EnsureTopic).
// Groups need nothing created ahead: a group that has committed no offset
// starts at the oldest record kept, so it reads every event published
// before it first subscribed (within the topic's retention).
func (b *Broker) Provision(ctx context.Context, topic string, groups ...string) error {
	if err := adapterkit.CheckProvision(topic, groups, b.isClosed()); err != nil {
		return err
	}
	return b.EnsureTopic(ctx, topic)
}
