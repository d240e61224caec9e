package rabbitmqbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// pubChannel is a confirm-mode publishing channel. A Publish call (or an
// internal re-publish) holds one for itself from first publish to last
// confirm, so every basic.return and basic.nack on it belongs to that call;
// idle channels are kept for the next call (see acquire and release).
type pubChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return // basic.return, pushed by amqp091 before the same message's confirm
	fifo    []amqp.Return    // returns taken from the channel, not yet matched, in publish order
}

// pull moves the returns amqp091 has handed over into fifo, without
// waiting. Its buffer holds PublishWindow returns (a call never has more
// messages unconfirmed), so amqp091's reader never blocks on it and never
// drops a return, which it would do after blocking for 5 seconds.
func (p *pubChannel) pull() {
	for {
		select {
		case r, ok := <-p.returns:
			if !ok {
				p.returns = nil
				return
			}
			p.fifo = append(p.fifo, r)
		default:
			return
		}
	}
}

// returnOf reports whether q was returned, once q's confirm has arrived and
// every message published before q on this channel has been matched.
//
// The server handles a channel's publishes in order and sends a message's
// basic.return before its ack, so returns arrive in publish order, and
// amqp091 pushes a return to our channel before it completes the same
// message's confirmation. When q's confirm is in, q's return (if any) is
// therefore already pulled, and it is the first unmatched one: returns of
// earlier messages were matched by the earlier calls of returnOf. If q was
// not returned, the first unmatched return belongs to a later message, and
// the exchange, routing key and message id tell it from q's: sendEvents
// never has two messages with the same three in flight at once (an event
// twice in a call, or ids over 255 bytes, which go without a message id),
// so the match is exact.
func (p *pubChannel) returnOf(q *pending) (amqp.Return, bool) {
	p.pull()
	if len(p.fifo) == 0 {
		return amqp.Return{}, false
	}
	r := p.fifo[0]
	if r.Exchange != q.exchange || r.RoutingKey != q.key || r.MessageId != q.msgID {
		return amqp.Return{}, false
	}
	p.fifo[0] = amqp.Return{}
	p.fifo = p.fifo[1:]
	if len(p.fifo) == 0 {
		p.fifo = p.fifo[:0:0]
	}
	return r, true
}

// maxIdlePublishers bounds the idle publishing channels kept for later
// calls; more concurrent calls open more channels, closed when released.
// maxPublishers bounds the channels publishing at once (the server's
// channel_max is 2047 per connection by default, subscriptions included):
// more concurrent calls wait for a channel.
const (
	maxIdlePublishers = 16
	maxPublishers     = 256
)

// acquire takes an idle publishing channel of the current connection, or
// opens one (waiting for a reconnection if needed). release gives it back.
func (b *Broker) acquire(ctx context.Context) (*pubChannel, error) {
	b.pubOnce.Do(func() { b.pubSlots = make(chan struct{}, maxPublishers) })
	select {
	case b.pubSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbitmq: not sent: waiting for a publishing channel: %w", ctx.Err())
	}
	p, err := b.open(ctx)
	if err != nil {
		<-b.pubSlots
	}
	return p, err
}

func (b *Broker) open(ctx context.Context) (*pubChannel, error) {
	b.pubMu.Lock()
	for len(b.pubIdle) > 0 {
		p := b.pubIdle[len(b.pubIdle)-1]
		b.pubIdle = b.pubIdle[:len(b.pubIdle)-1]
		if !p.ch.IsClosed() {
			b.pubMu.Unlock()
			return p, nil
		}
	}
	b.pubMu.Unlock()
	conn, err := b.connection(ctx)
	if err != nil {
		return nil, err
	}
	// A connection the server blocks (resource alarm) may not be read by
	// the server at all: a channel.open would wait for ever. Wait for the
	// alarm to clear (ErrBlocked when ctx ends), and bound the open by ctx.
	if err := b.waitUnblocked(ctx); err != nil {
		return nil, fmt.Errorf("rabbitmq: not sent: %w", err)
	}
	type opened struct {
		ch  *amqp.Channel
		err error
	}
	done := make(chan opened, 1)
	go func() {
		ch, err := conn.Channel()
		if err == nil {
			if err = ch.Confirm(false); err != nil {
				_ = ch.Close()
				err = fmt.Errorf("confirm mode: %w", err)
			}
		}
		done <- opened{ch, err}
	}()
	var o opened
	select {
	case o = <-done:
	case <-ctx.Done():
		go func() { // close it whenever the server answers
			if o := <-done; o.err == nil {
				_ = o.ch.Close()
			}
		}()
		if b.blocked.Load() {
			return nil, fmt.Errorf("rabbitmq: not sent: %w: %w", ErrBlocked, ctx.Err())
		}
		return nil, fmt.Errorf("rabbitmq: not sent: opening a publishing channel: %w", ctx.Err())
	}
	if o.err != nil {
		return nil, fmt.Errorf("%w: open channel: %w", ErrConnectionLost, o.err)
	}
	ch := o.ch
	return &pubChannel{ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, b.opts.PublishWindow))}, nil
}

// release gives p back after a call. clean says that every message the call
// published on p has its confirm: only then is p known to carry nothing of
// the call (a late return or confirm would be misread by the next call), so
// only then is it kept. A channel the server closed may have been closed
// because an exchange was deleted behind our back: what we declared is
// declared again.
func (b *Broker) release(p *pubChannel, clean bool) {
	defer func() { <-b.pubSlots }()
	if p.ch.IsClosed() {
		b.adminMu.Lock()
		clear(b.declared)
		b.adminMu.Unlock()
		return
	}
	if clean {
		p.pull()
		clean = len(p.fifo) == 0
	}
	if clean {
		b.pubMu.Lock()
		if !b.isClosed() && len(b.pubIdle) < maxIdlePublishers {
			b.pubIdle = append(b.pubIdle, p)
			p = nil
		}
		b.pubMu.Unlock()
	}
	if p != nil && !b.blocked.Load() {
		// While the server blocks publishers, channel.close would wait for
		// the alarm to end: leave the channel to die with the connection.
		_ = p.ch.Close()
	}
}

// closePublishers closes the idle publishing channels (Broker.Close).
func (b *Broker) closePublishers() {
	b.pubMu.Lock()
	idle := b.pubIdle
	b.pubIdle = nil
	b.pubMu.Unlock()
	for _, p := range idle {
		_ = p.ch.Close()
	}
}

type pending struct {
	i        int
	id       string // the event id, for errors
	subject  string
	exchange string // what the server echoes in basic.return
	key      string
	msgID    string
	dc       *amqp.DeferredConfirmation
}

// send publishes n messages with mandatory set, at most PublishWindow
// awaiting their confirm at once, and waits for every confirm. It returns
// the failures by index (nil if all were confirmed and routed).
func (b *Broker) send(ctx context.Context, exchange string, n int,
	build func(i int) (key, id string, msg amqp.Publishing)) []broker.FailedEvent {
	return b.sendEvents(ctx, exchange, n, func(i int) (string, string, string, amqp.Publishing) {
		key, id, msg := build(i)
		return key, id, "", msg
	})
}

// sendEvents is send for events with subjects: once an event of a subject
// is known to have failed (returned, nacked, not sent), the later events of
// that subject are not sent and fail with broker.ErrNotSent, so that a
// retry cannot land behind them. A failure is known when it was confirmed
// before the later event's turn: with up to PublishWindow messages in
// flight, a later event may already be sent when its predecessor's nack or
// return arrives.
func (b *Broker) sendEvents(ctx context.Context, exchange string, n int,
	build func(i int) (key, id, subject string, msg amqp.Publishing)) []broker.FailedEvent {
	p, err := b.acquire(ctx)
	if err != nil {
		fails := make([]broker.FailedEvent, n)
		for i := range fails {
			_, id, _, _ := build(i)
			fails[i] = broker.FailedEvent{Index: i, ID: id, Err: err}
		}
		return fails
	}
	var fails []broker.FailedEvent
	var failedSubjects map[string]bool
	fail := func(i int, id, subject string, err error) {
		fails = append(fails, broker.FailedEvent{Index: i, ID: id, Err: err})
		if subject != "" {
			if failedSubjects == nil {
				failedSubjects = map[string]bool{}
			}
			failedSubjects[subject] = true
		}
	}
	window := b.opts.PublishWindow
	queue := make([]pending, 0, min(n, window))
	head, base := 0, 0 // base: how many were dropped from the front of queue
	// inFlight: the position (base+index in queue) of the last message sent
	// with a given routing key and message id, for returnOf.
	type retKey struct{ key, msgID string }
	inFlight := make(map[retKey]int, min(n, window))
	clean := true // every message sent has its confirm
	await := func(q *pending) {
		for {
			select {
			case <-q.dc.Done():
				r, returned := p.returnOf(q)
				switch {
				case !q.dc.Acked():
					err := ErrNacked
					if p.ch.IsClosed() {
						err = ErrConnectionLost
					}
					fail(q.i, q.id, q.subject, fmt.Errorf("%w: not confirmed", err))
				case returned:
					fail(q.i, q.id, q.subject, fmt.Errorf("%w: exchange %q: %d %s", ErrUnroutable, exchange, r.ReplyCode, r.ReplyText))
				}
				return
			case r, ok := <-p.returns:
				if !ok {
					p.returns = nil
					continue
				}
				p.fifo = append(p.fifo, r)
			case <-ctx.Done():
				clean = false
				fail(q.i, q.id, q.subject, fmt.Errorf("rabbitmq: not confirmed: %w", ctx.Err()))
				return
			}
		}
	}
	next := func() {
		await(&queue[head])
		head++
		if head == len(queue) {
			base += len(queue)
			queue, head = queue[:0], 0
		}
	}
	for i := 0; i < n; i++ {
		if len(queue)-head >= window {
			next()
		}
		key, id, subject, msg := build(i)
		rk := retKey{key, msg.MessageId}
		if at, ok := inFlight[rk]; ok {
			for clean && base+head <= at && head < len(queue) {
				next() // wait for the message with the same key and id
			}
		}
		if subject != "" && failedSubjects[subject] {
			fails = append(fails, broker.FailedEvent{Index: i, ID: id,
				Err: fmt.Errorf("%w: an earlier event of subject %q failed", broker.ErrNotSent, subject)})
			continue
		}
		err := ctx.Err()
		if err == nil && b.blocked.Load() {
			err = b.waitUnblocked(ctx)
		}
		var dc *amqp.DeferredConfirmation
		if err == nil {
			dc, err = p.ch.PublishWithDeferredConfirm(exchange, key, true, false, msg)
			if errors.Is(err, amqp.ErrClosed) {
				err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
			}
		}
		if err != nil {
			for j := i; j < n; j++ {
				_, id, _, _ := build(j)
				fails = append(fails, broker.FailedEvent{Index: j, ID: id, Err: fmt.Errorf("rabbitmq: not sent: %w", err)})
			}
			break
		}
		inFlight[rk] = base + len(queue)
		queue = append(queue, pending{i: i, id: id, subject: subject, exchange: exchange, key: key, msgID: msg.MessageId, dc: dc})
	}
	for k := head; k < len(queue); k++ {
		if !clean { // ctx ended: the rest cannot be confirmed in time either
			q := &queue[k]
			fails = append(fails, broker.FailedEvent{Index: q.i, ID: q.id, Err: fmt.Errorf("rabbitmq: not confirmed: %w", ctx.Err())})
			continue
		}
		await(&queue[k])
	}
	b.release(p, clean)
	slices.SortFunc(fails, func(a, b broker.FailedEvent) int { return a.Index - b.Index })
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
	if err := adapterkit.ValidateEventsAt(topic, b.opts.MaxMessageSize, sizeWhere, events); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	if err := b.ensureExchange(ctx, topic); err != nil {
		if errors.Is(err, broker.ErrClosed) {
			return err
		}
		return adapterkit.FailAll(topic, events, err)
	}
	fails := b.sendEvents(ctx, ExchangeName(topic), len(events), func(i int) (string, string, string, amqp.Publishing) {
		e := &events[i]
		return routingKey(e.Type), e.ID, e.Subject, encode(e)
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
