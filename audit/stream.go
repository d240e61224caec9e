package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
)

var (
	// ErrNoTopic is returned (wrapped, with the topic's name) when the
	// broker has no topic (stream) of the name.
	ErrNoTopic = errors.New("audit: topic does not exist at the broker")
	// ErrUnsupportedBroker is returned by ForBroker for a broker whose
	// stored messages the audit cannot read.
	ErrUnsupportedBroker = errors.New("audit: cannot read this broker's stored messages")
)

// Message is one message as a broker stores it.
type Message struct {
	// Pos is the message's position in the topic (JetStream stream
	// sequence, memory log position).
	Pos uint64
	// Time is when the broker stored it (zero if the broker does not say).
	Time  time.Time
	Event eventkit.Event
	// DecodeErr is set when the message is not an event.
	DecodeErr error
}

// Stream reads what a broker holds for a topic, without changing it.
type Stream interface {
	// Read calls fn for each message of topic stored at or after since
	// (zero: all), in stream order. It returns an error wrapping
	// ErrNoTopic when the topic does not exist.
	Read(ctx context.Context, topic string, since time.Time, fn func(Message) error) error
	// Name says which broker it reads ("nats", "memory").
	Name() string
}

// GroupLag is how far one consumer group is behind at the broker.
type GroupLag struct {
	Topic string `json:"topic"`
	// Group is the broker's name of the group (the JetStream durable
	// consumer name).
	Group string `json:"group"`
	// Pending is how many stored messages the group has not been handed
	// yet; AckPending how many it was handed and has not settled.
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
	// Redelivered counts messages handed more than once and not yet settled.
	Redelivered int `json:"redelivered"`
	// LastActive is the group's last delivery (zero if none).
	LastActive time.Time `json:"last_active,omitzero"`
	// Note, when set, says what Pending counts for a broker that reports
	// one figure per group (ConsumerLagger); AckPending, Redelivered and
	// LastActive are then not known.
	Note string `json:"note,omitempty"`
}

// Lagger is implemented by streams whose broker reports consumer lag per
// group (NATS JetStream).
type Lagger interface {
	Lag(ctx context.Context, topic string) ([]GroupLag, error)
}

// ForBroker returns the Stream of b: NATS JetStream, Redis Streams and the
// memory broker are supported; other brokers give ErrUnsupportedBroker.
func ForBroker(b broker.Broker) (Stream, error) {
	switch b := b.(type) {
	case *natsbroker.Broker:
		return NATS(b), nil
	case *memorybroker.Broker:
		return Memory(b), nil
	case *redisbroker.Broker:
		return Redis(b), nil
	}
	return nil, fmt.Errorf("%w (%s): the audit reads NATS JetStream, Redis Streams and the memory broker", ErrUnsupportedBroker, b.Capabilities().Name)
}

// NATS returns the Stream of a JetStream broker: it reads a topic's stream
// with an ordered (ephemeral, unacknowledged) consumer, up to the last
// message stored when Read began.
func NATS(b *natsbroker.Broker) Stream { return &natsStream{b: b} }

type natsStream struct{ b *natsbroker.Broker }

func (s *natsStream) Name() string { return "nats" }

func (s *natsStream) stream(ctx context.Context, topic string) (jetstream.Stream, error) {
	name := s.b.StreamName(topic)
	st, err := s.b.JetStream().Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: %q (no JetStream stream %s)", ErrNoTopic, topic, name)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s of topic %q: %w", name, topic, err)
	}
	return st, nil
}

func (s *natsStream) Read(ctx context.Context, topic string, since time.Time, fn func(Message) error) error {
	st, err := s.stream(ctx, topic)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("audit: stream of topic %q: %w", topic, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || last == 0 {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("audit: read topic %q: %w", topic, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if done, err := readBatch(ctx, cons, topic, last, fn); done || err != nil {
			return err
		}
	}
}

// readBatch reads one batch of up to 500 messages of cons into fn and
// reports whether the read is over (message last reached, fn failed, or
// nothing more came within a second). The fetch has a context of its own,
// cancelled on return, so that a read ending in the middle of a batch
// leaves no fetch running behind it (it ran until its wait expired).
func readBatch(ctx context.Context, cons jetstream.Consumer, topic string, last uint64, fn func(Message) error) (bool, error) {
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	batch, err := cons.Fetch(500, jetstream.FetchContext(fctx))
	if err != nil {
		return true, fmt.Errorf("audit: read topic %q: %w", topic, err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		meta, err := m.Metadata()
		if err != nil {
			return true, fmt.Errorf("audit: read topic %q: %w", topic, err)
		}
		h := map[string]string{}
		for k, v := range m.Headers() {
			if len(v) > 0 {
				h[k] = v[0]
			}
		}
		ev, derr := eventkit.NATSBinding.Decode(eventkit.MapHeaders(h), "", m.Data())
		if err := fn(Message{Pos: meta.Sequence.Stream, Time: meta.Timestamp.UTC(), Event: ev, DecodeErr: derr}); err != nil {
			return true, err
		}
		if meta.Sequence.Stream >= last {
			return true, nil
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return true, fmt.Errorf("audit: read topic %q: %w", topic, err)
	}
	// Nothing within the wait: the messages up to last were deleted or
	// expired meanwhile.
	return got == 0, nil
}

// Lag reports every durable consumer (group) of topic's stream.
func (s *natsStream) Lag(ctx context.Context, topic string) ([]GroupLag, error) {
	st, err := s.stream(ctx, topic)
	if err != nil {
		return nil, err
	}
	var out []GroupLag
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		if ci.Config.Durable == "" {
			continue
		}
		g := GroupLag{Topic: topic, Group: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered}
		if ci.Delivered.Last != nil {
			g.LastActive = ci.Delivered.Last.UTC()
		}
		out = append(out, g)
	}
	if err := l.Err(); err != nil {
		return out, fmt.Errorf("audit: consumers of topic %q: %w", topic, err)
	}
	return out, nil
}

// Memory returns the Stream of an in-process broker (memory.Broker.Messages;
// its messages carry no time, so since is ignored).
func Memory(b *memorybroker.Broker) Stream { return memStream{b} }

type memStream struct{ b *memorybroker.Broker }

func (s memStream) Name() string { return "memory" }

func (s memStream) Read(ctx context.Context, topic string, _ time.Time, fn func(Message) error) error {
	msgs, ok := s.b.Messages(topic)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoTopic, topic)
	}
	for _, m := range msgs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(Message{Pos: m.Seq, Event: m.Event, DecodeErr: m.DecodeErr}); err != nil {
			return err
		}
	}
	return nil
}
