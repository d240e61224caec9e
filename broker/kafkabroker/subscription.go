package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

type tp struct {
	topic     string
	partition int32
}

// entry is one record taken from a partition and not yet popped off the
// partition's queue (popping happens when it and everything before it is
// settled).
type entry struct {
	rec       *kgo.Record
	topic     string // topic the subscriber sees (the original one for retries)
	attempt   int
	due       time.Time // retry records: not to be delivered before
	delivered bool
	released  bool // handed back unstarted: the next owner reads it again
	settled   bool
	moving    bool // being produced to the retry topic
	deadline  time.Time
}

// partState is this member's state of one assigned partition.
type partState struct {
	tp        tp
	retry     bool
	q         []*entry // records taken, in offset order; settled prefix popped
	hold      []*entry // retry records waiting for their due time (a suffix of q)
	next      int64    // offset after the last record taken; -1 unknown
	committed int64    // offset known committed; -1 none
	durable   int64    // delivered marker known committed; -1 none
	markTo    int64    // highest offset delivered or about to be; -1 none
	inherit   commitMeta
	paused    bool
	revoking  bool
	gone      bool // revoked or lost: settles no longer count

	ctx    context.Context // given to handlers; cancelled when the partition goes
	cancel context.CancelFunc
}

func newPartState(parent context.Context, k tp, retry bool) *partState {
	ctx, cancel := context.WithCancel(parent)
	return &partState{tp: k, retry: retry, next: -1, committed: -1, durable: -1, markTo: -1,
		inherit: commitMeta{Delivered: -1}, ctx: ctx, cancel: cancel}
}

// commitOffset is the offset to commit: the first record not settled, or
// the next one to take (-1: nothing known).
func (p *partState) commitOffset() int64 {
	if len(p.q) > 0 {
		return p.q[0].rec.Offset
	}
	return p.next
}

func (p *partState) pop() {
	for len(p.q) > 0 && p.q[0].settled {
		p.q[0] = nil
		p.q = p.q[1:]
	}
}

// meta is the commit metadata for a commit at off. A final commit (the
// member lets the partition go: Close, revoke) marks only the records that
// were handed to the handler and not handed back unstarted: nothing more
// will be delivered, so the marker no longer needs to run ahead of the
// deliveries, and the records released at shutdown do not count an attempt.
func (p *partState) meta(off int64, final bool) commitMeta {
	m := commitMeta{Delivered: p.markTo}
	if final {
		m.Delivered = off - 1
		for _, e := range p.q {
			if e.delivered && !e.released {
				m.Delivered = max(m.Delivered, e.rec.Offset)
			}
		}
		m.Delivered = min(m.Delivered, p.markTo)
	}
	if off <= p.inherit.Delivered {
		m.Delivered = max(m.Delivered, p.inherit.Delivered)
		m.Attempt = p.inherit.Attempt
	}
	for _, e := range p.q {
		if e.rec.Offset <= m.Delivered && e.attempt > m.Attempt {
			m.Attempt = e.attempt
		}
	}
	return m
}

// Subscription is a running subscription: one consumer group member
// consuming the topic and the group's retry topic.
type Subscription struct {
	b          *Broker
	topic      string
	retryTopic string
	group      string
	h          broker.Handler
	cfg        broker.SubscribeConfig
	cl         *kgo.Client

	mu         sync.Mutex
	parts      map[tp]*partState
	inflight   int
	stopping   bool // no more handler calls
	hard       bool // rebalances no longer wait for settles
	noCommit   bool // tests: simulate a crash (nothing more is committed)
	commits    int  // offset commits sent (for tests)
	pollCancel context.CancelFunc
	holdTimer  *time.Timer

	wake     chan struct{}
	commitMu sync.Mutex // serializes commits (no stale commit after a revoke)

	hctx      context.Context // handler ctx, cancelled when the subscription is released
	hcancel   context.CancelFunc
	runCtx    context.Context
	runCancel context.CancelFunc
	runDone   chan struct{}
	bgStop    chan struct{}
	bgDone    chan struct{}
	done      chan struct{}
	stopOnce  sync.Once
	stopErr   error
}

var _ broker.Subscription = (*Subscription)(nil)

// Subscribe joins consumer group group on topic (creating the topic and the
// group's retry topic if needed) and calls h for each delivery, one call at
// a time.
func (b *Broker) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if b.isClosed() {
		return nil, broker.ErrClosed
	}
	if err := CheckTopic(topic); err != nil {
		return nil, err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return nil, err
	}
	cfg := adapterkit.ApplySubscribeOptions(opts...)
	s := &Subscription{
		b: b, topic: topic, retryTopic: b.opts.RetryTopic(topic, group), group: group, h: h, cfg: cfg,
		parts: map[tp]*partState{}, wake: make(chan struct{}, 1),
		runDone: make(chan struct{}), bgStop: make(chan struct{}), bgDone: make(chan struct{}), done: make(chan struct{}),
	}
	s.hctx, s.hcancel = context.WithCancel(context.Background()) // before the client: partitions derive from it
	if err := b.EnsureTopic(ctx, topic); err != nil {
		return nil, err
	}
	if err := b.EnsureTopic(ctx, s.retryTopic); err != nil {
		return nil, err
	}
	kopts := []kgo.Opt{
		kgo.SeedBrokers(b.opts.Brokers...),
		kgo.ConsumerGroup(b.opts.GroupID(topic, group)),
		kgo.ConsumeTopics(topic, s.retryTopic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnOffsetsFetched(s.onFetched),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.SessionTimeout(b.opts.SessionTimeout),
		kgo.HeartbeatInterval(b.opts.HeartbeatInterval),
		kgo.RebalanceTimeout(b.opts.RebalanceTimeout),
		kgo.FetchMaxWait(b.opts.FetchMaxWait),
		kgo.FetchMaxPartitionBytes(int32(max(1<<20, b.maxBytes))),
		kgo.FetchMaxBytes(int32(max(50<<20, b.maxBytes))),
	}
	kopts = append(kopts, b.opts.ClientOptions...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	s.cl = cl
	s.runCtx, s.runCancel = context.WithCancel(context.Background())
	if !b.subs.Add(s) {
		cl.Close()
		s.hcancel()
		s.runCancel()
		return nil, broker.ErrClosed
	}
	go s.run()
	go s.background()
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), min(cfg.AckWait, 10*time.Second))
			_ = s.stop(sctx)
			cancel()
		case <-s.done:
		}
	}()
	return s, nil
}

// Assigned returns the partitions of the topic (not the retry topic) that
// this member currently owns.
func (s *Subscription) Assigned() []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []int32
	for k, st := range s.parts {
		if k.topic == s.topic && !st.gone && !st.revoking {
			ps = append(ps, k.partition)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

// RetryTopic is the name of the group's retry topic.
func (s *Subscription) RetryTopic() string { return s.retryTopic }

// Done is closed when the subscription has stopped.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is always nil: the franz-go client retries every error it can meet
// (connection loss, rebalances, broker failover) itself.
func (s *Subscription) Err() error { return nil }

// Close stops fetching, waits (until ctx ends) for the handler call to
// return and for deliveries in flight to be settled, commits what is
// settled, and leaves the group. Unsettled records are redelivered to the
// next owner of their partition.
func (s *Subscription) Close(ctx context.Context) error { return s.stop(ctx) }

func (s *Subscription) stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		if s.holdTimer != nil {
			s.holdTimer.Stop()
		}
		s.mu.Unlock()
		s.runCancel()
		var err error
		select {
		case <-s.runDone:
		case <-ctx.Done():
			err = fmt.Errorf("kafka: close: handler still running: %w", ctx.Err())
		}
		for err == nil {
			s.mu.Lock()
			n := s.inflight
			s.mu.Unlock()
			if n == 0 {
				break
			}
			select {
			case <-ctx.Done():
				err = fmt.Errorf("kafka: close: %d deliveries unsettled: %w", n, ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
		s.mu.Lock()
		s.hard = true
		s.mu.Unlock()
		close(s.bgStop)
		<-s.bgDone
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if ctx.Err() != nil {
			cctx, cancel = context.WithTimeout(context.Background(), time.Second)
		}
		if cerr := s.commitAs(cctx, s.cl, nil, true); cerr != nil {
			s.b.opts.Logger.Warn("kafka: final commit failed", "topic", s.topic, "group", s.group, "err", cerr)
		}
		cancel()
		s.hcancel()
		s.cl.Close()
		s.b.forget(s)
		s.stopErr = err
		select {
		case <-s.runDone:
			close(s.done)
		default: // the handler is still running: Done closes when it returns
			go func() {
				<-s.runDone
				close(s.done)
			}()
		}
	})
	return s.stopErr
}

// signal wakes the run loop if it waits for capacity.
func (s *Subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// interrupt wakes the run loop even while it polls.
func (s *Subscription) interrupt() {
	s.mu.Lock()
	if s.pollCancel != nil {
		s.pollCancel()
	}
	s.mu.Unlock()
	s.signal()
}

func (s *Subscription) run() {
	defer close(s.runDone)
	lowWater := s.cfg.MaxInFlight / 8
	waited := false
	for s.runCtx.Err() == nil {
		if s.deliverDue() {
			continue
		}
		s.mu.Lock()
		n := s.cfg.MaxInFlight - s.inflight
		if n <= 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-s.runCtx.Done():
			}
			continue
		}
		if n < lowWater && s.inflight > 0 && !waited {
			// Little room: wait a moment for more, so that polls (and
			// the delivered-marker commit each one makes) stay batched
			// when deliveries are settled one by one by a worker pool.
			s.mu.Unlock()
			waited = true
			t := time.NewTimer(2 * time.Millisecond)
			select {
			case <-t.C:
			case <-s.runCtx.Done():
			}
			t.Stop()
			continue
		}
		waited = false
		pctx, cancel := context.WithCancel(s.runCtx)
		s.pollCancel = cancel
		s.armHoldTimerLocked() // after pollCancel is set: the timer interrupts the poll
		s.mu.Unlock()
		fetches := s.cl.PollRecords(pctx, n)
		s.mu.Lock()
		s.pollCancel = nil
		s.mu.Unlock()
		cancel()
		if fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				s.b.opts.Logger.Debug("kafka: fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		s.process(fetches.Records())
	}
}

type item struct {
	st *partState
	e  *entry
}

// process takes polled records into their partitions' queues, holds retry
// records that are not due, commits the delivered marker, and delivers the
// rest in order.
func (s *Subscription) process(records []*kgo.Record) {
	if len(records) == 0 {
		return
	}
	now := time.Now()
	items := make([]item, 0, len(records))
	var pause map[string][]int32
	mark := false
	s.mu.Lock()
	for _, r := range records {
		st := s.parts[tp{r.Topic, r.Partition}]
		if st == nil || st.gone || st.revoking {
			continue // not ours any more: the next owner reads it
		}
		st.next = r.Offset + 1
		e := &entry{rec: r, topic: s.topic, attempt: 1}
		if st.retry {
			ri := parseRetry(r.Headers, s.topic)
			e.topic, e.attempt, e.due = ri.topic, ri.attempt, ri.due
		}
		if r.Offset <= st.inherit.Delivered {
			e.attempt = max(e.attempt, st.inherit.Attempt+1)
		}
		st.q = append(st.q, e)
		if st.retry && (len(st.hold) > 0 || e.due.After(now)) {
			st.hold = append(st.hold, e)
			if !st.paused {
				st.paused = true
				if pause == nil {
					pause = map[string][]int32{}
				}
				pause[r.Topic] = append(pause[r.Topic], r.Partition)
			}
			continue
		}
		items = append(items, item{st, e})
		st.markTo = max(st.markTo, r.Offset)
		if st.markTo > st.durable {
			mark = true
		}
	}
	s.mu.Unlock()
	if pause != nil {
		s.cl.PauseFetchPartitions(pause)
	}
	if mark {
		s.markDelivered()
	}
	for _, it := range items {
		s.deliver(it.st, it.e)
	}
}

// markDelivered commits the delivered marker before records are handed out,
// so that a member taking over after a crash knows they were delivered.
func (s *Subscription) markDelivered() {
	if err := s.commit(s.runCtx, s.cl, nil); err != nil && s.runCtx.Err() == nil {
		s.b.opts.Logger.Debug("kafka: delivered-marker commit failed", "topic", s.topic, "group", s.group, "err", err)
	}
}

// deliverDue delivers the first due held retry record, if any and if there
// is capacity. It reports whether it delivered one.
func (s *Subscription) deliverDue() bool {
	now := time.Now()
	s.mu.Lock()
	if s.stopping || s.inflight >= s.cfg.MaxInFlight {
		s.mu.Unlock()
		return false
	}
	for _, st := range s.parts {
		if st.gone || st.revoking || len(st.hold) == 0 || st.hold[0].due.After(now) {
			continue
		}
		e := st.hold[0]
		st.hold[0] = nil
		st.hold = st.hold[1:]
		st.markTo = max(st.markTo, e.rec.Offset)
		mark := st.markTo > st.durable
		var resume map[string][]int32
		if len(st.hold) == 0 && st.paused {
			st.paused = false
			resume = map[string][]int32{st.tp.topic: {st.tp.partition}}
		}
		s.mu.Unlock()
		if resume != nil {
			s.cl.ResumeFetchPartitions(resume)
		}
		if mark {
			s.markDelivered()
		}
		s.deliver(st, e)
		return true
	}
	s.mu.Unlock()
	return false
}

// armHoldTimerLocked makes sure the run loop wakes when the earliest held
// retry record is due.
func (s *Subscription) armHoldTimerLocked() {
	if s.stopping {
		return
	}
	var at time.Time
	for _, st := range s.parts {
		if len(st.hold) > 0 && !st.gone && (at.IsZero() || st.hold[0].due.Before(at)) {
			at = st.hold[0].due
		}
	}
	if s.holdTimer != nil {
		s.holdTimer.Stop()
		s.holdTimer = nil
	}
	if !at.IsZero() {
		s.holdTimer = time.AfterFunc(time.Until(at), s.interrupt)
	}
}

func (s *Subscription) deliver(st *partState, e *entry) {
	s.mu.Lock()
	if s.stopping || st.gone || st.revoking || e.settled || e.released {
		s.mu.Unlock()
		return
	}
	e.delivered = true
	e.deadline = time.Now().Add(s.cfg.AckWait)
	s.inflight++
	s.mu.Unlock()
	d := newDelivery(s, st, e)
	err := s.h(st.ctx, d)
	adapterkit.AfterHandler(s.hctx, d, err)
}

// ack marks e settled and lets the partition's commit offset move on,
// unless the partition is no longer this member's.
func (s *Subscription) ack(st *partState, e *entry) error {
	s.mu.Lock()
	if st.gone && !e.settled {
		s.mu.Unlock()
		return ErrRevoked
	}
	s.settleLocked(st, e)
	s.mu.Unlock()
	s.signal()
	return nil
}

func (s *Subscription) settleLocked(st *partState, e *entry) {
	if e.settled {
		return
	}
	e.settled = true
	if st.gone {
		return // its in-flight count was dropped with the partition
	}
	if e.delivered {
		s.inflight--
	}
	st.pop()
}

func (s *Subscription) nack(ctx context.Context, st *partState, e *entry, delay time.Duration) error {
	s.mu.Lock()
	if e.settled || e.moving || st.gone {
		// Already on its way to a redelivery (ack wait ran out), or the
		// partition moved: its next owner redelivers it.
		s.mu.Unlock()
		return nil
	}
	if st.revoking {
		// A copy on the retry topic would race the records after it,
		// which the next owner reads from the committed offset anyway.
		s.releaseLocked(st, e)
		s.mu.Unlock()
		s.signal()
		return nil
	}
	e.moving = true
	s.mu.Unlock()
	return s.moveToRetry(ctx, st, e, delay)
}

// release hands e back unstarted: it stays unsettled (its offset is not
// committed) and no longer counts as in flight, so that the partition's
// next owner (this member after a restart) reads it again, in order. If
// this member still owns the partition when e's ack wait runs out, e goes
// to the retry topic as an expired delivery would.
func (s *Subscription) release(st *partState, e *entry) {
	s.mu.Lock()
	if !e.settled && !e.moving && !st.gone {
		s.releaseLocked(st, e)
	}
	s.mu.Unlock()
	s.signal()
}

func (s *Subscription) releaseLocked(st *partState, e *entry) {
	if e.released {
		return
	}
	e.released = true
	if e.delivered && !st.gone {
		s.inflight--
	}
	e.delivered = false
}

// moveToRetry produces e's record to the retry topic, due after delay with
// the next attempt number, then settles e. e.moving must be set.
func (s *Subscription) moveToRetry(ctx context.Context, st *partState, e *entry, delay time.Duration) error {
	r := &kgo.Record{
		Topic:   s.retryTopic,
		Key:     e.rec.Key,
		Value:   e.rec.Value,
		Headers: retryHeaders(e.rec.Headers, e.topic, e.attempt+1, time.Now().Add(delay)),
	}
	err := s.b.cl.ProduceSync(ctx, r).FirstErr()
	s.mu.Lock()
	e.moving = false
	if err == nil {
		s.settleLocked(st, e)
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("kafka: nack: produce to retry topic %q: %w", s.retryTopic, err)
	}
	s.signal()
	return nil
}

// background commits settled offsets every CommitInterval and moves
// deliveries whose ack wait ran out to the retry topic.
func (s *Subscription) background() {
	defer close(s.bgDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.bgStop
		cancel()
	}()
	tick := min(s.b.opts.CommitInterval, max(s.cfg.AckWait/4, 10*time.Millisecond))
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.expire(ctx)
		if time.Since(last) >= s.b.opts.CommitInterval {
			last = time.Now()
			if err := s.commit(ctx, s.cl, nil); err != nil && ctx.Err() == nil {
				s.b.opts.Logger.Warn("kafka: commit failed", "topic", s.topic, "group", s.group, "err", err)
			}
		}
	}
}

// expire treats deliveries unsettled after the ack wait as nacked: they go
// to the retry topic (attempt+1), so a lost delivery cannot hold its
// partition's commit offset back forever.
func (s *Subscription) expire(ctx context.Context) {
	now := time.Now()
	var list []item
	s.mu.Lock()
	for _, st := range s.parts {
		if st.gone || st.revoking {
			continue
		}
		for _, e := range st.q {
			if (e.delivered || e.released) && !e.settled && !e.moving && now.After(e.deadline) {
				e.moving = true
				list = append(list, item{st, e})
			}
		}
	}
	s.mu.Unlock()
	for _, it := range list {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.moveToRetry(pctx, it.st, it.e, 0)
		cancel()
		if err != nil {
			s.mu.Lock()
			it.e.deadline = time.Now().Add(s.cfg.AckWait)
			s.mu.Unlock()
			if ctx.Err() == nil {
				s.b.opts.Logger.Warn("kafka: ack wait expired; moving the record to the retry topic failed", "topic", s.topic, "group", s.group, "err", err)
			}
		}
	}
}

// commit commits, for every partition owned (or only those in only), the
// first unsettled offset with the delivered marker as metadata.
func (s *Subscription) commit(ctx context.Context, cl *kgo.Client, only map[tp]bool) error {
	return s.commitAs(ctx, cl, only, false)
}

// commitAs is commit; final says the member lets the partitions go (see
// partState.meta).
func (s *Subscription) commitAs(ctx context.Context, cl *kgo.Client, only map[tp]bool, final bool) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	type pending struct {
		st   *partState
		off  int64
		meta commitMeta
		last bool // may lower the delivered marker
	}
	var list []pending
	s.mu.Lock()
	if s.noCommit {
		s.mu.Unlock()
		return nil
	}
	for k, st := range s.parts {
		if st.gone || (only != nil && !only[k]) {
			continue
		}
		off := st.commitOffset()
		if off < 0 {
			continue
		}
		last := final || st.revoking
		m := st.meta(off, last)
		if off == st.committed && (m.Delivered == st.durable || (!last && m.Delivered < st.durable)) {
			continue
		}
		list = append(list, pending{st, off, m, last})
	}
	s.mu.Unlock()
	if len(list) == 0 {
		return nil
	}
	s.mu.Lock()
	s.commits++
	s.mu.Unlock()
	offsets := map[string]map[int32]kgo.EpochOffset{}
	metas := map[tp]string{}
	for _, p := range list {
		if offsets[p.st.tp.topic] == nil {
			offsets[p.st.tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[p.st.tp.topic][p.st.tp.partition] = kgo.EpochOffset{Epoch: -1, Offset: p.off}
		metas[p.st.tp] = p.meta.String()
	}
	ctx = kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				if m, ok := metas[tp{t.Topic, t.Partitions[j].Partition}]; ok {
					t.Partitions[j].Metadata = &m
				}
			}
		}
		return nil
	})
	var rerr error
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			rerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil && rerr == nil {
					rerr = fmt.Errorf("partition %d: %w", p.Partition, err)
				}
			}
		}
	})
	if rerr != nil {
		return rerr
	}
	s.mu.Lock()
	for _, p := range list {
		p.st.committed = max(p.st.committed, p.off)
		if p.last {
			p.st.durable = p.meta.Delivered
		} else {
			p.st.durable = max(p.st.durable, p.meta.Delivered)
		}
	}
	s.mu.Unlock()
	return nil
}

func (s *Subscription) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, ps := range assigned {
		for _, p := range ps {
			k := tp{topic, p}
			if old := s.parts[k]; old != nil {
				s.dropLocked(old)
			}
			s.parts[k] = newPartState(s.hctx, k, topic == s.retryTopic)
		}
	}
}

// onFetched reads the committed offsets and the delivered markers of the
// partitions just assigned.
func (s *Subscription) onFetched(_ context.Context, _ *kgo.Client, resp *kmsg.OffsetFetchResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := func(topic string, p int32, off int64, meta *string) {
		st := s.parts[tp{topic, p}]
		if st == nil || st.gone {
			return
		}
		if off >= 0 {
			st.committed = off
			if st.next < 0 {
				st.next = off
			}
		}
		if meta != nil {
			if m, ok := parseMeta(*meta); ok {
				st.inherit = m
				st.durable = m.Delivered
			}
		}
	}
	for _, g := range resp.Groups {
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				set(t.Topic, p.Partition, p.Offset, p.Metadata)
			}
		}
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			set(t.Topic, p.Partition, p.Offset, p.Metadata)
		}
	}
	return nil
}

// onRevoked stops delivering the revoked partitions, waits (up to
// RevokeWait) for their deliveries to be settled, commits what is settled
// and forgets them, so that the next owner starts right after the settled
// records.
func (s *Subscription) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	keys := map[tp]bool{}
	for topic, ps := range revoked {
		for _, p := range ps {
			keys[tp{topic, p}] = true
		}
	}
	if len(keys) == 0 {
		return
	}
	s.mu.Lock()
	for k := range keys {
		if st := s.parts[k]; st != nil {
			st.revoking = true
		}
	}
	s.mu.Unlock()
	deadline := time.Now().Add(s.b.opts.RevokeWait)
	for {
		s.mu.Lock()
		n, hard := 0, s.hard
		for k := range keys {
			if st := s.parts[k]; st != nil {
				for _, e := range st.q {
					if e.delivered && !e.settled {
						n++
					}
				}
			}
		}
		s.mu.Unlock()
		if n == 0 || hard || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := s.commit(cctx, cl, keys); err != nil {
		s.b.opts.Logger.Warn("kafka: commit on revoke failed", "topic", s.topic, "group", s.group, "err", err)
	}
	cancel()
	s.forgetParts(cl, keys)
}

// onLost forgets partitions without committing: the group already gave
// them to someone else.
func (s *Subscription) onLost(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	keys := map[tp]bool{}
	for topic, ps := range lost {
		for _, p := range ps {
			keys[tp{topic, p}] = true
		}
	}
	s.forgetParts(cl, keys)
}

func (s *Subscription) forgetParts(cl *kgo.Client, keys map[tp]bool) {
	resume := map[string][]int32{}
	s.mu.Lock()
	for k := range keys {
		st := s.parts[k]
		if st == nil {
			continue
		}
		if st.paused {
			resume[k.topic] = append(resume[k.topic], k.partition)
		}
		s.dropLocked(st)
		delete(s.parts, k)
	}
	s.mu.Unlock()
	if len(resume) > 0 {
		cl.ResumeFetchPartitions(resume)
	}
	s.signal()
}

func (s *Subscription) dropLocked(st *partState) {
	if st.gone {
		return
	}
	st.gone = true
	st.cancel()
	for _, e := range st.q {
		if e.delivered && !e.settled {
			s.inflight--
		}
	}
	st.q, st.hold = nil, nil
}
