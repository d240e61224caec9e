package eventkittest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

var (
	// ErrInjectedPublish is the error of a Publish call that Faults.FailPublish
	// made fail.
	ErrInjectedPublish = errors.New("eventkittest: injected publish failure")
	// ErrDisconnected is returned by settlements and publishes while a
	// Faults.DisconnectAfter disconnection lasts.
	ErrDisconnected = errors.New("eventkittest: injected disconnect")
)

// Faults says which faults a FaultBroker injects. The zero value injects
// none. Every fault is deterministic (counted, not random), so a scenario
// that fails fails every time.
type Faults struct {
	// DropAckEvery loses the ack of every Nth first delivery: Ack returns
	// nil but the broker is told to redeliver, as after a crash between the
	// inbox commit and the ack.
	DropAckEvery int
	// Duplicates delivers every event this many extra times, the copies
	// handed to the handler right after the original (as a broker does
	// after a redelivery race).
	Duplicates int
	// Concurrent delivers every event to this many handler calls that are
	// all in flight at once: the copies are handed over before the original
	// is settled, and the original's settlement waits until every copy is
	// settled. Use a consumer Concurrency of at least Concurrent.
	Concurrent int
	// ReorderEvery holds back every Nth event: its first delivery is
	// redelivered after ReorderDelay without reaching the handler, so that
	// the events published after it overtake it.
	ReorderEvery int
	// ReorderDelay is how long a held-back event waits (default 100ms).
	ReorderDelay time.Duration
	// Delay hands every delivery to the handler only after this long.
	Delay time.Duration
	// FailPublish makes the Nth Publish call (from 1) fail as a whole with
	// ErrInjectedPublish, nothing of it sent.
	FailPublish int
	// DisconnectAfter drops the connection once, after the Nth delivery
	// has been handed to the handler: the next DisconnectFor settlements
	// (default 1) fail with ErrDisconnected, and the broker redelivers the
	// events whose settlement failed. Publishes made while the connection
	// is down fail too, up to DisconnectFor of them; they do not shorten
	// the disconnection, so the settlements always meet it.
	DisconnectAfter int
	// DisconnectFor is how many settlements the disconnection lasts.
	DisconnectFor int
}

// Stats counts the faults a FaultBroker injected, so a test can prove each
// one happened.
type Stats struct {
	Delivered        int // deliveries from the wrapped broker handed on
	AcksDropped      int
	Duplicated       int // extra copies handed to the handler
	MaxConcurrent    int // most deliveries of one event unsettled at once
	Reordered        int // events held back
	Delayed          int
	PublishesFailed  int
	DisconnectedOps  int // settlements and publishes failed with ErrDisconnected
	Acked, Termed    int // final settlements of original deliveries
	PublishCalls     int
	SettlementsAfter int // settlements of copies (never reach the broker)
}

// FaultBroker wraps a broker.Broker and injects Faults into what flows
// through it. Publish and Subscribe follow the broker.Broker contract, with
// the faults on top; Capabilities and Close are the wrapped broker's.
type FaultBroker struct {
	inner  broker.Broker
	faults Faults

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced on every change
	stats       Stats
	firsts      int // first deliveries seen (DropAckEvery, ReorderEvery)
	publishes   int
	downFor     int  // settlements left while disconnected
	pubDownFor  int  // publishes that may still fail while disconnected
	disconnects bool // the disconnection already happened
	unsettled   map[string]int
	done        map[string]bool // event ids acked or termed for good
}

var _ broker.Broker = (*FaultBroker)(nil)

// NewFaultBroker wraps b.
func NewFaultBroker(b broker.Broker, f Faults) *FaultBroker {
	if f.ReorderDelay <= 0 {
		f.ReorderDelay = 100 * time.Millisecond
	}
	if f.DisconnectFor <= 0 {
		f.DisconnectFor = 1
	}
	return &FaultBroker{inner: b, faults: f, changed: make(chan struct{}),
		unsettled: map[string]int{}, done: map[string]bool{}}
}

// Stats returns what was injected so far.
func (fb *FaultBroker) Stats() Stats {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.stats
}

// Capabilities returns the wrapped broker's.
func (fb *FaultBroker) Capabilities() broker.Capabilities { return fb.inner.Capabilities() }

// Close closes the wrapped broker.
func (fb *FaultBroker) Close(ctx context.Context) error { return fb.inner.Close(ctx) }

// notifyLocked wakes WaitSettled.
func (fb *FaultBroker) notifyLocked() {
	close(fb.changed)
	fb.changed = make(chan struct{})
}

// Publish publishes through the wrapped broker, unless FailPublish or a
// disconnection makes the call fail (with a *broker.PublishError naming every
// event).
func (fb *FaultBroker) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	fb.mu.Lock()
	fb.publishes++
	fb.stats.PublishCalls++
	var err error
	switch {
	case fb.downFor > 0 && fb.pubDownFor > 0:
		// The publisher's retry after this failure finds the connection
		// back once DisconnectFor publishes have failed; the settlements
		// keep their own budget, so a producer still publishing cannot
		// spend the disconnection before any settlement meets it.
		fb.pubDownFor--
		fb.stats.DisconnectedOps++
		err = ErrDisconnected
	case fb.faults.FailPublish > 0 && fb.publishes == fb.faults.FailPublish:
		fb.stats.PublishesFailed++
		err = ErrInjectedPublish
	}
	fb.mu.Unlock()
	if err != nil {
		return adapterkit.FailAll(topic, events, err)
	}
	return fb.inner.Publish(ctx, topic, events...)
}

// Subscribe subscribes to the wrapped broker and injects the faults into the
// deliveries before they reach h.
func (fb *FaultBroker) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if h == nil {
		return nil, errors.New("eventkittest: nil handler")
	}
	return fb.inner.Subscribe(ctx, topic, group, func(ctx context.Context, d broker.Delivery) error {
		return fb.deliver(ctx, d, h)
	}, opts...)
}

// WaitSettled waits until every event of ids has been acked or termed for
// good through this broker and no delivery (nor copy) is unsettled, or until
// ctx ends.
func (fb *FaultBroker) WaitSettled(ctx context.Context, ids []string) error {
	for {
		fb.mu.Lock()
		ok := true
		for _, id := range ids {
			if !fb.done[id] || fb.unsettled[id] > 0 {
				ok = false
				break
			}
		}
		ch := fb.changed
		missing := 0
		for _, id := range ids {
			if !fb.done[id] {
				missing++
			}
		}
		fb.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("eventkittest: %d of %d events not settled: %w", missing, len(ids), ctx.Err())
		}
	}
}

func (fb *FaultBroker) deliver(ctx context.Context, d broker.Delivery, h broker.Handler) error {
	id := d.Event().ID
	fb.mu.Lock()
	fb.stats.Delivered++
	first := d.Attempt() == 1 && d.DecodeErr() == nil
	holdBack, dropAck := false, false
	if first {
		fb.firsts++
		holdBack = fb.faults.ReorderEvery > 0 && fb.firsts%fb.faults.ReorderEvery == 0
		dropAck = fb.faults.DropAckEvery > 0 && fb.firsts%fb.faults.DropAckEvery == 0
	}
	if holdBack {
		fb.stats.Reordered++
		fb.mu.Unlock()
		return d.Nack(ctx, fb.faults.ReorderDelay)
	}
	if !fb.disconnects && fb.faults.DisconnectAfter > 0 && fb.stats.Delivered >= fb.faults.DisconnectAfter {
		fb.disconnects = true
		fb.downFor = fb.faults.DisconnectFor
		fb.pubDownFor = fb.faults.DisconnectFor
	}
	copies := fb.faults.Duplicates
	concurrent := fb.faults.Concurrent > 1 && d.DecodeErr() == nil
	if concurrent {
		copies = fb.faults.Concurrent - 1
	}
	if d.DecodeErr() != nil {
		copies = 0
	}
	fb.unsettled[id] += 1 + copies
	fb.stats.MaxConcurrent = max(fb.stats.MaxConcurrent, fb.unsettled[id])
	if fb.faults.Delay > 0 {
		fb.stats.Delayed++
	}
	fb.mu.Unlock()

	if fb.faults.Delay > 0 {
		t := time.NewTimer(fb.faults.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	orig := &faultDelivery{Delivery: d, fb: fb, dropAck: dropAck}
	if concurrent {
		orig.wait = make(chan struct{})
		orig.copies = copies
	}
	var err error
	if !concurrent {
		err = fb.call(ctx, h, orig)
	}
	for i := range copies {
		c := &faultDelivery{Delivery: d, fb: fb, copy: i + 1, parent: orig}
		fb.mu.Lock()
		fb.stats.Duplicated++
		fb.mu.Unlock()
		_ = fb.call(ctx, h, c)
	}
	if concurrent {
		err = fb.call(ctx, h, orig)
	}
	return err
}

// call runs h and applies the Handler contract for deliveries h returned an
// error for without settling them.
func (fb *FaultBroker) call(ctx context.Context, h broker.Handler, d *faultDelivery) error {
	err := h(ctx, d)
	if err != nil && !d.isSettled() {
		if eventkit.IsPermanent(err) {
			_ = d.Term(ctx)
		} else {
			_ = d.Nack(ctx, 0)
		}
	}
	return nil
}

// faultDelivery is a delivery, or a copy of one (copy > 0), with the faults
// of its settlement.
type faultDelivery struct {
	broker.Delivery
	fb      *FaultBroker
	copy    int
	parent  *faultDelivery
	dropAck bool

	// Concurrent: the original settles only after its copies.
	wait   chan struct{}
	copies int

	mu       sync.Mutex
	settled  bool
	copyDone int
}

func (d *faultDelivery) Attempt() int { return d.Delivery.Attempt() + d.copy }

func (d *faultDelivery) isSettled() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.settled
}

func (d *faultDelivery) claim() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settled {
		return broker.ErrAlreadySettled
	}
	d.settled = true
	return nil
}

// Ack, Nack and Term settle the delivery with the faults applied.
func (d *faultDelivery) Ack(ctx context.Context) error { return d.settle(ctx, "ack", 0) }

// Nack asks for redelivery (a copy's nack is dropped: the original is
// redelivered or not on its own account).
func (d *faultDelivery) Nack(ctx context.Context, delay time.Duration) error {
	return d.settle(ctx, "nack", delay)
}

// Term settles the delivery for good.
func (d *faultDelivery) Term(ctx context.Context) error { return d.settle(ctx, "term", 0) }

func (d *faultDelivery) settle(ctx context.Context, op string, delay time.Duration) error {
	if err := d.claim(); err != nil {
		return err
	}
	fb := d.fb
	id := d.Event().ID
	if d.copy > 0 {
		fb.mu.Lock()
		fb.stats.SettlementsAfter++
		fb.unsettled[id]--
		fb.notifyLocked()
		fb.mu.Unlock()
		if p := d.parent; p.wait != nil {
			p.mu.Lock()
			p.copyDone++
			if p.copyDone == p.copies {
				close(p.wait)
			}
			p.mu.Unlock()
		}
		return nil
	}
	if d.wait != nil {
		select {
		case <-d.wait:
		case <-ctx.Done():
		}
	}
	fb.mu.Lock()
	disconnected := fb.downFor > 0
	if disconnected {
		fb.downFor--
		fb.stats.DisconnectedOps++
	}
	drop := op == "ack" && d.dropAck && !disconnected
	if drop {
		fb.stats.AcksDropped++
	}
	fb.mu.Unlock()

	var err error
	switch {
	case disconnected || drop:
		// The broker never hears of the settlement and redelivers.
		err = d.Delivery.Nack(ctx, 0)
		if disconnected {
			err = errors.Join(ErrDisconnected, err)
		}
	case op == "ack":
		err = d.Delivery.Ack(ctx)
	case op == "term":
		err = d.Delivery.Term(ctx)
	default:
		err = d.Delivery.Nack(ctx, delay)
	}
	fb.mu.Lock()
	fb.unsettled[id]--
	if !disconnected && !drop && err == nil && op != "nack" {
		fb.done[id] = true
		if op == "ack" {
			fb.stats.Acked++
		} else {
			fb.stats.Termed++
		}
	}
	fb.notifyLocked()
	fb.mu.Unlock()
	return err
}
