package natsbroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

var _ broker.Provisioner = (*Broker)(nil)

// Provision implements broker.Provisioner: it creates topic's stream and,
// for each group, its durable consumer (DeliverAll, as Subscribe would,
// with the default AckWait and MaxInFlight) unless the group exists; an
// existing group is left as it is, and the first Subscribe sets its
// settings.
func (b *Broker) Provision(ctx context.Context, topic string, groups ...string) error {
	if err := adapterkit.CheckProvision(topic, groups, b.isClosed()); err != nil {
		return err
	}
	stream, err := b.stream(ctx, topic)
	if err != nil {
		return err
	}
	for _, g := range groups {
		name := ConsumerName(g)
		_, err := b.js.Consumer(ctx, stream, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			_, err = b.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
				Durable:       name,
				Description:   "eventkit group " + g + " on topic " + topic,
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       broker.DefaultAckWait,
				MaxDeliver:    -1,
				MaxAckPending: max(broker.DefaultMaxInFlight, b.opts.MaxAckPending),
				DeliverPolicy: jetstream.DeliverAllPolicy,
			})
			if errors.Is(err, jetstream.ErrConsumerExists) {
				err = nil // created meanwhile
			}
		}
		if err != nil {
			return fmt.Errorf("natsbroker: provision consumer %s on stream %s: %w", name, stream, err)
		}
	}
	return nil
}
