// Package memory is an in-process broker, a real implementation of the
// broker API held to the same conformance suite as the network brokers.
// Guarantees: Publish is synchronous and appends all the events of a call at
// once or none of them (so no partial failure can reorder a subject). Each
// group receives every event of the topic, including those published before
// the group existed. Within a group, a single subscriber receives events in
// publish order until it nacks one; competing subscribers share the events
// with no order between them. Nack(delay) is a real delay. A delivery left
// unsettled past its ack wait, or held by a subscription that closes, is
// redelivered with Attempt one higher.
//
// Use it in tests, examples and single-process programs wherever a
// broker.Broker is taken:
//
//	b := memory.New(memory.Options{})
//	defer b.Close(ctx)
//
// Limits: events live only as long as the process (Capabilities.Durable is
// false: everything is lost when the process exits); with Options.Retain a
// topic keeps at most that many events for groups created later, so a new
// group does not see the older ones.
package memorybroker

import (
	"context"
	"sync"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// Options configure a Broker.
type Options struct {
	// MaxEventSize is the largest event accepted (eventkit.DefaultMaxSize if 0).
	MaxEventSize int
	// Retain, if > 0, keeps at most this many events per topic for new groups
	// (older ones that every existing group has moved past are dropped).
	// 0 keeps everything.
	Retain int
}

// Broker is an in-memory broker. The zero value is not usable; call New.
type Broker struct {
	opts   Options
	mu     sync.Mutex // guards topics, and the closed checks of Publish, Subscribe and Provision against Close
	topics map[string]*topic
	subs   adapterkit.Subscriptions[*subscription] // shut by Close under mu
	closer adapterkit.CloseOnce                    // Close runs once; concurrent calls wait for it
}

var _ broker.Broker = (*Broker)(nil)

// New returns an empty broker.
func New(opts Options) *Broker {
	if opts.MaxEventSize <= 0 {
		opts.MaxEventSize = eventkit.DefaultMaxSize
	}
	return &Broker{opts: opts, topics: map[string]*topic{}}
}

type message struct {
	seq       uint64
	topic     string
	ev        eventkit.Event
	decodeErr error
}

type topic struct {
	name   string
	base   uint64 // seq of log[0]
	log    []*message
	groups map[string]*group
}

type pending struct {
	msg      *message
	attempt  int // deliveries so far
	sub      *subscription
	due      time.Time // for delayed redelivery
	deadline time.Time // ack deadline while in flight
	state    int
}

const (
	stReady = iota
	stDelayed
	stInflight
)

type group struct {
	t        *topic
	name     string
	next     uint64              // seq of the next never-delivered message
	ready    []*pending          // due for redelivery, FIFO
	pend     map[uint64]*pending // every message delivered at least once and not settled
	notify   chan struct{}       // closed and replaced on every change
	attempts int
}

func (g *group) kick() {
	close(g.notify)
	g.notify = make(chan struct{})
}

// Capabilities implements broker.Broker.
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{Name: "memory", Ordered: true, NativeDelay: true, Replay: true, MaxPayload: b.opts.MaxEventSize}
}

func (b *Broker) topicLocked(name string) *topic {
	t := b.topics[name]
	if t == nil {
		t = &topic{name: name, base: 1, groups: map[string]*group{}}
		b.topics[name] = t
	}
	return t
}

// Publish implements broker.Publisher. It validates every event first and
// then appends them all at once.
func (b *Broker) Publish(ctx context.Context, topicName string, events ...eventkit.Event) error {
	if err := broker.ValidateName("topic", topicName); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return adapterkit.FailAll(topicName, events, err)
	}
	if err := adapterkit.ValidateEvents(topicName, b.opts.MaxEventSize, events); err != nil {
		return err
	}
	msgs := make([]*message, len(events))
	for i, e := range events {
		msgs[i] = &message{topic: topicName, ev: e.Clone()}
	}
	return b.append(topicName, events, msgs)
}

// PublishRaw publishes bytes that are not necessarily an event, as another
// tool might: with headers they are read as NATS-style binary mode
// (eventkit.NATSBinding), without as structured JSON. Undecodable input is
// delivered with DecodeErr set. A message over Options.MaxEventSize (body
// plus header names and values, with adapterkit.Allowance) is delivered with
// a DecodeErr wrapping a *eventkit.SizeError, keeping only the first
// adapterkit.TooLargeKeep bytes (see adapterkit.CheckSize), as the network
// adapters do on consume. It exists to test the handling of foreign and
// malformed messages.
func (b *Broker) PublishRaw(ctx context.Context, topicName string, headers map[string]string, body []byte) error {
	if err := broker.ValidateName("topic", topicName); err != nil {
		return err
	}
	var ev eventkit.Event
	err := adapterkit.CheckSize("memory raw message", headers[eventkit.NATSBinding.Prefix+"id"], body, headers,
		adapterkit.MessageSize(body, headers), len(headers), b.opts.MaxEventSize, "memory Options.MaxEventSize")
	switch {
	case err != nil: // over the limit: kept only truncated, in the DecodeError
	case len(headers) > 0:
		body = append([]byte(nil), body...)
		ev, err = eventkit.NATSBinding.Decode(eventkit.MapHeaders(headers), "", body)
	default:
		ev, err = eventkit.DecodeStructured(append([]byte(nil), body...))
	}
	return b.append(topicName, nil, []*message{{topic: topicName, ev: ev, decodeErr: err}})
}

func (b *Broker) append(topicName string, events []eventkit.Event, msgs []*message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs.Closed() {
		return adapterkit.FailAll(topicName, events, broker.ErrClosed)
	}
	t := b.topicLocked(topicName)
	for _, m := range msgs {
		m.seq = t.base + uint64(len(t.log))
		t.log = append(t.log, m)
	}
	b.trimLocked(t)
	for _, g := range t.groups {
		g.kick()
	}
	return nil
}

func (b *Broker) trimLocked(t *topic) {
	if b.opts.Retain <= 0 || len(t.log) <= b.opts.Retain {
		return
	}
	drop := uint64(len(t.log) - b.opts.Retain)
	for _, g := range t.groups {
		if g.next-t.base < drop {
			drop = g.next - t.base
		}
	}
	if drop > 0 {
		clear(t.log[:drop])
		t.log = t.log[drop:]
		t.base += drop
	}
}

// Subscribe implements broker.Subscriber.
func (b *Broker) Subscribe(ctx context.Context, topicName, groupName string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if err := adapterkit.CheckSubscribe(topicName, groupName, h, "memory"); err != nil {
		return nil, err
	}
	cfg := adapterkit.ApplySubscribeOptions(opts...)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs.Closed() {
		return nil, broker.ErrClosed
	}
	g := b.groupLocked(topicName, groupName)
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &subscription{
		b: b, g: g, h: h, cfg: cfg, hctx: hctx, cancel: cancel,
		stop: make(chan struct{}), loopDone: make(chan struct{}), done: make(chan struct{}),
	}
	if !b.subs.Add(s) { // cannot happen: Close shuts subs under b.mu
		cancel()
		return nil, broker.ErrClosed
	}
	go s.loop()
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close(ctx) // an already-cancelled ctx: stop at once
		case <-s.done:
		}
	}()
	return s, nil
}

// Close closes every subscription, waiting for them until ctx ends, and
// makes further Publish calls fail with broker.ErrClosed.
func (b *Broker) Close(ctx context.Context) error { return b.closer.Close(ctx, b.close) }

func (b *Broker) close(ctx context.Context) error {
	b.mu.Lock() // no Publish, Subscribe or Provision is between its closed check and its change
	subs := b.subs.Shut()
	b.mu.Unlock()
	for _, s := range subs {
		_ = s.Close(ctx)
	}
	return nil
}

type subscription struct {
	b        *Broker
	g        *group
	h        broker.Handler
	cfg      broker.SubscribeConfig
	hctx     context.Context
	cancel   context.CancelFunc
	stopOnce sync.Once
	stop     chan struct{} // closed: fetch no more
	loopDone chan struct{} // closed when the delivery loop has returned
	done     chan struct{} // closed when fully stopped
	inflight int           // guarded by b.mu
	closeMu  sync.Mutex
}
