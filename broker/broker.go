// Package broker is the thin transport API that every broker adapter
// implements, and its guarantee is the same on every broker: Publish returns
// nil only when the broker durably accepted every event given, each group
// gets every event published to the topic after the group was created, at
// least once, until a subscriber settles it, and a subscription holds at most
// MaxInFlight unsettled deliveries. The full contract is below; package
// brokertest checks it on every adapter.
//
// Use: Publish with confirms, and Subscribe with deliveries that the caller
// settles with Ack, Nack(delay) or Term and that know their attempt number.
// Adapters are transports only. Retries with backoff, dead letters, worker
// pools, per-key ordering and deduplication live once, for every broker, in
// the consumer runtime (package consumer). A broker's native features are
// declared in Capabilities, never through a different API.
//
// # What every adapter guarantees
//
//   - Publish returns nil only when the broker has durably accepted (acked,
//     confirmed) every event given; otherwise a *PublishError says which
//     events failed, and an event it does not name was accepted. Each call
//     reports its own events only, however many calls run at once. Invalid
//     events are rejected before anything is sent, naming every event of
//     the call (the valid ones with ErrNotSent).
//   - Within one call, once an event of a subject is known to have failed,
//     the later events of that subject are not sent and fail with
//     ErrNotSent. "Known" differs per adapter (failures a broker reports
//     asynchronously may arrive after later events were sent): see each
//     adapter's package doc.
//   - Delivery is at least once: an event is delivered again until a
//     subscriber of the group settles it with Ack or Term. A subscriber that
//     dies without settling has its deliveries redelivered, to another
//     subscriber of the group if there is one, after at most the ack wait.
//   - Each group gets every event published to the topic after the group was
//     created; subscribers of one group compete for them.
//   - Attempt() counts deliveries of the same event to the group, from 1.
//   - At most MaxInFlight deliveries of one subscription are unsettled at
//     once: a slow consumer applies backpressure instead of buffering.
//   - Subscription.Close stops fetching and waits (until its context ends)
//     for handler calls to return and deliveries to be settled. What it
//     fetched but did not hand to the handler, and what the handler nacks
//     (with no delay) while Close runs, goes back to the group at once:
//     another subscriber receives it without waiting for the ack wait. The
//     same holds when the Subscribe context is cancelled.
//
// Limits: what differs per broker (ordering across competing consumers,
// native delays, native deduplication, durability, replay, payload limits) is
// in Capabilities and in each adapter's package doc. Every adapter is also a
// Provisioner (create a topic and groups before anyone subscribes); NATS
// deliveries are Extenders (restart a delivery's ack wait).
package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/eventkit/eventkit"
)

var (
	// ErrClosed is returned by operations on a closed broker or subscription.
	ErrClosed = errors.New("broker: closed")
	// ErrAlreadySettled is returned when a delivery is settled twice.
	ErrAlreadySettled = errors.New("broker: delivery already settled")
	// ErrInvalidTopic is returned for an empty or malformed topic or group name.
	ErrInvalidTopic = errors.New("broker: invalid topic or group name")
	// ErrNotSent names, in a *PublishError, an event that Publish did not
	// send because another event of the same call failed first: an invalid
	// event anywhere in the call (nothing of it is sent), or an earlier event
	// of the same subject (so that a retry cannot put it behind a later
	// one). Such an event may be retried as it is.
	ErrNotSent = errors.New("broker: not sent")
)

// Publisher sends events to a topic.
type Publisher interface {
	// Publish sends events to topic in order and returns when the broker
	// has durably accepted every one of them. On failure it returns a
	// *PublishError naming the events that failed (those not named were
	// accepted). Events that fail Validate make Publish fail before
	// anything is sent (every event is then named). Publish is safe for
	// concurrent use; each call reports exactly its own failures.
	Publish(ctx context.Context, topic string, events ...eventkit.Event) error
}

// ChainedPublisher is implemented by adapters that can take many events of
// one subject in one call without putting any of them at the broker before
// an earlier one of its subject: the outbox relay then publishes a whole
// batch in one call instead of one call per repeat of a subject.
type ChainedPublisher interface {
	// PublishChained is Publish, except that an event whose subject
	// appears earlier in the call is sent only once the broker has
	// accepted that earlier event, and fails with ErrNotSent, unsent, if
	// that event failed. Events already sent stay in flight meanwhile,
	// and an event waiting for its subject's earlier one does not hold up
	// the events of other subjects after it: a subject's events leave in
	// call order, events of different subjects may leave in another.
	PublishChained(ctx context.Context, topic string, events ...eventkit.Event) error
}

// Subscriber delivers the events of a topic to a group of consumers.
type Subscriber interface {
	// Subscribe joins group on topic (creating both if needed, idempotently)
	// and calls h for each delivery, one call at a time, until ctx is
	// cancelled or the subscription is closed. See Handler for how
	// deliveries are settled.
	Subscribe(ctx context.Context, topic, group string, h Handler, opts ...SubscribeOption) (Subscription, error)
}

// Broker is a publisher and a subscriber on one connection.
type Broker interface {
	Publisher
	Subscriber
	// Capabilities says what this broker guarantees beyond the common contract.
	Capabilities() Capabilities
	// Close closes the broker, the same way on every adapter: from its
	// start Publish, Subscribe (and Provision) return ErrClosed; it closes
	// every subscription as Subscription.Close does, waiting until ctx
	// ends for handler calls to return and deliveries to be settled, then
	// closes the connection (one it was given is left open). Close is
	// idempotent: a later or concurrent call returns nil once the first
	// has finished (or its own ctx ends, with ctx.Err()); only the first
	// call reports an error (adapterkit.CloseOnce gives an adapter this).
	Close(ctx context.Context) error
}

// Handler receives deliveries, one call at a time per subscription.
//
// The handler (or code it hands the delivery to) must settle every delivery
// exactly once with Ack, Nack or Term; it may do so after returning, from any
// goroutine, which is how the consumer runtime runs a worker pool behind one
// subscription. If the handler returns a non-nil error without having settled
// the delivery, the adapter nacks it with no delay (or terms it, when the
// error is permanent: see eventkit.IsPermanent). If it returns nil without
// settling, the delivery stays in flight until it is settled or its ack wait
// runs out. Use AutoAck for the simple synchronous case.
//
// ctx is cancelled when the subscription stops.
type Handler func(ctx context.Context, d Delivery) error

// Delivery is one delivery of one message to a subscriber.
type Delivery interface {
	// Event is the decoded event. It is the zero Event when DecodeErr is set.
	// Treat it as read-only: its Data may share memory with the broker client.
	Event() eventkit.Event
	// DecodeErr is non-nil (a *eventkit.DecodeError keeping the raw bytes
	// and headers) when the message is not a valid event: published by
	// another tool, missing attributes, garbage. Such a delivery should be
	// dead-lettered and acked, or Termed; never retried.
	DecodeErr() error
	// Topic is the topic the message was published to.
	Topic() string
	// Attempt is the delivery count of this message to this group, from 1.
	Attempt() int
	// Ack settles the delivery as done.
	Ack(ctx context.Context) error
	// Nack asks for redelivery after delay (0: as soon as possible), with
	// Attempt one higher.
	Nack(ctx context.Context, delay time.Duration) error
	// Term settles the delivery as never to be delivered again.
	Term(ctx context.Context) error
}

// Subscription is a running subscription.
type Subscription interface {
	// Close stops fetching, waits until ctx ends for the current handler
	// call to return and for deliveries in flight to be settled, and
	// releases the subscription. Deliveries still unsettled are redelivered
	// later (to another subscriber if there is one).
	Close(ctx context.Context) error
	// Done is closed when the subscription has stopped, for whatever reason.
	Done() <-chan struct{}
	// Err is the reason the subscription stopped on its own (nil while it
	// runs and after Close or ctx cancellation).
	Err() error
}

// Capabilities describes what a broker guarantees beyond the common contract.
type Capabilities struct {
	// Name of the broker: "memory", "nats", "kafka", "rabbitmq", "redis".
	Name string
	// Ordered: with a single subscriber in a group and no Nack, events are
	// delivered in publish order.
	Ordered bool
	// OrderedPerSubject: events with the same subject are delivered in
	// publish order even with competing subscribers (partitioning by subject).
	OrderedPerSubject bool
	// NativeDelay: Nack(delay) is delayed by the broker itself.
	NativeDelay bool
	// NativeDedupe: the broker drops a re-published event with the same id
	// within a window.
	NativeDedupe bool
	// Durable: accepted events survive a broker restart, and so do
	// deliveries left unsettled (they are delivered again), as far as the
	// server's own persistence settings claimed when the broker was made
	// allow (see each adapter). brokertest.RunDurable checks it.
	Durable bool
	// RedeliverToTail: a delivery given back with Nack(delay), delay > 0,
	// is delivered again behind every event already queued for the group,
	// never ahead of them (RabbitMQ re-publishes it to the tail of the
	// group's queue through a retry queue). Without it a given-back
	// delivery comes back ahead of at least some newer ones (the broker
	// or adapter redelivers it first once its delay is over). The claim
	// is about Nack with a delay only. The strict-order runtime
	// (consumer.Strict) uses it: where it holds, an event
	// handed back early needs no growing delay.
	RedeliverToTail bool
	// Replay: a new group receives events published before it was created.
	Replay bool
	// MaxPayload is the largest message the broker accepts, in bytes, as
	// configured on the server (0 if unknown or unlimited).
	MaxPayload int
}

// SubscribeConfig is the effective configuration of a subscription. Adapters
// get it from ApplySubscribeOptions.
type SubscribeConfig struct {
	// MaxInFlight bounds the deliveries of one subscription that are
	// unsettled at once. Default 256.
	MaxInFlight int
	// AckWait is how long a delivery may stay unsettled before the broker
	// redelivers it. Default 30s.
	AckWait time.Duration
	// GroupMaxInFlight, if > 0, bounds the unsettled deliveries of the
	// whole group on brokers that keep that limit on the server (NATS
	// MaxAckPending). 0: the adapter's default. Adapters without such a
	// limit ignore it.
	GroupMaxInFlight int
}

// SubscribeOption changes a SubscribeConfig.
type SubscribeOption func(*SubscribeConfig)

// WithMaxInFlight bounds the unsettled deliveries of a subscription.
func WithMaxInFlight(n int) SubscribeOption {
	return func(c *SubscribeConfig) { c.MaxInFlight = n }
}

// WithAckWait sets how long a delivery may stay unsettled before redelivery.
func WithAckWait(d time.Duration) SubscribeOption {
	return func(c *SubscribeConfig) { c.AckWait = d }
}

// WithGroupMaxInFlight bounds the unsettled deliveries of the whole group
// where the broker keeps such a limit (see SubscribeConfig.GroupMaxInFlight).
func WithGroupMaxInFlight(n int) SubscribeOption {
	return func(c *SubscribeConfig) { c.GroupMaxInFlight = n }
}

// Default subscription settings.
const (
	DefaultMaxInFlight = 256
	DefaultAckWait     = 30 * time.Second
)

// PublishError reports the events of one Publish call that the broker did not
// accept. Events not listed were accepted.
type PublishError struct {
	Topic  string
	Failed []FailedEvent
}

// FailedEvent is one event that was not accepted, and why.
type FailedEvent struct {
	Index int    // position in the Publish call's events
	ID    string // the event's id
	Err   error
}

func (e *PublishError) Error() string {
	if len(e.Failed) == 1 {
		f := e.Failed[0]
		return fmt.Sprintf("broker: publish to %q: event %s: %v", e.Topic, f.ID, f.Err)
	}
	first := "none"
	if len(e.Failed) > 0 {
		first = e.Failed[0].Err.Error()
	}
	return fmt.Sprintf("broker: publish to %q: %d events failed (first: %s)", e.Topic, len(e.Failed), first)
}

// Unwrap returns the causes, so errors.Is(err, eventkit.ErrTooLarge) and the
// like work.
func (e *PublishError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f.Err
	}
	return errs
}

// FailedIndexes lists the indexes of the failed events.
func (e *PublishError) FailedIndexes() []int {
	ix := make([]int, len(e.Failed))
	for i, f := range e.Failed {
		ix[i] = f.Index
	}
	return ix
}

// ValidateName checks a topic or group name: 1-200 characters out of
// letters, digits, '.', '_' and '-', which every broker accepts as part of a
// stream, queue or key name.
func ValidateName(kind, name string) error {
	if name == "" || len(name) > 200 {
		return fmt.Errorf("%w: %s %q must be 1-200 characters", ErrInvalidTopic, kind, name)
	}
	if strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		return fmt.Errorf("%w: %s %q may hold only letters, digits, '.', '_' and '-'", ErrInvalidTopic, kind, name)
	}
	return nil
}

// AutoAck adapts a synchronous function to a Handler: nil acks, a permanent
// error (eventkit.IsPermanent) terms, any other error nacks for immediate
// redelivery. An undecodable delivery is termed without calling fn.
func AutoAck(fn func(ctx context.Context, e eventkit.Event, attempt int) error) Handler {
	return func(ctx context.Context, d Delivery) error {
		if err := d.DecodeErr(); err != nil {
			return d.Term(ctx)
		}
		err := fn(ctx, d.Event(), d.Attempt())
		switch {
		case err == nil:
			return d.Ack(ctx)
		case eventkit.IsPermanent(err):
			return d.Term(ctx)
		default:
			return d.Nack(ctx, 0)
		}
	}
}
