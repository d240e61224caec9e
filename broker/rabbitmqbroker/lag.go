package rabbitmqbroker

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit/broker"
)

// ConsumerLag reports how many messages wait in group's queue on topic
// (QueueName) and in its retry queues (nacked with a delay, waiting for
// it), as a passive queue declaration reports them: messages ready for
// delivery. Messages delivered to a consumer and not yet acknowledged are
// not counted (AMQP does not report them). ok is false, with no error, when
// the group's queue does not exist. It declares nothing and changes
// nothing; each declaration runs on a channel of its own (a passive
// declaration of a missing queue closes its channel).
func (b *Broker) ConsumerLag(ctx context.Context, topic, group string) (lag int64, ok bool, err error) {
	if b.isClosed() {
		return 0, false, broker.ErrClosed
	}
	if err := broker.ValidateName("group", group); err != nil {
		return 0, false, err
	}
	if err := b.checkNames(topic, group); err != nil {
		return 0, false, err
	}
	conn, err := b.connection(ctx)
	if err != nil {
		return 0, false, err
	}
	q := QueueName(topic, group)
	names := []string{q}
	for _, d := range b.opts.DelayBuckets {
		names = append(names, RetryQueueName(q, d))
	}
	for i, n := range names {
		c, found, err := queueDepth(conn, n)
		if err != nil {
			return 0, false, err
		}
		if !found {
			if i == 0 {
				return 0, false, nil
			}
			continue
		}
		lag += int64(c)
	}
	return lag, true, nil
}

// queueDepth passively declares queue on a fresh channel.
func queueDepth(conn *amqp.Connection, queue string) (int, bool, error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, false, fmt.Errorf("%w: open channel: %w", ErrConnectionLost, err)
	}
	defer ch.Close()
	st, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("rabbitmq: passive declare of queue %q: %w", queue, err)
	}
	return st.Messages, true, nil
}
