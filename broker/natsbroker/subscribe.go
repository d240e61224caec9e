package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// Subscribe implements broker.Subscriber. The group is a durable pull
// consumer on the topic's stream, created or updated idempotently with
// AckWait = cfg.AckWait, MaxAckPending = cfg.GroupMaxInFlight if set, else
// cfg.MaxInFlight (or Options.MaxAckPending if larger), unlimited
// deliveries and DeliverAll. The
// subscription pulls at most MaxInFlight messages at a time and hands them to
// h one at a time; a message is handed over only while fewer than
// MaxInFlight deliveries are unsettled.
func (b *Broker) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if err := adapterkit.CheckSubscribe(topic, group, h, "natsbroker"); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, broker.ErrClosed
	}
	cfg := adapterkit.ApplySubscribeOptions(opts...)
	stream, err := b.stream(ctx, topic)
	if err != nil {
		return nil, err
	}
	ccfg := jetstream.ConsumerConfig{
		Durable:       ConsumerName(group),
		Description:   "eventkit group " + group + " on topic " + topic,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: max(cfg.MaxInFlight, b.opts.MaxAckPending),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if cfg.GroupMaxInFlight > 0 {
		ccfg.MaxAckPending = cfg.GroupMaxInFlight
	}
	if c, cerr := b.js.Consumer(ctx, stream, ccfg.Durable); cerr == nil {
		if err := checkOwner("consumer", ccfg.Durable, c.CachedInfo().Config.Description, ccfg.Description); err != nil {
			return nil, err
		}
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, stream, ccfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		b.forget(topic) // deleted behind our back: create it once more
		if stream, err = b.stream(ctx, topic); err == nil {
			cons, err = b.js.CreateOrUpdateConsumer(ctx, stream, ccfg)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("natsbroker: consumer %s on stream %s: %w", ConsumerName(group), stream, err)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	life, endLife := context.WithCancel(context.Background())
	s := &subscription{
		b: b, topic: topic, cons: cons, h: h, confirm: b.opts.ConfirmAcks,
		hctx: hctx, cancel: cancel, life: life, endLife: endLife,
		max: int64(cfg.MaxInFlight), freed: make(chan struct{}, 1), settled: make(chan struct{}, 1),
		closingCh: make(chan struct{}), loopDone: make(chan struct{}), done: make(chan struct{}),
	}
	// The handler runs in nats.go's delivery goroutine of the pull
	// subscription, as Consume's callback: no goroutine of ours between
	// the connection and the handler, and no timer per message.
	cc, err := cons.Consume(s.receive,
		jetstream.PullMaxMessages(cfg.MaxInFlight),
		jetstream.PullExpiry(b.opts.PullExpiry),
		jetstream.ConsumeErrHandler(s.consumeErr),
	)
	if err != nil {
		cancel()
		endLife()
		return nil, fmt.Errorf("natsbroker: pull from consumer %s: %w", ConsumerName(group), err)
	}
	s.cc = cc
	closed := cc.Closed()
	if !b.subs.Add(s) {
		cc.Stop()
		cancel()
		endLife()
		return nil, broker.ErrClosed
	}
	go func() {
		// Closed is closed once nats.go's delivery goroutine has
		// stopped; the lock waits out a callback that began just
		// before (none begins after).
		<-closed
		s.cbMu.Lock()
		close(s.loopDone)
		s.cbMu.Unlock()
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close(ctx) // an already-cancelled ctx: stop at once
		case <-s.loopDone:
			if !s.closing.Load() {
				// Stopped on its own (consumer deleted, connection
				// closed); consumeErr has said why, or not yet.
				if b.nc.IsClosed() {
					s.setErr(nats.ErrConnectionClosed)
				} else {
					s.setErr(jetstream.ErrMsgIteratorClosed)
				}
				s.finish()
			}
		case <-s.done:
		}
	}()
	return s, nil
}

type subscription struct {
	b       *Broker
	topic   string
	cc      jetstream.ConsumeContext
	cons    jetstream.Consumer
	h       broker.Handler
	confirm bool

	hctx    context.Context // handlers' ctx, cancelled when the subscription stops
	cancel  context.CancelFunc
	life    context.Context // ends with the subscription: bounds consumer checks
	endLife context.CancelFunc

	// unsettled counts the deliveries handed out and not settled, at
	// most max. Only receive takes a slot, so it is the only one to wait
	// for one: release signals freed when it frees the slot of a full
	// window.
	unsettled atomic.Int64
	max       int64
	freed     chan struct{}
	settled   chan struct{} // signalled when a delivery is settled

	cbMu      sync.Mutex // held by receive while it runs
	closing   atomic.Bool
	closingCh chan struct{} // closed when Close begins: frees a receive waiting for a slot
	closeMu   sync.Mutex

	// While Close ends the pull, nacks wait in back: a message nacked
	// while the server may still deliver into this subscription's pull
	// request would go straight back into it and be lost with the
	// subscription, until AckWait.
	backMu    sync.Mutex
	pullEnded bool
	back      []heldBack
	loopDone  chan struct{} // no handler call runs or will run
	done      chan struct{}
	doneOnce  sync.Once
	errMu     sync.Mutex
	err       error
}

func (s *subscription) Done() <-chan struct{} { return s.done }

func (s *subscription) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// receive is Consume's callback, called for one message at a time. A
// message is handed to the handler only with a free in-flight slot; while
// none is free the callback waits, and so does nats.go's delivery of the
// messages pulled after it (the pull asks for more only as they are
// taken).
func (s *subscription) receive(msg jetstream.Msg) {
	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	for {
		n := s.unsettled.Load() // never above max: only here does it grow
		if n < s.max {
			if s.unsettled.CompareAndSwap(n, n+1) {
				break
			}
			continue
		}
		select {
		case <-s.freed: // look again: a stale signal costs one more look
		case <-s.closingCh:
			s.handBack(msg, 0) // held back until the pull has ended
			return
		}
	}
	if s.closing.Load() {
		// Pulled while closing: Close gives it back once the pull has
		// ended.
		s.release()
		s.handBack(msg, 0)
		return
	}
	d := s.newDelivery(msg)
	err := s.h(s.hctx, d)
	adapterkit.AfterHandler(s.hctx, d, err)
}

// consumeErr is Consume's error handler. A consumer deleted or a bad
// request stops the pull (nats.go stops it after this call), so does a
// closed connection; missing heartbeats mean the pull request is lost (a
// reconnect, a restarted server) or the consumer is gone: nats.go pulls
// again, and the subscription stops if the consumer no longer exists.
func (s *subscription) consumeErr(_ jetstream.ConsumeContext, err error) {
	switch {
	case s.closing.Load():
	case errors.Is(err, jetstream.ErrNoHeartbeat):
		go func() {
			if gone := s.consumerGone(); gone != nil {
				s.setErr(gone)
				s.cc.Stop()
			}
		}()
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrBadRequest),
		errors.Is(err, jetstream.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionClosed):
		s.setErr(err)
	}
}

// consumerGone returns an error if the group's consumer (or its stream) no
// longer exists on the server, nil if it does or if that cannot be told now.
func (s *subscription) consumerGone() error {
	ctx, cancel := context.WithTimeout(s.life, 5*time.Second)
	defer cancel()
	_, err := s.cons.Info(ctx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	return nil
}

func (s *subscription) setErr(err error) {
	s.errMu.Lock()
	if s.err == nil || errors.Is(s.err, jetstream.ErrMsgIteratorClosed) {
		s.err = fmt.Errorf("natsbroker: subscription to %q stopped: %w", s.topic, err)
	}
	s.errMu.Unlock()
}

// release frees the in-flight slot of a settled delivery.
func (s *subscription) release() {
	if s.unsettled.Add(-1) == s.max-1 {
		select {
		case s.freed <- struct{}{}:
		default:
		}
	}
	select {
	case s.settled <- struct{}{}:
	default:
	}
}

// heldBack is a nack waiting for the pull to end.
type heldBack struct {
	msg   jetstream.Msg
	delay time.Duration
}

// handBack nacks msg, or, while Close is ending the pull, holds the nack
// back until the pull has ended.
func (s *subscription) handBack(msg jetstream.Msg, delay time.Duration) error {
	s.backMu.Lock()
	defer s.backMu.Unlock()
	if s.closing.Load() && !s.pullEnded {
		s.back = append(s.back, heldBack{msg, delay})
		return nil
	}
	return nak(msg, delay)
}

func nak(msg jetstream.Msg, delay time.Duration) error {
	if delay > 0 {
		return msg.NakWithDelay(delay)
	}
	return msg.Nak()
}

// handBackTimeout bounds how long Close waits for the server to forget the
// ended pull, whatever Close's context.
const handBackTimeout = 5 * time.Second

// endPull nacks what was held back once the pull has ended (loopDone): the
// messages pulled but not handed to the handler, and the nacks of
// deliveries settled meanwhile. Close drained the subscription: it
// unsubscribes and makes a round trip, and once the messages buffered have
// come out (into receive, which holds them back) it reports closed; the
// server then has no interest left in the pull request and delivers what
// is nacked afterwards to other subscribers of the group.
func (s *subscription) endPull() {
	if s.b.nc.IsConnected() {
		// The server keeps the ended pull request in its list until it
		// next looks at it. A redelivery that finds it there first is
		// lost until AckWait on servers before 2.10 (the consumer steps
		// its stream sequence back instead of requeueing the redelivery).
		// Consumer info makes the server drop requests that lost their
		// interest, so nothing nacked below meets it.
		ctx, cancel := context.WithTimeout(context.Background(), handBackTimeout)
		_, _ = s.cons.Info(ctx)
		cancel()
	}
	s.backMu.Lock()
	s.pullEnded = true
	back := s.back
	s.back = nil
	s.backMu.Unlock()
	for _, h := range back {
		_ = nak(h.msg, h.delay)
	}
}

// Close stops pulling, waits (until ctx ends) for the handler to return and
// for the deliveries handed out to be settled, and releases the
// subscription. The pull ends first (the server will deliver nothing more
// into it); then the messages pulled but not handed to the handler are
// nacked, and so are deliveries the handler nacks during Close, so they are
// redelivered at once (to another subscriber of the group if there is one).
// Deliveries left unsettled when ctx ends are redelivered after AckWait.
func (s *subscription) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	select {
	case <-s.done:
		return nil
	default:
	}
	s.backMu.Lock() // a nack being sent goes out before the pull ends
	s.closing.Store(true)
	close(s.closingCh)
	s.backMu.Unlock()
	if s.b.nc.IsConnected() {
		s.cc.Drain()
	} else {
		s.cc.Stop()
	}
	// Wait for the pull to end and the handler to return (loopDone), and
	// for settlement.
	ld, finished := s.loopDone, false
wait:
	for !finished || s.unsettled.Load() > 0 {
		select {
		case <-ld:
			finished, ld = true, nil
			s.endPull()
		case <-s.settled:
		case <-ctx.Done():
			break wait
		}
	}
	s.cancel() // a handler still running is told to stop
	if !finished {
		<-s.loopDone // the drain ends once the handler has returned
		s.endPull()
	}
	s.finish()
	return nil
}

// finish releases the subscription once its loop has returned.
func (s *subscription) finish() {
	s.doneOnce.Do(func() {
		s.cc.Stop()
		s.cancel()
		s.endLife()
		s.b.subs.Remove(s)
		if s.closing.Load() {
			s.errMu.Lock()
			s.err = nil
			s.errMu.Unlock()
		}
		close(s.done)
	})
}

// delivery is one message handed to the handler.
type delivery struct {
	adapterkit.SettleOnce
	s       *subscription
	msg     jetstream.Msg
	ev      eventkit.Event
	err     error
	attempt int
}

func (s *subscription) newDelivery(msg jetstream.Msg) *delivery {
	d := &delivery{s: s, msg: msg}
	if d.err = s.b.checkSize(msg); d.err == nil {
		d.ev, d.err = decode(msg.Headers(), msg.Data())
	}
	if n, ok := deliveredCount(msg.Reply()); ok {
		d.attempt = n
	} else if md, err := msg.Metadata(); err == nil {
		d.attempt = int(md.NumDelivered)
	} else {
		d.attempt = 1
	}
	return d
}

func (d *delivery) Event() eventkit.Event { return d.ev }
func (d *delivery) DecodeErr() error      { return d.err }
func (d *delivery) Topic() string         { return d.s.topic }
func (d *delivery) Attempt() int          { return d.attempt }

// Ack implements broker.Delivery: a plain JetStream ack, or with
// Options.ConfirmAcks one the server confirms.
func (d *delivery) Ack(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	defer d.s.release()
	if d.s.confirm {
		return d.msg.DoubleAck(ctx)
	}
	return d.msg.Ack()
}

// Nack implements broker.Delivery with a JetStream NAK, delayed on the
// server when delay > 0.
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	defer d.s.release()
	return d.s.handBack(d.msg, delay)
}

// Term implements broker.Delivery with a JetStream TERM: the message is
// never delivered to this group again.
func (d *delivery) Term(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	defer d.s.release()
	return d.msg.Term()
}

// InProgress implements broker.Extender with a JetStream "+WPI": the server
// restarts the message's ack wait.
func (d *delivery) InProgress(ctx context.Context) error {
	if d.Settled() {
		return broker.ErrAlreadySettled
	}
	return d.msg.InProgress()
}

// checkSize refuses a message whose headers and body are over the limit
// (max_payload, or Options.MaxEventSize if lower): a *eventkit.DecodeError
// wrapping a *eventkit.SizeError (see adapterkit.CheckSize). The client has
// buffered the message already; the server's max_payload bounds that.
func (b *Broker) checkSize(msg jetstream.Msg) error {
	if b.maxPayload >= b.serverMax {
		// The server refused anything larger than max_payload on the wire,
		// and n below (header names and values, and the body) is at most
		// that: no need to walk the headers of every delivery.
		return nil
	}
	h, body := msg.Headers(), msg.Data()
	n, nh := len(body), 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v)
			nh++
		}
	}
	if n <= b.maxPayload+adapterkit.Allowance(nh) {
		return nil
	}
	hs := make(map[string]string, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			hs[k] = vs[0]
		}
	}
	return adapterkit.CheckSize(eventkit.NATSBinding.Name+" binary", h.Get(eventkit.NATSBinding.Prefix+"id"), body, hs, n, nh, b.maxPayload, b.sizeWhere)
}
