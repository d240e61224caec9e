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
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("natsbroker: nil handler")
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
	it, err := cons.Messages(
		jetstream.PullMaxMessages(cfg.MaxInFlight),
		jetstream.PullExpiry(b.opts.PullExpiry),
	)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: pull from consumer %s: %w", ConsumerName(group), err)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	pull, stopPull := context.WithCancel(context.Background())
	s := &subscription{
		b: b, topic: topic, it: it, cons: cons, h: h, confirm: b.opts.ConfirmAcks,
		hctx: hctx, cancel: cancel, pull: pull, stopPull: stopPull,
		sem: make(chan struct{}, cfg.MaxInFlight), settled: make(chan struct{}, 1),
		loopDone: make(chan struct{}), done: make(chan struct{}),
		connClosed: b.nc.StatusChanged(nats.CLOSED),
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		it.Stop()
		cancel()
		stopPull()
		b.nc.RemoveStatusListener(s.connClosed)
		return nil, broker.ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	go s.loop()
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close(ctx) // an already-cancelled ctx: stop at once
		case <-s.loopDone:
			if !s.closing.Load() {
				s.finish() // stopped on its own (consumer deleted, connection closed)
			}
		case <-s.done:
		}
	}()
	return s, nil
}

type subscription struct {
	b       *Broker
	topic   string
	it      jetstream.MessagesContext
	cons    jetstream.Consumer
	h       broker.Handler
	confirm bool

	hctx     context.Context // handlers' ctx, cancelled when the subscription stops
	cancel   context.CancelFunc
	pull     context.Context // cancelled to abandon a pending Next at once
	stopPull context.CancelFunc

	sem        chan struct{}    // one token per unsettled delivery
	connClosed chan nats.Status // the connection closed for good
	settled    chan struct{}    // signalled when a delivery is settled

	closing atomic.Bool
	closeMu sync.Mutex

	// While Close ends the pull, nacks wait in back: a message nacked
	// while the server may still deliver into this subscription's pull
	// request would go straight back into it and be lost with the
	// subscription, until AckWait.
	backMu    sync.Mutex
	pullEnded bool
	back      []heldBack
	loopDone  chan struct{}
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

func (s *subscription) loop() {
	defer close(s.loopDone)
	next := jetstream.NextContext(s.pull)
	for {
		// A message is taken only with a free in-flight slot.
		select {
		case s.sem <- struct{}{}:
		case <-s.pull.Done():
			return
		case <-s.connClosed:
			if !s.closing.Load() {
				s.setErr(nats.ErrConnectionClosed)
			}
			return
		}
		msg, err := s.it.Next(next)
		if err != nil {
			<-s.sem
			if s.closing.Load() || s.pull.Err() != nil {
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				s.setErr(err)
				return
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				// The pull request is lost (a reconnect, a restarted
				// server) or the consumer is gone. The iterator pulls
				// again on the next call; stop only if the consumer
				// no longer exists.
				if gone := s.consumerGone(); gone != nil {
					s.setErr(gone)
					return
				}
				continue
			}
			// Other errors (a consumer deleted, a bad request) have
			// stopped the iterator: the next call says so.
			s.setErr(err)
			continue
		}
		if s.closing.Load() {
			// Prefetched while closing: Close gives it back once the
			// pull has ended.
			<-s.sem
			s.handBack(msg, 0)
			continue
		}
		d := s.newDelivery(msg)
		err = s.h(s.hctx, d)
		adapterkit.AfterHandler(s.hctx, d, err)
	}
}

// consumerGone returns an error if the group's consumer (or its stream) no
// longer exists on the server, nil if it does or if that cannot be told now.
func (s *subscription) consumerGone() error {
	ctx, cancel := context.WithTimeout(s.pull, 5*time.Second)
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
	<-s.sem
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

// handBackTimeout bounds how long Close waits for the server to end the
// pull, whatever Close's context.
const handBackTimeout = 5 * time.Second

// endPull ends the pull and then nacks what was held back: the messages
// pulled but not handed to the handler, and the nacks of deliveries settled
// meanwhile. The iterator is drained: it unsubscribes and makes a round
// trip, so once it reports closed the server has no interest left in the
// pull request and delivers what is nacked afterwards to other subscribers
// of the group. Messages still buffered come out of the drain and are held
// back too.
func (s *subscription) endPull() {
	if s.b.nc.IsConnected() {
		s.it.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), handBackTimeout)
		for {
			msg, err := s.it.Next(jetstream.NextContext(ctx))
			if err != nil {
				break
			}
			s.handBack(msg, 0)
		}
		// The server keeps the ended pull request in its list until it
		// next looks at it. A redelivery that finds it there first is
		// lost until AckWait on servers before 2.10 (the consumer steps
		// its stream sequence back instead of requeueing the redelivery).
		// Consumer info makes the server drop requests that lost their
		// interest, so nothing nacked below meets it.
		_, _ = s.cons.Info(ctx)
		cancel()
	}
	s.stopPull()
	s.it.Stop()
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
	s.backMu.Unlock()
	s.endPull()
	// Wait for the loop (the current handler call) and for settlement.
	ld, finished := s.loopDone, false
wait:
	for !finished || len(s.sem) > 0 {
		select {
		case <-ld:
			finished, ld = true, nil
		case <-s.settled:
		case <-ctx.Done():
			break wait
		}
	}
	s.cancel() // a handler still running is told to stop
	<-s.loopDone
	s.finish()
	return nil
}

// finish releases the subscription once its loop has returned.
func (s *subscription) finish() {
	s.doneOnce.Do(func() {
		s.stopPull()
		s.it.Stop()
		s.cancel()
		s.b.nc.RemoveStatusListener(s.connClosed)
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.mu.Unlock()
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
