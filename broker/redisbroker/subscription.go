package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
	kbackoff "github.com/eventkit/eventkit/internal/backoff"
)

// States of an entry this subscription holds.
const (
	stActive  = iota // a delivery is queued, with the handler, or its ack is being flushed
	stDelayed        // nacked with a delay; a timer moves it to stDue
	stDue            // nacked and due: waiting for the reader to claim it again
)

// holder is the local state of one pending entry this subscription owns.
type holder struct {
	id    string
	d     *delivery // the current delivery (stActive) or the last one
	state int
	timer *time.Timer
}

type subscription struct {
	// running counts the teardown and the dispatcher (the handler may
	// still run after the teardown, and settle then): the broker forgets
	// the subscription, and Broker.Close stops waiting for it, when both
	// have ended.
	running atomic.Int32

	b        *Broker
	topic    string
	key      string
	group    string
	consumer string
	cfg      broker.SubscribeConfig
	h        broker.Handler

	hctx    context.Context // handler context: cancelled when the subscription stops
	hcancel context.CancelFunc

	stop       chan struct{} // closed: stop fetching and dispatching
	closeReq   chan context.Context
	done       chan struct{}
	readerDone chan struct{}
	dispDone   chan struct{}
	flushDone  chan struct{}
	flushStop  chan struct{}

	wake    chan struct{} // cap 1: the reader has work (a nack, a due delay)
	queued  chan struct{} // cap 1: the dispatcher has work
	ackWake chan struct{} // cap 1: the flusher has work

	mu        sync.Mutex
	inflight  int           // slots taken: deliveries fetched and not settled yet
	room      chan struct{} // closed and replaced when slots are freed
	freed     bool          // slots were freed since room was last closed
	held      map[string]*holder
	queue     []*delivery // fetched, waiting for the handler
	due       []*holder   // nacked entries to claim again
	acks      []*delivery // settled with Ack/Term, XACK not sent yet
	unflushed int         // acks queued or being sent
	ackClosed bool        // the flusher has stopped: settle with a direct XACK
	stopped   bool
	backDone  bool // the teardown has handed back what it held: later nacks go alone
}

func newSubscription(ctx context.Context, b *Broker, topic, key, group string, h broker.Handler, cfg broker.SubscribeConfig) *subscription {
	hctx, hcancel := context.WithCancel(ctx)
	return &subscription{
		b: b, topic: topic, key: key, group: group, consumer: consumerName(), cfg: cfg, h: h,
		hctx: hctx, hcancel: hcancel,
		stop: make(chan struct{}), closeReq: make(chan context.Context), done: make(chan struct{}),
		readerDone: make(chan struct{}), dispDone: make(chan struct{}), flushDone: make(chan struct{}), flushStop: make(chan struct{}),
		wake: make(chan struct{}, 1), queued: make(chan struct{}, 1), ackWake: make(chan struct{}, 1),
		room: make(chan struct{}),
		held: map[string]*holder{},
	}
}

// consumerName is unique per subscription: host, pid and random bits.
func consumerName() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	var r [6]byte
	_, _ = rand.Read(r[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(r[:])
}

func (s *subscription) start() {
	s.running.Store(2)
	go s.read()
	go s.dispatch()
	go s.flush()
	go s.watch()
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Done is closed when the subscription has stopped.
func (s *subscription) Done() <-chan struct{} { return s.done }

// Err is always nil: the subscription retries Redis errors until it is
// closed or its context is cancelled.
func (s *subscription) Err() error { return nil }

// Close stops fetching, waits until ctx ends for the handler to return and
// for deliveries in flight to be settled (and their XACKs sent), then stops.
// Entries fetched but never handed to the handler are handed back to the
// group at once, with their delivery counter restored; entries still
// unsettled stay pending and are reclaimed after the ack wait.
func (s *subscription) Close(ctx context.Context) error {
	select {
	case s.closeReq <- ctx:
	case <-s.done:
	}
	<-s.done
	return nil
}

// watch owns the teardown: it runs it on Close or when the Subscribe
// context is cancelled.
func (s *subscription) watch() {
	var ctx context.Context
	select {
	case ctx = <-s.closeReq:
	case <-s.hctx.Done():
		c, cancel := context.WithCancel(context.Background())
		cancel()
		ctx = c
	}
	s.teardown(ctx)
	close(s.done)
	s.leave()
}

func (s *subscription) teardown(ctx context.Context) {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	close(s.stop)
	// Wait for the handler call in progress.
	select {
	case <-s.dispDone:
	case <-ctx.Done():
	}
	// The reader stops within one XREADGROUP block.
	<-s.readerDone
	// Deliveries fetched but not handed to the handler go back.
	s.mu.Lock()
	back := s.queue
	s.queue = nil
	for _, d := range back {
		s.releaseLocked(d)
	}
	s.kickLocked()
	s.mu.Unlock()
	// Wait for deliveries with the handler to be settled and acked.
	for {
		s.mu.Lock()
		n, room := s.inflight, s.room
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-room:
			continue
		case <-ctx.Done():
		}
		break
	}
	s.hcancel()
	// Stop the flusher after it sent what is queued; later settles XACK directly.
	close(s.flushStop)
	<-s.flushDone
	// Hand back what we hold but will not process.
	s.mu.Lock()
	s.backDone = true
	var pairs []any
	for _, d := range back {
		if h := s.held[d.id]; h != nil && h.d == d {
			pairs = append(pairs, d.id, d.attempt-1)
			delete(s.held, d.id)
		}
	}
	for id, h := range s.held {
		if h.timer != nil {
			h.timer.Stop()
		}
		if h.state == stDue {
			pairs = append(pairs, id, h.d.attempt)
		}
	}
	s.mu.Unlock()
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if len(pairs) > 0 {
		args := append([]any{s.group, s.consumer, handBackIdle.Milliseconds()}, pairs...)
		_ = handBack.Run(cctx, s.b.rdb, []string{s.key}, args...).Err()
	} else {
		// Nothing pending: the consumer name can go.
		_ = prune.Run(cctx, s.b.rdb, []string{s.key}, s.group, 0, s.consumer).Err()
	}
}

// handBackIdle is the idle time given to handed-back entries: more than any
// sensible ack wait, so that the next XAUTOCLAIM takes them.
const handBackIdle = 365 * 24 * time.Hour

// releaseLocked frees d's slot if it holds one. Waiters are woken by the
// next kickLocked.
func (s *subscription) releaseLocked(d *delivery) {
	if !d.slot {
		return
	}
	d.slot = false
	s.inflight--
	s.freed = true
}

// kickLocked wakes whoever waits for free slots, if any were freed.
func (s *subscription) kickLocked() {
	if s.freed {
		s.freed = false
		close(s.room)
		s.room = make(chan struct{})
	}
}

// reserve takes up to n free slots and returns how many it took.
func (s *subscription) reserve(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	free := s.cfg.MaxInFlight - s.inflight
	if n > free {
		n = free
	}
	if n <= 0 {
		return 0
	}
	s.inflight += n
	return n
}

// free is the number of free slots.
func (s *subscription) free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.MaxInFlight - s.inflight
}

// unreserve returns n reserved but unused slots.
func (s *subscription) unreserve(n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.inflight -= n
	s.freed = true
	s.kickLocked()
	s.mu.Unlock()
}

// readSize is how many entries the reader should ask for now: all free
// slots (up to ReadBatch), but while the handler has work queued, only once
// a quarter of MaxInFlight is free, so that reads are not one entry each.
// When it is 0, room is closed once slots are freed.
func (s *subscription) readSize() (n int, room <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	free := s.cfg.MaxInFlight - s.inflight
	if free <= 0 || s.unflushed >= s.cfg.MaxInFlight {
		return 0, s.room
	}
	if len(s.queue) > 0 && free < s.cfg.MaxInFlight/4 {
		return 0, s.room
	}
	return min(free, s.b.opts.ReadBatch), nil
}

func (s *subscription) reclaimEvery() time.Duration {
	return min(max(s.cfg.AckWait/4, 50*time.Millisecond), 5*time.Second)
}

func (s *subscription) touchEvery() time.Duration {
	return max(s.cfg.AckWait/3, 10*time.Millisecond)
}

// read is the one goroutine that talks to Redis for fetching: claims of
// nacked entries, heartbeats of delayed ones, XAUTOCLAIM of idle ones and
// XREADGROUP of new ones.
func (s *subscription) read() {
	defer close(s.readerDone)
	ctx := s.hctx
	now := time.Now()
	reclaimAt, touchAt := now, now.Add(s.touchEvery())
	cursor := "0-0"
	reclaimWaiting := false // reclaim is due but had no free slot
	backoff := time.Duration(0)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		if backoff > 0 {
			if !s.sleep(backoff) {
				return
			}
		}
		var err error
		progressed := false
		// 1. Keep entries held back on purpose from being reclaimed.
		if now := time.Now(); !now.Before(touchAt) {
			err = s.heartbeat(ctx)
			touchAt = now.Add(s.touchEvery())
		}
		// 2. Entries idle longer than the ack wait (crashed consumers,
		// expired deliveries), before our own nacked ones: they are older,
		// and in strict order they are the events our nacked ones wait
		// for. Without room, the next freed slot is theirs (our nacked
		// entries would otherwise take every slot as it frees).
		if now := time.Now(); err == nil && !now.Before(reclaimAt) {
			if s.free() == 0 {
				reclaimWaiting = true
			} else {
				reclaimWaiting = false
				var got int
				got, cursor, err = s.reclaim(ctx, cursor)
				if err == nil && got > 0 && cursor != "0-0" {
					reclaimAt = now // more to take: go on at once
				} else {
					reclaimAt = now.Add(s.reclaimEvery())
				}
			}
		}
		// 3. Nacked entries that are due.
		if err == nil && !reclaimWaiting {
			if n, e := s.redeliver(ctx); e != nil {
				err = e
			} else if n > 0 {
				progressed = true
			}
		}
		// 4. New entries.
		if err == nil && !progressed {
			if n, room := s.readSize(); n > 0 && reclaimWaiting {
				continue // a slot freed: it is the due reclaim's, not a new entry's
			} else if n > 0 {
				block := s.b.opts.Block
				if d := time.Until(reclaimAt); d < block {
					block = d
				}
				if d := time.Until(touchAt); d < block {
					block = d
				}
				if s.hasDue() {
					block = -1
				}
				_, err = s.readNew(ctx, n, block)
			} else {
				// No room: wait for some, for work, or for the next timer.
				wait := time.Until(touchAt)
				if !reclaimWaiting {
					wait = min(wait, time.Until(reclaimAt))
				}
				if wait > 0 {
					if timer == nil {
						timer = time.NewTimer(wait)
					} else {
						timer.Reset(wait)
					}
					select {
					case <-s.stop:
						return
					case <-room:
					case <-s.wake:
					case <-timer.C:
					}
					if !timer.Stop() {
						select {
						case <-timer.C:
						default:
						}
					}
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				_ = s.b.createGroup(ctx, s.key, s.group) // the stream was deleted: start again
			}
			backoff = retryDelay.Next(backoff)
			continue
		}
		backoff = 0
	}
}

func isNoGroup(err error) bool { return err != nil && strings.Contains(err.Error(), "NOGROUP") }

// sleep waits d or until the subscription stops (false).
func (s *subscription) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.stop:
		return false
	case <-t.C:
		return true
	}
}

func (s *subscription) hasDue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.due) > 0
}

// readNew fetches up to n new entries with XREADGROUP.
func (s *subscription) readNew(ctx context.Context, n int, block time.Duration) (int, error) {
	n = s.reserve(n)
	if n == 0 {
		return 0, nil
	}
	if block >= 0 && block < time.Millisecond {
		block = -1 // BLOCK 0 would wait forever
	}
	res, err := s.b.rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{
		Group: s.group, Consumer: s.consumer, Streams: []string{s.key, ">"}, Count: int64(n), Block: block,
	}).Result()
	if err != nil {
		s.unreserve(n)
		if errors.Is(err, goredis.Nil) {
			return 0, nil
		}
		return 0, err
	}
	got := 0
	for _, st := range res {
		got += len(st.Messages)
	}
	if got > n { // cannot happen (COUNT), but never hold more than reserved
		got = n
	}
	s.unreserve(n - got)
	ds := make([]*delivery, 0, got)
	for _, st := range res {
		for _, m := range st.Messages {
			if len(ds) == got {
				break
			}
			ds = append(ds, &delivery{s: s, id: m.ID, values: m.Values, attempt: 1, slot: true})
		}
	}
	s.enqueue(ds)
	return got, nil
}

// enqueue registers fetched deliveries (each holding a slot) and queues
// them for the handler. An entry we already held (reclaimed from ourselves
// after its ack wait) supersedes the earlier delivery.
func (s *subscription) enqueue(ds []*delivery) {
	if len(ds) == 0 {
		return
	}
	s.mu.Lock()
	for _, d := range ds {
		if h := s.held[d.id]; h != nil {
			s.releaseLocked(h.d)
			if h.timer != nil {
				h.timer.Stop()
				h.timer = nil
			}
			h.d, h.state = d, stActive
		} else {
			s.held[d.id] = &holder{id: d.id, d: d, state: stActive}
		}
	}
	s.queue = append(s.queue, ds...)
	s.kickLocked()
	s.mu.Unlock()
	signal(s.queued)
}

// redeliver claims due nacked entries again (as many as there are free
// slots) and queues them with their new attempt number.
func (s *subscription) redeliver(ctx context.Context) (int, error) {
	s.mu.Lock()
	var hs []*holder
	for _, h := range s.due {
		if s.held[h.id] == h && h.state == stDue {
			hs = append(hs, h)
		}
	}
	s.due = s.due[:0]
	free := s.cfg.MaxInFlight - s.inflight
	if free < len(hs) {
		s.due = append(s.due, hs[max(free, 0):]...)
		hs = hs[:max(free, 0)]
	}
	s.inflight += len(hs)
	s.mu.Unlock()
	if len(hs) == 0 {
		return 0, nil
	}
	args := make([]any, 0, 2+len(hs))
	args = append(args, s.group, s.consumer)
	for _, h := range hs {
		args = append(args, h.id)
	}
	res, err := claimMine.Run(ctx, s.b.rdb, []string{s.key}, args...).Slice()
	if err != nil {
		s.mu.Lock()
		s.due = append(s.due, hs...) // try again
		s.mu.Unlock()
		s.unreserve(len(hs))
		return 0, err
	}
	ds := make([]*delivery, 0, len(hs))
	answered := make(map[string]bool, len(hs))
	var gone []string
	for _, r := range res {
		e, _ := r.([]any)
		if len(e) < 2 {
			continue
		}
		id := fieldString(e[0])
		answered[id] = true
		cnt, _ := e[1].(int64)
		if cnt <= 0 || len(e) < 3 {
			gone = append(gone, id) // another consumer has it, or it was acked or deleted
			continue
		}
		ds = append(ds, &delivery{s: s, id: id, values: pairsToMap(e[2]), attempt: int(cnt), slot: true})
	}
	s.mu.Lock()
	for _, id := range gone {
		delete(s.held, id)
	}
	for _, h := range hs {
		if !answered[h.id] { // not in the reply (cannot happen): try again later
			s.due = append(s.due, h)
		}
	}
	s.mu.Unlock()
	s.unreserve(len(hs) - len(ds))
	s.enqueue(ds)
	return len(ds), nil
}

// heartbeat resets the idle time of entries held back on purpose (nacked,
// delayed or due) so that no XAUTOCLAIM takes them, and forgets those that
// are no longer ours.
func (s *subscription) heartbeat(ctx context.Context) error {
	s.mu.Lock()
	var ids []any
	for id, h := range s.held {
		if h.state != stActive {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	kept, err := touch.Run(ctx, s.b.rdb, []string{s.key}, append([]any{s.group, s.consumer}, ids...)...).StringSlice()
	if err != nil {
		return err
	}
	ours := make(map[string]bool, len(kept))
	for _, id := range kept {
		ours[id] = true
	}
	s.mu.Lock()
	for _, v := range ids {
		id := v.(string)
		if h := s.held[id]; h != nil && h.state != stActive && !ours[id] {
			if h.timer != nil {
				h.timer.Stop()
			}
			delete(s.held, id)
		}
	}
	s.mu.Unlock()
	return nil
}

// reclaim takes entries of the group idle for longer than the ack wait
// (XAUTOCLAIM), as many as there are free slots, and queues them with the
// attempt number their delivery counter says.
func (s *subscription) reclaim(ctx context.Context, cursor string) (int, string, error) {
	n := s.reserve(s.b.opts.ReadBatch)
	if n == 0 {
		return 0, cursor, nil
	}
	res, err := autoClaim.Run(ctx, s.b.rdb, []string{s.key},
		s.group, s.consumer, s.cfg.AckWait.Milliseconds(), cursor, n).Slice()
	if err != nil {
		s.unreserve(n)
		return 0, cursor, err
	}
	if len(res) < 2 {
		s.unreserve(n)
		return 0, "0-0", nil
	}
	next := fieldString(res[0])
	entries, _ := res[1].([]any)
	ds := make([]*delivery, 0, len(entries))
	for _, r := range entries {
		e, _ := r.([]any)
		if len(e) < 3 || len(ds) == n {
			continue
		}
		cnt, _ := e[1].(int64)
		ds = append(ds, &delivery{s: s, id: fieldString(e[0]), values: pairsToMap(e[2]), attempt: max(int(cnt), 1), slot: true})
	}
	s.unreserve(n - len(ds))
	s.enqueue(ds)
	return len(ds), next, nil
}

// dispatch hands queued deliveries to the handler, one call at a time.
// leave is called when the teardown, and when the dispatcher, has ended.
func (s *subscription) leave() {
	if s.running.Add(-1) == 0 {
		s.b.forget(s)
	}
}

func (s *subscription) dispatch() {
	defer s.leave()
	defer close(s.dispDone)
	for {
		s.mu.Lock()
		var d *delivery
		for len(s.queue) > 0 && d == nil {
			d = s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			if h := s.held[d.id]; h == nil || h.d != d {
				d = nil // superseded by a later claim of the same entry
			}
		}
		if len(s.queue) == 0 {
			signal(s.wake) // the reader may read small batches again
		}
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			if d != nil { // put it back for the teardown to hand back
				s.mu.Lock()
				s.queue = append([]*delivery{d}, s.queue...)
				s.mu.Unlock()
			}
			return
		}
		if d == nil {
			select {
			case <-s.stop:
				return
			case <-s.hctx.Done():
				return
			case <-s.queued:
			}
			continue
		}
		d.decode()
		err := s.h(s.hctx, d)
		adapterkit.AfterHandler(s.hctx, d, err)
	}
}

// flush sends queued acks in batches, one XACK per batch, and forgets the
// entries once Redis has replied.
func (s *subscription) flush() {
	defer close(s.flushDone)
	var batch []*delivery
	ids := make([]string, 0, 256)
	for {
		final := false
		select {
		case <-s.ackWake:
		case <-s.flushStop:
			final = true
		}
		for {
			s.mu.Lock()
			batch, s.acks = s.acks, batch[:0]
			if final && len(batch) == 0 {
				s.ackClosed = true
			}
			s.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			ids = ids[:0]
			for _, d := range batch {
				ids = append(ids, d.id)
			}
			err := s.xack(ids)
			s.mu.Lock()
			s.unflushed -= len(batch)
			s.freed = true // readSize may have waited for the flush
			for i, d := range batch {
				s.settledLocked(d)
				d.ackErr = err
				if d.ackDone != nil {
					close(d.ackDone)
				}
				batch[i] = nil
			}
			s.kickLocked()
			s.mu.Unlock()
		}
		if final {
			return
		}
	}
}

// xack sends one XACK, retrying a few times on errors. If it still fails
// the entries stay pending and are redelivered after the ack wait.
func (s *subscription) xack(ids []string) error {
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 50 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.b.rdb.XAck(ctx, s.key, s.group, ids...).Err()
		cancel()
		if err == nil || errors.Is(err, goredis.ErrClosed) {
			return err
		}
	}
	return err
}

// settledLocked forgets an acked delivery (and frees its slot if it still
// holds one).
func (s *subscription) settledLocked(d *delivery) {
	s.releaseLocked(d)
	if h := s.held[d.id]; h != nil && h.d == d {
		delete(s.held, d.id)
	}
}

// ack settles d with XACK: queued for the flusher, or at once after the
// subscription stopped.
func (s *subscription) ack(ctx context.Context, d *delivery) error {
	s.mu.Lock()
	if s.ackClosed {
		s.mu.Unlock()
		err := s.b.rdb.XAck(ctx, s.key, s.group, d.id).Err()
		s.mu.Lock()
		s.settledLocked(d)
		s.kickLocked()
		s.mu.Unlock()
		return err
	}
	if s.b.opts.SyncAck {
		d.ackDone = make(chan struct{})
	}
	// Settled: the slot is free now, while the XACK waits for the flusher
	// (readSize stops reading while MaxInFlight acks are unflushed).
	s.releaseLocked(d)
	s.kickLocked()
	s.acks = append(s.acks, d)
	s.unflushed++
	s.mu.Unlock()
	signal(s.ackWake)
	if d.ackDone == nil {
		return nil
	}
	select {
	case <-d.ackDone:
		return d.ackErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// nack leaves the entry pending and has the reader claim it again when due.
// After the teardown handed back what the subscription held (a handler
// still running when Close's ctx ended, or when the Subscribe context was
// cancelled), the entry is handed back to the group on its own.
func (s *subscription) nack(ctx context.Context, d *delivery, delay time.Duration) error {
	s.mu.Lock()
	h := s.held[d.id]
	s.releaseLocked(d)
	s.kickLocked()
	if h == nil || h.d != d {
		s.mu.Unlock()
		return nil // superseded by a later claim of the same entry
	}
	if s.stopped && s.backDone && delay <= 0 {
		delete(s.held, d.id)
		s.mu.Unlock()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err := handBack.Run(cctx, s.b.rdb, []string{s.key}, s.group, s.consumer, handBackIdle.Milliseconds(), d.id, d.attempt).Err()
		if err != nil {
			return fmt.Errorf("redis: nack after close: hand back %s: %w", d.id, err)
		}
		return nil
	}
	defer s.mu.Unlock()
	if s.stopped {
		h.state = stDue // handed back to the group by the teardown
		return nil
	}
	if delay <= 0 {
		h.state = stDue
		s.due = append(s.due, h)
		signal(s.wake)
		return nil
	}
	h.state = stDelayed
	h.timer = time.AfterFunc(delay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.held[h.id] == h && h.state == stDelayed && !s.stopped {
			h.state = stDue
			h.timer = nil
			s.due = append(s.due, h)
			signal(s.wake)
		}
	})
	return nil
}

// delivery is one delivery of a stream entry.
type delivery struct {
	adapterkit.SettleOnce
	s       *subscription
	id      string
	values  map[string]any
	attempt int

	ev   eventkit.Event
	derr error

	slot    bool // holds a MaxInFlight slot (guarded by s.mu)
	ackDone chan struct{}
	ackErr  error
}

func (d *delivery) decode() {
	if d.derr = checkEntrySize(d.values, d.s.b.opts.MaxPayload); d.derr == nil {
		d.ev, d.derr = decodeEntry(d.values)
	}
	d.values = nil
}

func (d *delivery) Event() eventkit.Event { return d.ev }
func (d *delivery) DecodeErr() error      { return d.derr }
func (d *delivery) Topic() string         { return d.s.topic }
func (d *delivery) Attempt() int          { return d.attempt }

// ID is the stream entry id ("1732870000000-0").
func (d *delivery) ID() string { return d.id }

func (d *delivery) Ack(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	return d.s.ack(ctx, d)
}

// Term acks the entry: it is never delivered again. Dead-lettering is the
// consumer runtime's job.
func (d *delivery) Term(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	return d.s.ack(ctx, d)
}

func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	return d.s.nack(ctx, d, delay)
}

// retryDelay spaces a subscription's reads after an error.
var retryDelay = kbackoff.Policy{Min: 50 * time.Millisecond, Max: 2 * time.Second}
