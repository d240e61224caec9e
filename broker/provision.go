package broker

import "context"

// Provisioner is implemented by brokers that can create a topic and groups
// on it ahead of any subscriber: after Provision returns nil, an event
// published to topic is kept for each of the groups until a subscriber of
// the group settles it, even if none has subscribed yet (on RabbitMQ, where
// an event with no queue bound is unroutable, that is what makes a first
// publish succeed). Provision is idempotent and leaves existing groups as
// they are. The consumer runtime provisions dead-letter topics with it.
type Provisioner interface {
	Provision(ctx context.Context, topic string, groups ...string) error
}

// Extender is implemented by deliveries whose ack wait the broker can
// restart: InProgress tells the broker that the delivery is still being
// worked on, so that it is not redelivered before another full ack wait.
type Extender interface {
	InProgress(ctx context.Context) error
}
