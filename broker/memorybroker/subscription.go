package memorybroker

import (
	"context"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

func (s *subscription) Done() <-chan struct{} { return s.done }
func (s *subscription) Err() error            { return nil }

// Close stops fetching, waits (until ctx ends) for the handler to return and
// for this subscription's deliveries to be settled, then hands what is still
// unsettled back to the group for redelivery.
func (s *subscription) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	select {
	case <-s.done:
		return nil
	default:
	}
	s.stopOnce.Do(func() { close(s.stop) })
	// Wait for the loop and for in-flight deliveries to settle.
	ld, finished := s.loopDone, false
wait:
	for {
		s.b.mu.Lock()
		n := s.inflight
		notify := s.g.notify
		s.b.mu.Unlock()
		if finished && n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			break wait
		case <-ld:
			finished, ld = true, nil
		case <-notify:
		}
	}
	s.cancel()
	<-s.loopDone
	s.b.mu.Lock()
	g := s.g
	for _, p := range g.pend {
		if p.sub == s && p.state == stInflight {
			p.state = stReady
			p.sub = nil
			g.ready = append(g.ready, p)
		}
	}
	s.inflight = 0
	s.b.subs.Remove(s)
	g.kick()
	s.b.mu.Unlock()
	close(s.done)
	return nil
}

func (s *subscription) loop() {
	defer close(s.loopDone)
	for {
		d := s.next()
		if d == nil {
			return
		}
		err := s.h(s.hctx, d)
		adapterkit.AfterHandler(s.hctx, d, err)
	}
}

// next blocks until a delivery is available and the subscription has room
// for it, or the subscription stops (nil).
func (s *subscription) next() *delivery {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-s.stop:
			return nil
		case <-s.hctx.Done():
			return nil
		default:
		}
		s.b.mu.Lock()
		g := s.g
		now := time.Now()
		wake := g.promoteLocked(now)
		var p *pending
		if s.inflight < s.cfg.MaxInFlight {
			if len(g.ready) > 0 {
				p = g.ready[0]
				g.ready[0] = nil
				g.ready = g.ready[1:]
			} else if idx := g.next - g.t.base; g.next >= g.t.base && idx < uint64(len(g.t.log)) {
				m := g.t.log[idx]
				g.next++
				p = &pending{msg: m}
				g.pend[m.seq] = p
			}
		}
		if p != nil {
			p.attempt++
			p.state = stInflight
			p.sub = s
			p.deadline = now.Add(s.cfg.AckWait)
			s.inflight++
			d := &delivery{s: s, p: p, attempt: p.attempt}
			s.b.mu.Unlock()
			return d
		}
		notify := g.notify
		s.b.mu.Unlock()
		var tc <-chan time.Time
		if !wake.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(wake))
			} else {
				timer.Reset(time.Until(wake))
			}
			tc = timer.C
		}
		select {
		case <-s.stop:
			return nil
		case <-s.hctx.Done():
			return nil
		case <-notify:
		case <-tc:
		}
	}
}

// promoteLocked moves delayed deliveries that are due, and in-flight ones
// past their ack deadline, to the ready queue. It returns the earliest future
// time at which something else becomes due (zero if none).
func (g *group) promoteLocked(now time.Time) (wake time.Time) {
	for _, p := range g.pend {
		var at time.Time
		switch p.state {
		case stDelayed:
			at = p.due
		case stInflight:
			at = p.deadline
		default:
			continue
		}
		if !at.After(now) {
			if p.state == stInflight && p.sub != nil {
				p.sub.inflight--
				p.sub = nil
			}
			p.state = stReady
			g.ready = append(g.ready, p)
			continue
		}
		if wake.IsZero() || at.Before(wake) {
			wake = at
		}
	}
	return wake
}

type delivery struct {
	adapterkit.SettleOnce
	s       *subscription
	p       *pending
	attempt int
}

func (d *delivery) Event() eventkit.Event { return d.p.msg.ev }
func (d *delivery) DecodeErr() error      { return d.p.msg.decodeErr }
func (d *delivery) Topic() string         { return d.p.msg.topic }
func (d *delivery) Attempt() int          { return d.attempt }

func (d *delivery) Ack(ctx context.Context) error  { return d.settle(false, 0) }
func (d *delivery) Term(ctx context.Context) error { return d.settle(false, 0) }
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	return d.settle(true, delay)
}

func (d *delivery) settle(redeliver bool, delay time.Duration) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	b := d.s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	g := d.s.g
	p := d.p
	if g.pend[p.msg.seq] != p {
		return nil // already settled through another delivery of the same message
	}
	if p.state == stInflight && p.sub != nil {
		p.sub.inflight--
		p.sub = nil
	} else if p.state == stReady {
		// Expired and queued again: this late settle still counts.
		for i, q := range g.ready {
			if q == p {
				g.ready = append(g.ready[:i], g.ready[i+1:]...)
				break
			}
		}
	}
	if !redeliver {
		delete(g.pend, p.msg.seq)
	} else if delay > 0 {
		p.state = stDelayed
		p.due = time.Now().Add(delay)
	} else {
		p.state = stReady
		g.ready = append(g.ready, p)
	}
	g.kick()
	return nil
}
