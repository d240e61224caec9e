package rabbitmqbroker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// AttemptHeader carries the attempt number of a message that eventkit
// re-published for a retry (Nack with a delay; Nack on a classic queue).
const AttemptHeader = "x-eventkit-attempt"

var consumerSeq atomic.Uint64

type subscription struct {
	b                   *Broker
	topic, group, queue string
	h                   broker.Handler
	cfg                 broker.SubscribeConfig

	hctx    context.Context // handler context: cancelled when the subscription stops
	hcancel context.CancelFunc
	lose    context.CancelFunc // ends the current channel's delivery context (consume)

	stop     chan struct{} // closed by Close: stop fetching
	stopOnce sync.Once
	loopDone chan struct{} // closed when the delivery loop has returned
	done     chan struct{} // closed when the subscription is released
	finished sync.Once

	mu       sync.Mutex
	ch       *amqp.Channel          // current channel, nil when released
	tag      string                 // current consumer tag
	cancels  chan string            // basic.cancel from the server on the current channel
	inflight map[*delivery]struct{} // deliveries handed out and not yet settled
	err      error
	settled  chan struct{} // pulsed when a delivery settles
}

// Subscribe declares the topic's exchange and the group's queue (quorum by
// default) bound to it with "#", and consumes it with manual acks and a
// prefetch of MaxInFlight. h is called one delivery at a time. If the
// channel or connection is lost, the subscription re-declares its topology
// and resumes on the new connection; deliveries of the lost channel can no
// longer be settled (they are redelivered by the server).
func (b *Broker) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if b.isClosed() {
		return nil, broker.ErrClosed
	}
	if group == "" {
		return nil, broker.ValidateName("group", group) // checkNames takes "" as no group
	}
	if err := b.checkNames(topic, group); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("rabbitmq: Subscribe: nil handler")
	}
	s := &subscription{
		b: b, topic: topic, group: group, queue: QueueName(topic, group), h: h,
		cfg:      adapterkit.ApplySubscribeOptions(opts...),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
		done:     make(chan struct{}),
		settled:  make(chan struct{}, 1),
		inflight: map[*delivery]struct{}{},
	}
	conn, err := b.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, deliveries, err := s.open(conn)
	if err != nil {
		return nil, err
	}
	// hctx is set before Add: from Add on, Broker.Close may close s, and
	// Close cancels it.
	s.hctx, s.hcancel = context.WithCancel(ctx)
	if !b.subs.Add(s) {
		s.hcancel()
		_ = ch.Close()
		return nil, broker.ErrClosed
	}
	go s.run(ch, deliveries)
	return s, nil
}

// open opens a channel, sets the prefetch, declares the topology and starts
// consuming.
func (s *subscription) open(conn *amqp.Connection) (*amqp.Channel, <-chan amqp.Delivery, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: open channel: %w", ErrConnectionLost, err)
	}
	fail := func(err error) (*amqp.Channel, <-chan amqp.Delivery, error) {
		_ = ch.Close()
		return nil, nil, err
	}
	if err := ch.Qos(min(s.cfg.MaxInFlight, 65535), 0, false); err != nil {
		return fail(fmt.Errorf("rabbitmq: qos: %w", err))
	}
	if err := s.b.declareGroup(ch, s.topic, s.group); err != nil {
		return fail(err)
	}
	tag := "eventkit-" + strconv.FormatUint(consumerSeq.Add(1), 10)
	cancels := ch.NotifyCancel(make(chan string, 1))
	deliveries, err := ch.Consume(s.queue, tag, false, false, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("rabbitmq: consume %q: %w", s.queue, err))
	}
	s.mu.Lock()
	s.ch, s.tag, s.cancels = ch, tag, cancels
	s.mu.Unlock()
	return ch, deliveries, nil
}

func (s *subscription) stopping() bool {
	select {
	case <-s.stop:
		return true
	case <-s.hctx.Done():
		return true
	default:
		return false
	}
}

// run is the delivery loop: it consumes until stopped, re-opening the
// channel (and waiting for the broker's reconnection) when it is lost.
func (s *subscription) run(ch *amqp.Channel, deliveries <-chan amqp.Delivery) {
	selfStop := true
	defer func() {
		close(s.loopDone)
		if selfStop {
			s.finish()
		}
	}()
	log := s.b.opts.Logger
	for {
		if !s.consume(ch, deliveries) {
			// Stopped: cancel the consumer so the server sends no more;
			// what it already sent stays unacked until the channel closes.
			s.mu.Lock()
			tag := s.tag
			s.mu.Unlock()
			_ = ch.Cancel(tag, false)
			select {
			case <-s.stop:
				selfStop = false // Close finishes
			default:
			}
			return
		}
		s.mu.Lock()
		cancels := s.cancels
		s.mu.Unlock()
		var cancelled bool
		select {
		case _, cancelled = <-cancels: // closed (false) when the channel is
		default:
		}
		if cancelled && !ch.IsClosed() {
			// The server cancelled the consumer: the queue was deleted.
			// Re-creating it would hide that its events are gone.
			_ = ch.Close()
			s.mu.Lock()
			s.err = fmt.Errorf("%w: queue %q", ErrQueueDeleted, s.queue)
			s.mu.Unlock()
			log.Error("rabbitmq: subscription stopped: queue deleted", "queue", s.queue)
			return
		}
		_ = ch.Close()
		log.Warn("rabbitmq: subscription channel lost, resuming", "queue", s.queue)
		delay := s.b.opts.ReconnectMin
		for {
			if s.stopping() {
				select {
				case <-s.stop:
					selfStop = false
				default:
				}
				return
			}
			conn, err := s.b.connection(s.hctx)
			if err == nil {
				ch, deliveries, err = s.open(conn)
				if err == nil {
					break
				}
				var ae *amqp.Error
				if errors.As(err, &ae) && !conn.IsClosed() && permanentCode(ae.Code) {
					// The server refused the topology (406, 403, ...):
					// retrying will not help.
					s.mu.Lock()
					s.err = err
					s.mu.Unlock()
					log.Error("rabbitmq: subscription failed", "queue", s.queue, "err", err)
					return
				}
			} else if errors.Is(err, broker.ErrClosed) {
				return
			}
			log.Warn("rabbitmq: resubscribe failed", "queue", s.queue, "err", err, "retry_in", delay)
			select {
			case <-s.stop:
				selfStop = false
				return
			case <-s.hctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, s.b.opts.ReconnectMax)
		}
		log.Info("rabbitmq: subscription resumed", "queue", s.queue)
	}
}

// consume hands deliveries to the handler one at a time. It returns false
// when the subscription is stopping, true when the channel was lost.
func (s *subscription) consume(ch *amqp.Channel, deliveries <-chan amqp.Delivery) bool {
	// chCtx ends when the channel is lost: its deliveries can no longer be
	// settled (the server requeued them), so the consumer runtime stops
	// waiting on them (broker.DeliveryContext).
	// On the stop paths it ends with the handler context (finish), once
	// the deliveries were settled.
	chCtx, lose := context.WithCancel(s.hctx)
	s.lose = lose
	for {
		select {
		case <-s.stop:
			return false
		case <-s.hctx.Done():
			return false
		case m, ok := <-deliveries:
			if !ok {
				lose()
				return true
			}
			if s.stopping() {
				return false // m stays unacked: requeued when the channel closes
			}
			d := s.newDelivery(ch, m)
			d.ctx = chCtx
			err := s.h(s.hctx, d)
			adapterkit.AfterHandler(s.hctx, d, err)
		}
	}
}

// finish releases the subscription: cancels the handler context, closes the
// channel (the server requeues what is unacked) and closes Done.
func (s *subscription) finish() {
	s.finished.Do(func() {
		s.hcancel()
		s.mu.Lock()
		ch := s.ch
		s.ch = nil
		// The server requeues what is unsettled when the channel closes:
		// the ack-wait timers have nothing left to do.
		for d := range s.inflight {
			d.timer.Stop()
		}
		s.mu.Unlock()
		if ch != nil {
			_ = ch.Close()
		}
		s.b.subs.Remove(s)
		close(s.done)
	})
}

func (s *subscription) Done() <-chan struct{} { return s.done }

func (s *subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops fetching, waits until ctx ends for the handler to return and
// for handed-out deliveries to be settled, then closes the channel: the
// server requeues whatever is still unacked.
func (s *subscription) Close(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	s.stopOnce.Do(func() { close(s.stop) })
	loopDone := s.loopDone
	exited := false
wait:
	for {
		s.mu.Lock()
		n := len(s.inflight)
		s.mu.Unlock()
		if exited && n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			break wait
		case <-loopDone:
			exited, loopDone = true, nil
		case <-s.settled:
		case <-s.done:
			return nil
		}
	}
	s.hcancel()
	<-s.loopDone
	s.finish()
	return nil
}

// delivery is one AMQP delivery handed to the handler.
type delivery struct {
	adapterkit.SettleOnce
	s       *subscription
	ch      *amqp.Channel // the channel it arrived on: its tag is valid only there
	m       amqp.Delivery
	ev      eventkit.Event
	derr    error
	attempt int
	timer   *time.Timer
	ctx     context.Context // ends when ch is lost
}

// Context ends when the delivery's channel was lost: it can no longer be
// settled, and the server delivers the message again.
func (d *delivery) Context() context.Context { return d.ctx }

func (s *subscription) newDelivery(ch *amqp.Channel, m amqp.Delivery) *delivery {
	d := &delivery{s: s, ch: ch, m: m, attempt: attemptOf(&m)}
	if d.derr = checkSize(&m, s.b.opts.MaxMessageSize); d.derr == nil {
		d.ev, d.derr = decode(&m)
	}
	s.mu.Lock()
	d.timer = time.AfterFunc(s.cfg.AckWait, d.expire)
	s.inflight[d] = struct{}{}
	s.mu.Unlock()
	return d
}

func (d *delivery) Event() eventkit.Event { return d.ev }
func (d *delivery) DecodeErr() error      { return d.derr }
func (d *delivery) Topic() string         { return d.s.topic }
func (d *delivery) Attempt() int          { return d.attempt }

// release ends the delivery's life as in flight.
func (d *delivery) release() {
	d.timer.Stop()
	d.done()
}

func (d *delivery) done() {
	s := d.s
	s.mu.Lock()
	delete(s.inflight, d)
	s.mu.Unlock()
	select {
	case s.settled <- struct{}{}:
	default:
	}
}

// Ack acknowledges the message: the server deletes it.
func (d *delivery) Ack(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	defer d.release()
	return d.ack()
}

// Term acknowledges the message too: it is never delivered again. (The
// consumer runtime dead-letters it itself before calling Term.)
func (d *delivery) Term(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	defer d.release()
	return d.ack()
}

// Nack asks for redelivery. With a delay, the message is re-published (with
// the attempt header incremented) to the group's retry queue for the delay
// rounded up to a bucket, whose TTL dead-letters it back to the group's
// queue; only once the server confirmed that copy is the original acked. With
// no delay it is requeued (quorum queue on RabbitMQ 3.x) or re-published to
// the group queue (classic queues, to count attempts; RabbitMQ 4, whose
// quorum queues drop a message requeued more than 20 times by default).
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	defer d.release()
	return d.retry(ctx, delay)
}

// expire redelivers a delivery left unsettled for longer than AckWait.
func (d *delivery) expire() {
	if !d.Claim() {
		return
	}
	defer d.done() // the timer has fired: no need to stop it
	ctx, cancel := context.WithTimeout(context.Background(), d.s.b.opts.ConnectTimeout)
	defer cancel()
	_ = d.retry(ctx, 0)
}

func (d *delivery) ack() error {
	if err := d.ch.Ack(d.m.DeliveryTag, false); err != nil {
		return fmt.Errorf("%w: ack (the message will be redelivered): %w", ErrConnectionLost, err)
	}
	return nil
}

func (d *delivery) requeue() error {
	if err := d.ch.Nack(d.m.DeliveryTag, false, true); err != nil {
		return fmt.Errorf("%w: nack (the message will be redelivered): %w", ErrConnectionLost, err)
	}
	return nil
}

func (d *delivery) retry(ctx context.Context, delay time.Duration) error {
	s, b := d.s, d.s.b
	if delay <= 0 && b.requeue {
		return d.requeue()
	}
	if d.ch.IsClosed() {
		return fmt.Errorf("%w: the message will be redelivered", ErrConnectionLost)
	}
	target := s.queue
	if delay > 0 {
		name, err := b.ensureRetryQueue(ctx, s.queue, b.bucket(delay))
		if err != nil {
			b.opts.Logger.Warn("rabbitmq: delayed retry unavailable, requeueing without delay", "queue", s.queue, "err", err)
			return d.requeue()
		}
		target = name
	}
	msg := d.republishing()
	fails := b.send(ctx, "", 1, func(int) (string, string, amqp.Publishing) { return target, d.m.MessageId, msg })
	if len(fails) > 0 {
		if errors.Is(fails[0].Err, ErrUnroutable) && target != s.queue {
			b.forget("q:" + target) // the retry queue was deleted: declare it again next time
		}
		b.opts.Logger.Warn("rabbitmq: re-publish for retry failed, requeueing without delay", "queue", target, "err", fails[0].Err)
		return d.requeue()
	}
	return d.ack()
}

// republishing copies the delivered message for a retry, with the attempt
// header set to the next attempt and the server's bookkeeping headers removed.
func (d *delivery) republishing() amqp.Publishing {
	h := make(amqp.Table, len(d.m.Headers)+1)
	for k, v := range d.m.Headers {
		switch {
		case k == "x-delivery-count", k == "x-death", k == AttemptHeader,
			strings.HasPrefix(k, "x-first-death-"), strings.HasPrefix(k, "x-last-death-"):
			continue
		}
		h[k] = v
	}
	h[AttemptHeader] = int32(d.attempt + 1)
	m := &d.m
	return amqp.Publishing{
		Headers:         h,
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        m.Priority,
		CorrelationId:   m.CorrelationId,
		ReplyTo:         m.ReplyTo,
		MessageId:       m.MessageId,
		Timestamp:       m.Timestamp,
		Type:            m.Type,
		AppId:           m.AppId,
		Body:            m.Body,
	}
}

// attemptOf computes the delivery count of a message to its group: the
// attempt eventkit recorded when it re-published the message (1 if never),
// plus the server's redelivery count since (x-delivery-count of quorum
// queues; for classic queues the redelivered flag says only "at least once
// more").
func attemptOf(m *amqp.Delivery) int {
	base := 1
	if v, ok := intValue(m.Headers[AttemptHeader]); ok && v >= 1 && v < 1<<30 {
		base = int(v)
	}
	dc, _ := intValue(m.Headers["x-delivery-count"])
	if dc < 0 || dc >= 1<<30 {
		dc = 0
	}
	n := base + int(dc)
	if m.Redelivered && dc == 0 {
		n++
	}
	return n
}

func intValue(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x > 1<<62 {
			return 0, false
		}
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// decode reads an event from a delivery in CloudEvents binary mode. Header
// values keep their AMQP types (a "time" sent as a native timestamp, boolean
// and integer extensions), which eventkit.Binding.DecodeTyped accepts as the
// AMQP binding requires; both "cloudEvents:" and "cloudEvents_" are read.
func decode(m *amqp.Delivery) (eventkit.Event, error) {
	return eventkit.AMQPBinding.DecodeTyped(maps.All(m.Headers), m.ContentType, m.Body)
}

// checkSize refuses a delivery whose body and headers are over limit
// (Options.MaxMessageSize): a *eventkit.DecodeError wrapping a
// *eventkit.SizeError (see adapterkit.CheckSize). The client has read the
// whole body already; the server's max_message_size bounds that.
func checkSize(m *amqp.Delivery, limit int) error {
	n := len(m.Body)
	for k, v := range m.Headers {
		n += len(k) + len(fmt.Sprint(v))
	}
	if limit <= 0 || n <= limit+adapterkit.Allowance(len(m.Headers)) {
		return nil
	}
	var hs map[string]string
	if n-len(m.Body) <= 4<<10 {
		hs = make(map[string]string, len(m.Headers))
		for k, v := range m.Headers {
			hs[k] = fmt.Sprint(v)
		}
	}
	return adapterkit.CheckSize(eventkit.AMQPBinding.Name+" binary", m.MessageId, m.Body, hs, n, len(m.Headers), limit, sizeWhere)
}

// permanentCode reports whether a channel error means the server refused the
// topology or access, which retrying does not fix.
func permanentCode(code int) bool {
	switch code {
	case amqp.AccessRefused, amqp.NotFound, amqp.ResourceLocked, amqp.PreconditionFailed, amqp.NotAllowed:
		return true
	}
	return false
}
