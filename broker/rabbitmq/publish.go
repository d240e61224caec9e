package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

// pubChannel is the broker's confirm-mode publishing channel. Publishes from
// concurrent Publish calls share it; amqp091 assigns confirm sequence numbers
// under the channel's lock, so each DeferredConfirmation matches its publish.
type pubChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return // basic.return, sent by the server before the publish's ack

	mu       sync.Mutex
	returned map[string]returned // message id -> reason, until its publisher collects it
}

type returned struct {
	n    int
	code uint16
	text string
}

// record notes one returned message.
func (p *pubChannel) record(r amqp.Return) {
	p.mu.Lock()
	x := p.returned[r.MessageId]
	x.n++
	x.code, x.text = r.ReplyCode, r.ReplyText
	p.returned[r.MessageId] = x
	p.mu.Unlock()
}

// takeReturn reports whether the message with id was returned, consuming one
// record. The server sends basic.return before the ack of the same publish,
// and amqp091 hands the return to our buffered channel before it completes
// the confirmation, so after a confirmation the return (if any) is either in
// the channel or already recorded.
func (p *pubChannel) takeReturn(id string) (returned, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for drained := false; !drained; {
		select {
		case r, ok := <-p.returns:
			if !ok {
				drained = true
				break
			}
			x := p.returned[r.MessageId]
			x.n++
			x.code, x.text = r.ReplyCode, r.ReplyText
			p.returned[r.MessageId] = x
		default:
			drained = true
		}
	}
	x, ok := p.returned[id]
	if !ok {
		return returned{}, false
	}
	if x.n <= 1 {
		delete(p.returned, id)
	} else {
		x.n--
		p.returned[id] = x
	}
	return x, true
}

// publisher returns the publishing channel, opening it (on the current
// connection, waiting for a reconnection if needed) when there is none or the
// last one closed.
func (b *Broker) publisher(ctx context.Context) (*pubChannel, error) {
	b.pubMu.Lock()
	p := b.pub
	b.pubMu.Unlock()
	if p != nil && !p.ch.IsClosed() {
		return p, nil
	}
	conn, err := b.connection(ctx)
	if err != nil {
		return nil, err
	}
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if b.pub != nil && !b.pub.ch.IsClosed() {
		return b.pub, nil
	}
	if b.pub != nil {
		// The server may have closed the channel because an exchange was
		// deleted behind our back: declare again what we use.
		b.adminMu.Lock()
		clear(b.declared)
		b.adminMu.Unlock()
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: open channel: %w", ErrConnectionLost, err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("%w: confirm mode: %w", ErrConnectionLost, err)
	}
	p = &pubChannel{
		ch:       ch,
		returns:  ch.NotifyReturn(make(chan amqp.Return, 1024)),
		returned: map[string]returned{},
	}
	b.pub = p
	return p, nil
}

type pending struct {
	i   int
	id  string // the event id, for errors
	key string // the message id the server echoes in basic.return
	dc  *amqp.DeferredConfirmation
}

// send publishes n messages with mandatory set, at most PublishWindow
// awaiting their confirm at once, and waits for every confirm. It returns
// the failures by index (nil if all were confirmed and routed).
func (b *Broker) send(ctx context.Context, exchange string, n int,
	build func(i int) (key, id string, msg amqp.Publishing)) []broker.FailedEvent {
	p, err := b.publisher(ctx)
	if err != nil {
		fails := make([]broker.FailedEvent, n)
		for i := range fails {
			_, id, _ := build(i)
			fails[i] = broker.FailedEvent{Index: i, ID: id, Err: err}
		}
		return fails
	}
	var fails []broker.FailedEvent
	window := b.opts.PublishWindow
	queue := make([]pending, 0, min(n, window))
	head := 0
	returns := p.returns
	await := func(q pending) {
		for {
			select {
			case <-q.dc.Done():
				if !q.dc.Acked() {
					err := ErrNacked
					if p.ch.IsClosed() {
						err = ErrConnectionLost
					}
					fails = append(fails, broker.FailedEvent{Index: q.i, ID: q.id, Err: fmt.Errorf("%w: not confirmed", err)})
					return
				}
				if r, ok := p.takeReturn(q.key); ok {
					fails = append(fails, broker.FailedEvent{Index: q.i, ID: q.id,
						Err: fmt.Errorf("%w: exchange %q: %d %s", ErrUnroutable, exchange, r.code, r.text)})
				}
				return
			case r, ok := <-returns:
				if !ok {
					returns = nil
					continue
				}
				p.record(r)
			case <-ctx.Done():
				fails = append(fails, broker.FailedEvent{Index: q.i, ID: q.id, Err: fmt.Errorf("rabbitmq: not confirmed: %w", ctx.Err())})
				return
			}
		}
	}
	for i := 0; i < n; i++ {
		if len(queue)-head >= window {
			await(queue[head])
			head++
			if head == len(queue) {
				queue, head = queue[:0], 0
			}
		}
		key, id, msg := build(i)
		err := ctx.Err()
		if err == nil && b.blocked.Load() {
			err = b.waitUnblocked(ctx)
		}
		if err != nil {
			for j := i; j < n; j++ {
				_, id, _ := build(j)
				fails = append(fails, broker.FailedEvent{Index: j, ID: id, Err: fmt.Errorf("rabbitmq: not sent: %w", err)})
			}
			break
		}
		dc, err := p.ch.PublishWithDeferredConfirm(exchange, key, true, false, msg)
		if err != nil {
			if errors.Is(err, amqp.ErrClosed) {
				err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
			}
			for j := i; j < n; j++ {
				_, id, _ := build(j)
				fails = append(fails, broker.FailedEvent{Index: j, ID: id, Err: fmt.Errorf("rabbitmq: not sent: %w", err)})
			}
			break
		}
		queue = append(queue, pending{i: i, id: id, key: msg.MessageId, dc: dc})
	}
	for _, q := range queue[head:] {
		await(q)
	}
	return fails
}

// Publish sends events to the topic's exchange (declared if needed) as
// persistent messages with the mandatory flag, in order, on a confirm-mode
// channel, and returns when every one is confirmed. Events the server
// returned (no queue bound: ErrUnroutable), nacked (ErrNacked) or that were
// not confirmed before the connection was lost (ErrConnectionLost) or ctx
// ended are named in a *broker.PublishError; they may be retried.
func (b *Broker) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	if err := b.checkNames(topic, ""); err != nil {
		return err
	}
	if err := b.validate(topic, events); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	if err := b.ensureExchange(ctx, topic); err != nil {
		if errors.Is(err, broker.ErrClosed) {
			return err
		}
		return broker.FailAll(topic, events, err)
	}
	fails := b.send(ctx, ExchangeName(topic), len(events), func(i int) (string, string, amqp.Publishing) {
		e := &events[i]
		return routingKey(e.Type), e.ID, encode(e)
	})
	if len(fails) == 0 {
		return nil
	}
	if b.isClosed() && len(fails) == len(events) {
		return broker.ErrClosed
	}
	return &broker.PublishError{Topic: topic, Failed: fails}
}

// routingKey is the event type, cut to AMQP's 255-byte limit on a rune
// boundary (bindings use "#", so the key only serves server-side filtering).
func routingKey(t string) string {
	if len(t) <= maxNameLen {
		return t
	}
	t = t[:maxNameLen]
	for len(t) > 0 && !utf8.ValidString(t) {
		t = t[:len(t)-1]
	}
	return t
}

// encode maps an event onto an AMQP message in CloudEvents binary mode.
func encode(e *eventkit.Event) amqp.Publishing {
	h := make(amqp.Table, eventkit.AMQPBinding.HeaderCount(*e))
	eventkit.AMQPBinding.Headers(*e, func(k, v string) { h[k] = v })
	msg := amqp.Publishing{
		Headers:      h,
		ContentType:  e.DataContentType,
		DeliveryMode: amqp.Persistent,
		Timestamp:    e.Time,
		Body:         e.Data,
	}
	if len(e.ID) <= maxNameLen {
		msg.MessageId = e.ID
	}
	if len(msg.ContentType) > maxNameLen {
		msg.ContentType = "" // too long for the property: carry it as an attribute
		h[eventkit.AMQPBinding.Prefix+"datacontenttype"] = e.DataContentType
	}
	return msg
}
