package rabbitmqbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit/broker"
)

// ExchangeName is the durable topic exchange of a topic: the topic name itself.
func ExchangeName(topic string) string { return topic }

// QueueName is the durable queue of a group on a topic: "<topic>.<group>"
// when the group has no '.', else "<topic>:<group>". Topic and group names
// hold no ':' (broker.ValidateName), so the name tells the pair apart:
// without a ':' the group is what follows the last '.', with one it is what
// follows the ':'. ("a.b", "c") gets "a.b.c" and ("a", "b.c") "a:b.c".
// Queues of groups without a dot keep the names of earlier versions.
func QueueName(topic, group string) string {
	if strings.Contains(group, ".") {
		return topic + ":" + group
	}
	return topic + "." + group
}

// RetryQueueName is the retry queue of a group queue for one delay bucket:
// "<queue>:retry:<milliseconds>". Group queues have at most one ':', retry
// queues two or three, so a retry queue is never a group's queue (the
// ".retry.<ms>" suffix of earlier versions was: the queue of group "1000" on
// topic "orders.billing.retry").
func RetryQueueName(queue string, delay time.Duration) string {
	return queue + ":retry:" + strconv.FormatInt(delay.Milliseconds(), 10)
}

// maxNameLen is AMQP's limit on exchange and queue names (short strings).
const maxNameLen = 255

func (b *Broker) checkNames(topic, group string) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if group == "" {
		return nil
	}
	if err := broker.ValidateName("group", group); err != nil {
		return err
	}
	longest := RetryQueueName(QueueName(topic, group), b.opts.DelayBuckets[len(b.opts.DelayBuckets)-1])
	if len(longest) > maxNameLen {
		return fmt.Errorf("%w: topic %q and group %q make a queue name (%s) longer than RabbitMQ's %d bytes",
			broker.ErrInvalidTopic, topic, group, longest, maxNameLen)
	}
	return nil
}

// bucket rounds a Nack delay up to the next configured bucket (capped at the
// largest).
func (b *Broker) bucket(d time.Duration) time.Duration {
	for _, x := range b.opts.DelayBuckets {
		if d <= x {
			return x
		}
	}
	return b.opts.DelayBuckets[len(b.opts.DelayBuckets)-1]
}

func (b *Broker) queueArgs() amqp.Table {
	if b.opts.QueueType == QueueQuorum {
		return amqp.Table{"x-queue-type": QueueQuorum}
	}
	return nil
}

func (b *Broker) retryArgs(queue string, delay time.Duration) amqp.Table {
	t := amqp.Table{
		"x-message-ttl":             delay.Milliseconds(),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": queue,
	}
	if b.retryQuorum {
		// At-least-once dead-lettering (RabbitMQ 3.10+): the message
		// leaves the retry queue only once the main queue confirmed it.
		t["x-queue-type"] = QueueQuorum
		t["x-dead-letter-strategy"] = "at-least-once"
		t["x-overflow"] = "reject-publish"
	}
	return t
}

// declareGroup declares the topic's exchange, the group's queue and its
// binding on ch.
func (b *Broker) declareGroup(ch *amqp.Channel, topic, group string) error {
	if err := ch.ExchangeDeclare(ExchangeName(topic), amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbitmq: declare exchange %q: %w", ExchangeName(topic), err)
	}
	q := QueueName(topic, group)
	if _, err := ch.QueueDeclare(q, true, false, false, false, b.queueArgs()); err != nil {
		return fmt.Errorf("rabbitmq: declare %s queue %q: %w", b.opts.QueueType, q, err)
	}
	if err := ch.QueueBind(q, "#", ExchangeName(topic), false, nil); err != nil {
		return fmt.Errorf("rabbitmq: bind queue %q to %q: %w", q, ExchangeName(topic), err)
	}
	return nil
}

// withAdmin runs fn on the broker's declaration channel, serialized, opening
// it if needed. A channel closed by a failed declaration is replaced next time.
func (b *Broker) withAdmin(ctx context.Context, fn func(ch *amqp.Channel) error) error {
	conn, err := b.connection(ctx)
	if err != nil {
		return err
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	if b.admin == nil || b.admin.IsClosed() {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("%w: open channel: %w", ErrConnectionLost, err)
		}
		b.admin = ch
	}
	return fn(b.admin)
}

// ensureExchange declares the topic's exchange once per connection.
func (b *Broker) ensureExchange(ctx context.Context, topic string) error {
	key := "x:" + topic
	b.adminMu.Lock()
	done := b.declared[key]
	b.adminMu.Unlock()
	if done {
		return nil
	}
	return b.withAdmin(ctx, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(ExchangeName(topic), amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return fmt.Errorf("rabbitmq: declare exchange %q: %w", ExchangeName(topic), err)
		}
		b.declared[key] = true
		return nil
	})
}

// ensureRetryQueue declares a retry queue once per connection.
func (b *Broker) ensureRetryQueue(ctx context.Context, queue string, delay time.Duration) (string, error) {
	name := RetryQueueName(queue, delay)
	key := "q:" + name
	b.adminMu.Lock()
	done := b.declared[key]
	b.adminMu.Unlock()
	if done {
		return name, nil
	}
	return name, b.withAdmin(ctx, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(name, true, false, false, false, b.retryArgs(queue, delay)); err != nil {
			return fmt.Errorf("rabbitmq: declare retry queue %q: %w", name, err)
		}
		b.declared[key] = true
		return nil
	})
}

// Provision declares the topology of topic and groups ahead of time: the
// topic's exchange, and for each group its durable queue bound to it. Publish
// returns ErrUnroutable for a topic with no queue bound, so a producer (or a
// deployment step) provisions the groups that must not miss events before it
// publishes; Subscribe provisions its own group. Provision is idempotent.
func (b *Broker) Provision(ctx context.Context, topic string, groups ...string) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	if err := b.checkNames(topic, ""); err != nil {
		return err
	}
	for _, g := range groups {
		if g == "" {
			return broker.ValidateName("group", g)
		}
		if err := b.checkNames(topic, g); err != nil {
			return err
		}
	}
	return b.withAdmin(ctx, func(ch *amqp.Channel) error {
		if len(groups) == 0 {
			return ch.ExchangeDeclare(ExchangeName(topic), amqp.ExchangeTopic, true, false, false, false, nil)
		}
		for _, g := range groups {
			if err := b.declareGroup(ch, topic, g); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteTopology deletes what Provision and Subscribe created for topic and
// groups: each group's queue and its retry queues (for the configured delay
// buckets), then the topic's exchange. Events in those queues are lost. It
// is meant for tests and for decommissioning; subscriptions on the queues
// are cancelled by the server.
func (b *Broker) DeleteTopology(ctx context.Context, topic string, groups ...string) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	if err := b.checkNames(topic, ""); err != nil {
		return err
	}
	return b.withAdmin(ctx, func(ch *amqp.Channel) error {
		var errs []error
		for _, g := range groups {
			q := QueueName(topic, g)
			names := []string{q}
			for _, d := range b.opts.DelayBuckets {
				names = append(names, RetryQueueName(q, d))
			}
			for _, n := range names {
				if _, err := ch.QueueDelete(n, false, false, false); err != nil {
					errs = append(errs, fmt.Errorf("delete queue %q: %w", n, err))
					if ch.IsClosed() {
						return errors.Join(errs...)
					}
				}
				delete(b.declared, "q:"+n)
			}
		}
		if err := ch.ExchangeDelete(ExchangeName(topic), false, false); err != nil {
			errs = append(errs, fmt.Errorf("delete exchange %q: %w", ExchangeName(topic), err))
		}
		delete(b.declared, "x:"+topic)
		return errors.Join(errs...)
	})
}

// forget drops a declaration from the per-connection cache.
func (b *Broker) forget(key string) {
	b.adminMu.Lock()
	delete(b.declared, key)
	b.adminMu.Unlock()
}
