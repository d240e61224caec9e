package consumer

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/eventkit/eventkit/broker"
)

// Early events held in process (Strict mode).
//
// An event that arrives before its subject's predecessor was applied is
// kept, unsettled, in the route's held set instead of going back to the
// broker at once: on a broker whose redelivery goes to the end of a deep
// queue (RabbitMQ) a round trip per early delivery made a subject advance
// by about one event per pass over the whole backlog. A held event keeps
// its in-flight slot, so the set is bounded by MaxInFlight (never more
// memory than the window), and it holds no worker: other subjects and
// other events of its subject keep flowing. It runs as soon as its subject
// reaches it, in this process (an event applied here hands over at once
// to the next held one) or in another (a recheck timer per subject asks
// the inbox again, after Retry.Initial doubling while nothing moves, at
// most a second apart).
//
// Held events go back to the broker (nacked, not counted as an attempt;
// Stats.EarlyReturned) when keeping them could stall the subject or the
// whole route. On RabbitMQ, whose delayed redelivery re-publishes the
// event behind everything queued, the delay is Retry.Initial: the event
// comes back after every event ready before it, so it cannot crowd out
// the ones it waits for, and
// a longer delay only leaves the consumers idle while a subject's head
// sits in a retry queue (with delays growing to 5-10 s, a fault run on
// RabbitMQ whose heads had been given back moved at 8 events/s with the
// consumers idle). Elsewhere the delay is Retry.Initial doubling with each
// delivery of the event, up to Retry.Max (at least 5 s): brokers that
// redeliver before they deliver anything new (NATS, Redis, the memory
// broker) must not get the same early events back before the events they wait
// for, so an event that keeps coming back early comes back ever later:
//   - the window is full of held events (every MaxInFlight slot holds one):
//     nothing more can be delivered, so the predecessors they wait for
//     cannot arrive unless another consumer applies them. Every held
//     subject is rechecked at once (no more than once per event applied
//     in this process); if that frees nothing, the held event farthest
//     from its subject's next number goes back (among equals, the one
//     held last), one per new early arrival, so the ones closest to
//     running stay;
//   - its subject did not move for stallAfter (2 s) while nothing new
//     arrived (the window is not full, but the broker sends
//     nothing: a group-wide unacked limit that held events use up, NATS
//     MaxAckPending shared by competing consumers): the subject's
//     farthest held event goes back, one per further such recheck;
//   - it was held for half the ack wait (the broker would redeliver it);
//   - its subject is parked (only an operator resumes it), its Kafka
//     partition was revoked (handed back at once, not settled), or the
//     route shuts down (handed back).

// minGiveBackMax is the least cap on the delay of a held event given
// back (Retry.Max if longer).
const minGiveBackMax = 5 * time.Second

// recheckMax caps the delay between two rechecks of a held subject.
const recheckMax = time.Second

// stallAfter is how long a subject may not move, while nothing new
// arrives, before its held events start going back to the broker.
const stallAfter = 2 * time.Second

// holdState is a route's set of held early events, guarded by route.mu.
type holdState struct {
	subjects map[string]*heldSubject
	n        int         // held deliveries, each holding an in-flight slot
	wake     chan string // subjects whose recheck is due, taken by a worker
	closed   bool        // shut down: nothing more is held
	// progressed: an event was applied since the last recheck round
	// (when the window was found full of held events).
	progressed bool
	arrived    atomic.Int64 // when the last sequenced delivery arrived (not a recheck), Unix ns
	// toTail: a delayed Nack re-publishes the event behind everything
	// queued (RabbitMQ: through a TTL retry queue that dead-letters to
	// the tail of the group's queue), so a given-back event cannot come
	// back before new ones and needs no growing delay. (Redis keeps a
	// delayed Nack in the subscription and redelivers it first.)
	toTail bool
}

// heldSubject is one subject's held events. At most one recheck of a
// subject is pending at a time: its timer, its key on wake, or its lowest
// event out for a run (running).
type heldSubject struct {
	evs     []*heldEvent // ascending sequence numbers; copies in arrival order
	last    int64        // the subject's last applied number, as last seen
	misses  int          // rechecks in a row that saw the subject not move
	moved   time.Time    // when the subject last moved, or was first held
	timer   *time.Timer
	woken   bool       // key sent on wake, not taken yet
	due     bool       // woken while a worker owned the subject: it rechecks
	running bool       // the lowest held event was taken out to run:
	out     *heldEvent // that one
}

type heldEvent struct {
	d     broker.Delivery
	seq   int64
	since time.Time
	stop  func() bool // unregisters the partition-revoke hook
}

func (r *route) initHold() {
	if r.cfg.Mode.strict() {
		r.held = holdState{subjects: map[string]*heldSubject{}, wake: make(chan string, 2*r.cfg.MaxInFlight), progressed: true}
		if b, ok := r.c.sub.(interface{ Capabilities() broker.Capabilities }); ok {
			r.held.toTail = b.Capabilities().RedeliverToTail
		}
	}
}

// hold keeps d, an early event of subject key whose last applied number
// is last, unsettled in the held set; recheck says it was taken out of it
// for this run. It returns false if d cannot be held (the route is
// stopping): the caller settles d and frees its slot. Otherwise d's slot
// is the held set's, even if hold hands d back to the broker itself.
func (r *route) hold(d broker.Delivery, key string, seq, last int64, recheck bool) bool {
	r.mu.Lock()
	h := &r.held
	if h.closed || r.isStopping() {
		r.mu.Unlock()
		return false
	}
	hs := h.subjects[key]
	if hs == nil {
		hs = &heldSubject{last: last, moved: time.Now()}
		h.subjects[key] = hs
	}
	now := time.Now()
	if recheck {
		if last > hs.last {
			hs.misses = 0
			hs.moved = now
		} else {
			hs.misses++
		}
	}
	hs.last = max(hs.last, last)
	e := &heldEvent{d: d, seq: seq, since: now}
	if recheck && hs.out != nil && hs.out.d == d {
		e.since = hs.out.since // held since it first arrived
	}
	i := len(hs.evs)
	for i > 0 && hs.evs[i-1].seq > seq {
		i--
	}
	hs.evs = append(hs.evs, nil)
	copy(hs.evs[i+1:], hs.evs[i:])
	hs.evs[i] = e
	h.n++
	r.heldN.Add(1)
	if dctx := broker.DeliveryContext(d); dctx != nil {
		e.stop = context.AfterFunc(dctx, func() { r.dropLost(key, e) })
	}
	var back []*heldEvent
	if h.n >= cap(r.sem) {
		// Every slot holds an early event. Ask the inbox again for each
		// subject (other consumers may have applied the predecessors),
		// unless it was asked since the last event was applied here;
		// then make room for the predecessors they wait for.
		if h.progressed {
			h.progressed = false
			for k, x := range h.subjects {
				r.wakeLocked(k, x)
			}
		} else {
			back = append(back, r.evictLocked(nil))
		}
	}
	if recheck {
		if stalled := now.Sub(hs.moved) >= stallAfter && now.Sub(time.Unix(0, h.arrived.Load())) >= stallAfter; stalled && len(hs.evs) > 0 {
			back = append(back, r.evictLocked(hs))
		}
		for i := 0; i < len(hs.evs); {
			if time.Since(hs.evs[i].since) > r.cfg.AckWait/2 {
				back = append(back, r.takeLocked(hs, i))
				continue
			}
			i++
		}
	}
	r.mu.Unlock()
	for _, e := range back {
		r.giveBack(e, false)
	}
	return true
}

// evictLocked takes out the held event farthest from its subject's next
// number (among equals the one held last), of hs, or of every subject if
// hs is nil.
func (r *route) evictLocked(only *heldSubject) *heldEvent {
	var (
		best  *heldSubject
		bi    int
		bdist int64 = math.MinInt64
	)
	consider := func(hs *heldSubject) {
		for i, e := range hs.evs {
			dist := e.seq - hs.last
			if best == nil || dist > bdist || dist == bdist && e.since.After(best.evs[bi].since) {
				best, bi, bdist = hs, i, dist
			}
		}
	}
	if only != nil {
		consider(only)
	} else {
		for _, hs := range r.held.subjects {
			consider(hs)
		}
	}
	return r.takeLocked(best, bi)
}

// takeLocked removes hs.evs[i] from the held set.
func (r *route) takeLocked(hs *heldSubject, i int) *heldEvent {
	e := hs.evs[i]
	hs.evs = append(hs.evs[:i], hs.evs[i+1:]...)
	r.held.n--
	r.heldN.Add(-1)
	if e.stop != nil {
		e.stop()
	}
	return e
}

// giveBack returns a held event to the broker for a later delivery (not
// an attempt) and frees its slot.
func (r *route) giveBack(e *heldEvent, parked bool) {
	r.earlyReturned.Add(1)
	switch {
	case lost(e.d):
		r.handBack(e.d)
	case parked:
		r.nack(e.d, r.earlyDelay(e.d, true))
	case r.held.toTail:
		r.nack(e.d, max(r.cfg.Retry.Backoff(1), time.Millisecond))
	default:
		p := r.cfg.Retry
		p.Max = max(p.Max, minGiveBackMax)
		r.nack(e.d, p.Backoff(min(max(e.d.Attempt(), 1), 32)))
	}
	r.release()
}

// dropLost hands back a held event whose Kafka partition was revoked.
func (r *route) dropLost(key string, e *heldEvent) {
	r.mu.Lock()
	hs := r.held.subjects[key]
	found := false
	if hs != nil {
		for i, x := range hs.evs {
			if x == e {
				r.takeLocked(hs, i)
				r.armLocked(key, hs)
				found = true
				break
			}
		}
	}
	r.mu.Unlock()
	if found {
		r.handBack(e.d)
		r.release()
	}
}

// progress records that seq of subject key was applied (or found applied).
func (r *route) progress(key string, seq int64) {
	r.mu.Lock()
	r.held.progressed = true
	if hs := r.held.subjects[key]; hs != nil && seq > hs.last {
		hs.last = seq
		hs.misses = 0
		hs.moved = time.Now()
	}
	r.mu.Unlock()
}

// releaseSubject gives every held event of subject key back to the broker
// (the subject is parked: only an operator resumes it).
func (r *route) releaseSubject(key string) {
	r.mu.Lock()
	hs := r.held.subjects[key]
	var back []*heldEvent
	for hs != nil && len(hs.evs) > 0 {
		back = append(back, r.takeLocked(hs, len(hs.evs)-1))
	}
	r.mu.Unlock()
	for _, e := range back {
		r.giveBack(e, true)
	}
}

// heldNextLocked is the held event of subject key that the worker owning
// key runs next, if one may run now (its predecessor was applied, or its
// recheck is due); wasHeld says the event the worker just ran was one.
func (r *route) heldNextLocked(key string, wasHeld bool) broker.Delivery {
	hs := r.held.subjects[key]
	if hs == nil {
		return nil
	}
	if wasHeld {
		hs.running, hs.out = false, nil
	}
	if !hs.running && len(hs.evs) > 0 && (hs.due || hs.evs[0].seq <= hs.last+1) {
		hs.due = false
		if hs.timer != nil {
			hs.timer.Stop()
			hs.timer = nil
		}
		return r.runLocked(hs)
	}
	r.armLocked(key, hs)
	return nil
}

// armLocked schedules hs's next recheck, or forgets hs when nothing of it
// is held or pending.
func (r *route) armLocked(key string, hs *heldSubject) {
	if hs.running || hs.woken || r.held.closed {
		return
	}
	if len(hs.evs) == 0 {
		if hs.timer != nil {
			hs.timer.Stop()
		}
		delete(r.held.subjects, key)
		return
	}
	if hs.timer != nil {
		return
	}
	p := r.cfg.Retry
	p.Max = recheckMax
	delay := p.Backoff(min(hs.misses+1, 16))
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.held.subjects[key] == hs && hs.timer == t {
			hs.timer = nil
			r.wakeLocked(key, hs)
		}
	})
	hs.timer = t
}

// wakeLocked makes a worker recheck hs's lowest held event now.
func (r *route) wakeLocked(key string, hs *heldSubject) {
	if hs.woken || hs.running || r.held.closed {
		return
	}
	if hs.timer != nil {
		hs.timer.Stop()
		hs.timer = nil
	}
	select {
	case r.held.wake <- key:
		hs.woken = true
	default: // cannot happen (one key per subject, fewer subjects than room); try again later
		r.armLocked(key, hs)
	}
}

// takeWoken is a worker's share of a due recheck of subject key: the held
// event to run, with key now owned by the worker; or nil if the subject's
// owner does it, or nothing is held any more.
func (r *route) takeWoken(key string) broker.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	hs := r.held.subjects[key]
	if hs == nil {
		return nil
	}
	hs.woken = false
	if _, owned := r.queues[key]; owned {
		hs.due = true
		return nil
	}
	if len(hs.evs) == 0 || r.held.closed {
		r.armLocked(key, hs)
		return nil
	}
	r.queues[key] = nil
	return r.runLocked(hs)
}

// runLocked takes hs's lowest held event out to run.
func (r *route) runLocked(hs *heldSubject) broker.Delivery {
	hs.out = r.takeLocked(hs, 0)
	hs.running = true
	return hs.out.d
}

// dropHeld hands every held event back at shutdown, after the workers
// stopped.
func (r *route) dropHeld() {
	if !r.cfg.Mode.strict() {
		return
	}
	r.mu.Lock()
	r.held.closed = true
	var back []*heldEvent
	for key, hs := range r.held.subjects {
		if hs.timer != nil {
			hs.timer.Stop()
		}
		for len(hs.evs) > 0 {
			back = append(back, r.takeLocked(hs, 0))
		}
		delete(r.held.subjects, key)
	}
	r.mu.Unlock()
	for _, e := range back {
		r.handBack(e.d)
		r.release()
	}
}
