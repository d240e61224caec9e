package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/backoff"
	"github.com/eventkit/eventkit/outbox/internal/seqrun"
)

// RelayConfig configures a Relay. The zero value gives the defaults.
type RelayConfig struct {
	// BatchSize is the most events read (and published) per round. Default 500.
	BatchSize int
	// PollInterval is how often the relay looks for events when it gets no
	// wake-up signal (the fallback when notifications are lost). Default 1s.
	PollInterval time.Duration
	// WakeLinger: after a wake-up from a store that signals before commit
	// (see CommitNotifier), the relay polls again at 1, 2, 4, ... ms for this
	// long until it finds the events. Default 100ms for such stores, unused
	// for Postgres (whose NOTIFY arrives on commit).
	WakeLinger time.Duration
	// Retention keeps delivered events for this long (marked delivered,
	// deleted by a background cleanup) instead of deleting them at once.
	// 0 (the default) deletes them as soon as the broker confirms them.
	Retention time.Duration
	// ParkedRetention deletes parked events this long after they were
	// parked. 0 (the default) keeps them until an operator acts.
	ParkedRetention time.Duration
	// CleanupInterval is how often retained events are cleaned up. Default 1m.
	CleanupInterval time.Duration
	// MaxAttempts is how many times an event that the broker rejects
	// permanently (eventkit.IsPermanent) is tried before it is parked.
	// Default 3. Transient failures (broker down) are retried forever and
	// never count.
	MaxAttempts int
	// RetryDelay is the wait before retrying a permanently rejected event;
	// it doubles with each attempt. Events of other subjects flow meanwhile.
	// Default 1s.
	RetryDelay time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff after a
	// transient failure (broker or database unreachable). Defaults 100ms, 30s.
	MinBackoff, MaxBackoff time.Duration
	// PublishTimeout bounds one Publish call. Default 30s.
	PublishTimeout time.Duration
	// PipelineSubjects sends consecutive events of one subject in the same
	// Publish call (one call per run of same-topic events). It is faster for
	// a few hot subjects (with a publisher that is not a
	// broker.ChainedPublisher), but gives up the strict order guarantee: when the
	// broker rejects e1 and stores the e2 after it in the same call (an
	// adapter that pipelines, e.g. NATS after an async publish error), e2
	// is at the broker before e1, and the relay then publishes e1 and e2
	// again, so the broker holds e2, e1, e2 and a consumer that keeps first
	// copies applies e2 first. Default false: a Publish call carries at most
	// one event of each subject (with a broker.ChainedPublisher, such as
	// broker/natsbroker, the whole run goes in one PublishChained call,
	// which holds each event until the broker accepted the one of its
	// subject before it), and a subject's next event is sent only after
	// the broker confirmed the one before it, so no later event of a
	// subject is ever at the broker before an earlier one (see the package
	// doc).
	PipelineSubjects bool
	// LockRetryInterval is how often a standby relay tries to take the
	// leadership lock. Default 1s.
	LockRetryInterval time.Duration
	// Instance names this relay in partition leases, logs, metrics and
	// `eventkit outbox status`. Default DefaultInstance() (hostname-pid;
	// "-2", "-3", ... is added for the second and later relays of one
	// process). Two running relays must not share one: they would lead the
	// same partitions.
	Instance string
	// LeaseTTL is how long a partition lease lasts without renewal (on a
	// partitioned outbox, see Partitioned). The relay renews its leases
	// every LeaseTTL/4 and stops leading a partition whose lease it could
	// not renew within 3/4 of LeaseTTL (so it has stopped before another
	// relay can take the lease); a relay that dies holds its partitions for
	// up to LeaseTTL. Default 10s.
	LeaseTTL time.Duration
	// StatusInterval is how often the leader reads Status to report the
	// backlog and the oldest event's age as metrics. Default 10s; negative
	// disables it.
	StatusInterval time.Duration
	// Logger receives failures and leadership changes. Default slog.Default().
	Logger *slog.Logger
	// Metrics receives measurements; see NewOTelMetrics. Default none.
	Metrics Metrics
}

func (c RelayConfig) withDefaults(s Source) RelayConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	def(&c.PollInterval, time.Second)
	if cn, ok := s.(CommitNotifier); ok && cn.NotifiesOnCommit() {
		c.WakeLinger = 0
	} else {
		def(&c.WakeLinger, 100*time.Millisecond)
	}
	def(&c.CleanupInterval, time.Minute)
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	def(&c.RetryDelay, time.Second)
	def(&c.MinBackoff, 100*time.Millisecond)
	def(&c.MaxBackoff, 30*time.Second)
	def(&c.PublishTimeout, 30*time.Second)
	def(&c.LockRetryInterval, time.Second)
	def(&c.LeaseTTL, 10*time.Second)
	if c.Instance == "" {
		c.Instance = DefaultInstance()
		if k := relaysInProcess.Add(1); k > 1 { // a second relay of this process
			c.Instance += fmt.Sprintf("-%d", k)
		}
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	return c
}

var relaysInProcess atomic.Int64

// Stats are a relay's counters since it was created.
type Stats struct {
	Delivered     int64 // rows completed (deleted or marked delivered), as the database reported
	Published     int64 // events the broker confirmed
	Parked        int64 // events parked after MaxAttempts permanent rejections
	Rejected      int64 // permanent rejections (each attempt)
	PublishErrors int64 // transient publish failures (each failed Publish call)
	StoreErrors   int64 // failed store calls
	Batches       int64 // rounds that published at least one event
	Leaderships   int64 // times this relay became the leader
}

// Relay publishes committed outbox events to a broker. Run it in one or more
// processes: one instance (the holder of the store's leadership lock) is
// active, the others wait to take over. See the package doc for the
// guarantees.
type Relay struct {
	store Source
	pub   broker.Publisher
	chain broker.ChainedPublisher // pub, when it chains a subject's events and PipelineSubjects is off
	cfg   RelayConfig
	wake  chan struct{}

	wakeMu sync.Mutex
	wakes  map[chan struct{}]struct{} // the partition loops' wake channels

	leader atomic.Bool
	health healthState
	stats  struct {
		delivered, published, parked, rejected, publishErrors, storeErrors, batches, leaderships atomic.Int64
	}
}

// NewRelay returns a relay from src (a Store, for the polling relay, or a
// stream such as outbox/pgcdc's) to pub.
func NewRelay(src Source, pub broker.Publisher, cfg RelayConfig) *Relay {
	r := &Relay{store: src, pub: pub, cfg: cfg.withDefaults(src), wake: make(chan struct{}, 1),
		wakes: map[chan struct{}]struct{}{}}
	if cp, ok := pub.(broker.ChainedPublisher); ok && !r.cfg.PipelineSubjects {
		r.chain = cp
	}
	return r
}

// Wake makes the relay look for events now. It never blocks. The store's
// Listen calls it; code that writes events by other means may call it too.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	for c := range r.wakes {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// IsLeader reports whether this relay holds the leadership lock now (on a
// partitioned outbox: the lease of at least one partition).
func (r *Relay) IsLeader() bool { return r.leader.Load() }

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	s := &r.stats
	return Stats{
		Delivered: s.delivered.Load(), Published: s.published.Load(), Parked: s.parked.Load(), Rejected: s.rejected.Load(),
		PublishErrors: s.publishErrors.Load(), StoreErrors: s.storeErrors.Load(),
		Batches: s.batches.Load(), Leaderships: s.leaderships.Load(),
	}
}

// Run relays events until ctx ends, then returns nil (or the error that
// stopped it). It first checks the source (Checker: a missing table or one
// of the wrong shape is returned at once, wrapping ErrNoTable or
// ErrTableShape), then waits for the leadership lock, publishes while it
// holds it, and goes back to waiting if it loses it. Every goroutine it
// starts has ended when it returns.
func (r *Relay) Run(ctx context.Context) error {
	r.setLeader(false)
	if c, ok := r.store.(Checker); ok {
		if err := c.Check(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.health.setStore(err)
			return err
		}
	}
	r.health.setState(StateStandby)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = r.store.Listen(ctx, r.Wake)
	}()
	log := r.cfg.Logger
	for {
		ps, n, err := r.partitions(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.storeError("partitions", err)
		} else if n > 1 {
			if err := r.runPartitioned(ctx, ps, n); err != nil && !errors.Is(err, errPartitionsChanged) {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		var lock Lock
		if err == nil {
			lock, err = r.store.TryLock(ctx)
		}
		if err != nil && ctx.Err() == nil {
			r.storeError("lock", err)
		} else if err == nil {
			r.health.setStore(nil)
		}
		if lock != nil {
			r.setLeader(true)
			r.stats.leaderships.Add(1)
			log.Info("outbox: relay is the leader")
			r.lead(ctx, lock, r.store, r.wake, true)
			r.setLeader(false)
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = lock.Release(rctx)
			rcancel()
			if se, ok := lock.(SourceError); ok && ctx.Err() == nil {
				if err := se.Err(); err != nil {
					log.Error("outbox: relay source failed; stopping", "err", err)
					return err
				}
			}
			if ctx.Err() == nil {
				log.Warn("outbox: relay lost the leadership lock; standing by")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.LockRetryInterval):
		}
	}
}

func (r *Relay) setLeader(v bool) {
	r.leader.Store(v)
	if v {
		r.health.setState(StateLeader)
	} else if r.health.state() == StateLeader {
		r.health.setState(StateStandby)
	}
	if lm, ok := r.cfg.Metrics.(LeaderMetrics); ok {
		lm.Leader(v)
	}
}

type retryState struct {
	at      time.Time
	subject string
}

// lead runs the publish loop over src (the outbox, or one partition of it)
// while lock is held, woken by wake; with maintain it also runs the
// cleanup and backlog metrics.
func (r *Relay) lead(ctx context.Context, lock Lock, src Source, wake <-chan struct{}, maintain bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // stop the moment the lock is lost
		select {
		case <-lock.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	if maintain {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.maintain(ctx)
		}()
	}
	defer wg.Wait()

	retry := map[int64]retryState{} // permanently rejected events waiting for their next attempt
	var prefetched []Record         // the next batch, claimed while the last one was published
	prefetchChecked := false        // nothing was waiting below prefetched when the last batch was completed
	backoff := time.Duration(0)
	var lingerUntil time.Time
	lingerStep := time.Millisecond
	for ctx.Err() == nil {
		p := ClaimParams{Limit: r.cfg.BatchSize}
		now := time.Now()
		var nextRetry time.Time
		for seq, st := range retry {
			if !st.at.After(now) {
				delete(retry, seq) // due: claim it again (it heads its subject)
				continue
			}
			p.ExcludeSeqs = append(p.ExcludeSeqs, seq)
			if st.subject != "" {
				p.ExcludeSubjects = append(p.ExcludeSubjects, st.subject)
			}
			if nextRetry.IsZero() || st.at.Before(nextRetry) {
				nextRetry = st.at
			}
		}
		var recs []Record
		var err error
		if prefetched != nil && prefetchChecked {
			// CompleteRun found nothing waiting below it when it completed
			// the batch before.
			recs = prefetched
			prefetched = nil
		} else if prefetched != nil {
			// Use the batch read ahead only if nothing before it is
			// waiting (a row from a transaction that committed late, below
			// the batch in flight when the read-ahead ran).
			var head []Record
			hp := p
			hp.Limit = 1
			if head, err = src.Claim(ctx, hp); err == nil && len(head) == 1 && head[0].Seq >= prefetched[0].Seq {
				recs = prefetched
			} else if err == nil {
				recs, err = src.Claim(ctx, p)
			}
			prefetched = nil
		} else {
			recs, err = src.Claim(ctx, p)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.storeError("claim", err)
			backoff = r.sleepBackoff(ctx, backoff)
			continue
		}
		r.health.setStore(nil)
		if len(recs) == 0 {
			wait := r.cfg.PollInterval
			if now.Before(lingerUntil) {
				wait = min(lingerStep, time.Until(lingerUntil))
				lingerStep *= 2
			}
			if !nextRetry.IsZero() {
				wait = min(wait, max(time.Until(nextRetry), time.Millisecond))
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-wake:
				if r.cfg.WakeLinger > 0 {
					lingerUntil = time.Now().Add(r.cfg.WakeLinger)
					lingerStep = time.Millisecond
				}
			case <-t.C:
			}
			t.Stop()
			continue
		}
		// A full batch means a backlog: read the next batch (the rows after
		// this one) while this one is published. It is used only if this
		// batch went through cleanly and no earlier row turned up meanwhile
		// (checked above), so it is exactly what a Claim would return; it
		// is never published before this batch is confirmed and completed.
		var pre chan claimResult
		if len(recs) == r.cfg.BatchSize && len(retry) == 0 && !streams(src) {
			pp := p
			pp.AfterSeq = recs[len(recs)-1].Seq
			pre = make(chan claimResult, 1)
			go func() {
				rs, err := src.Claim(ctx, pp)
				pre <- claimResult{rs, err}
			}()
		}
		var transient bool
		transient, prefetched, prefetchChecked = r.process(ctx, src, recs, retry, pre)
		if transient {
			backoff = r.sleepBackoff(ctx, backoff)
		} else {
			backoff = 0
		}
	}
}

type claimResult struct {
	recs []Record
	err  error
}

// sleepBackoff waits for the next exponential backoff step and returns it.
func (r *Relay) sleepBackoff(ctx context.Context, prev time.Duration) time.Duration {
	d := backoff.Policy{Min: r.cfg.MinBackoff, Max: r.cfg.MaxBackoff}.Next(prev)
	backoff.Sleep(ctx, d)
	return d
}

// process publishes one claimed batch and completes what the broker
// confirmed. It reports whether a transient failure happened (the caller then
// backs off) and, if the whole batch went through cleanly (every event
// sent, confirmed and completed; no retry involved), the batch pre read
// ahead (nil otherwise): checked is true if the completion also found
// nothing claimable waiting below it (see RunCompleter).
func (r *Relay) process(ctx context.Context, src Source, recs []Record, retry map[int64]retryState, pre <-chan claimResult) (transient bool, next []Record, checked bool) {
	clean := true
	defer func() {
		if pre != nil {
			if res := <-pre; clean && res.err == nil && len(res.recs) > 0 {
				next = res.recs
			}
		}
		if !clean {
			next, checked = nil, false
		}
	}()
	// A subject whose head event is a retry of a rejected event is sent
	// alone: the events behind it wait until it is delivered or parked.
	held := map[string]bool{}
	send := recs[:0:0]
	for _, rec := range recs {
		subj := rec.Event.Subject
		if rec.DecodeErr != nil { // not an event: park it, never publish it
			clean = false
			r.park(ctx, src, rec, rec.DecodeErr)
			continue
		}
		if subj != "" && held[subj] {
			continue
		}
		send = append(send, rec)
		if rec.Attempts > 0 {
			clean = false
			if subj != "" {
				held[subj] = true
			}
		}
	}

	var done []int64
	blocked := map[string]bool{} // subjects with an unconfirmed event earlier in this batch
	var calls [][]Record
runs:
	for start := 0; start < len(send); {
		end := start + 1
		for end < len(send) && send[end].Topic == send[start].Topic {
			end++
		}
		run := send[start:end]
		start = end
		calls = r.calls(run, calls[:0])
		for _, call := range calls {
			// A subject whose earlier event failed sends nothing more in
			// this batch: its later events were never sent, so none is at
			// the broker ahead of it.
			k := 0
			for _, rec := range call {
				if s := rec.Event.Subject; s == "" || !blocked[s] {
					call[k] = rec
					k++
				}
			}
			if k < len(call) {
				clean = false
			}
			call = call[:k]
			if len(call) == 0 {
				continue
			}
			ok, callTransient := r.publish(ctx, src, call, retry, blocked, &done)
			if !ok {
				clean = false
			}
			if callTransient {
				transient = true
				break runs // later calls wait: the broker is likely down
			}
		}
	}
	if len(send) < len(recs) {
		clean = false
	}
	if len(done) == 0 {
		return transient, nil, false
	}
	if rc, ok := src.(RunCompleter); ok && pre != nil && clean && len(done) == len(recs) && seqrun.Consecutive(done) {
		res := <-pre
		pre = nil
		if res.err == nil && len(res.recs) > 0 {
			ok, earlier := r.completeRun(ctx, rc, done, res.recs[0].Seq)
			if !ok {
				clean = false
			} else if !earlier {
				return transient, res.recs, true
			}
			return transient, nil, false // claim again: a record below the read-ahead is waiting
		}
	}
	if !r.complete(ctx, src, done) {
		clean = false
	}
	return transient, nil, false
}

// calls splits a run of same-topic records into Publish calls: the whole
// run with PipelineSubjects or a ChainedPublisher (which sends a subject's
// next event only after the broker accepted the one before it), otherwise
// consecutive chunks in which no subject appears twice (a chunk ends before
// the event whose subject it already holds), so events keep their outbox
// order and a subject's next event goes out only after the call with the
// one before it returned.
func (r *Relay) calls(run []Record, out [][]Record) [][]Record {
	if r.cfg.PipelineSubjects || r.chain != nil {
		return append(out, run)
	}
	seen := make(map[string]bool, len(run))
	start := 0
	for i, rec := range run {
		s := rec.Event.Subject
		if s == "" {
			continue
		}
		if seen[s] {
			out = append(out, run[start:i])
			clear(seen)
			start = i
		}
		seen[s] = true
	}
	return append(out, run[start:])
}

// publish sends one Publish call and sorts out its result: confirmed events
// are added to done (unless an earlier event of their subject failed),
// permanent rejections are counted (and parked after MaxAttempts), and
// subjects with a failed event are blocked for the rest of the batch. ok
// is false if anything failed; transient if a failure was not permanent.
func (r *Relay) publish(ctx context.Context, src Source, call []Record, retry map[int64]retryState, blocked map[string]bool, done *[]int64) (ok, transient bool) {
	topic := call[0].Topic
	events := make([]eventkit.Event, len(call))
	for i := range call {
		events[i] = call[i].Event
	}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	t0 := time.Now()
	var err error
	if r.chain != nil {
		err = r.chain.PublishChained(pctx, topic, events...)
	} else {
		err = r.pub.Publish(pctx, topic, events...)
	}
	cancel()
	r.cfg.Metrics.PublishLatency(topic, time.Since(t0), err == nil)
	failed := map[int]error{}
	if err != nil {
		var pe *broker.PublishError
		if errors.As(err, &pe) {
			for _, f := range pe.Failed {
				if f.Index >= 0 && f.Index < len(call) {
					failed[f.Index] = f.Err
				}
			}
		}
		if len(failed) == 0 { // not a PublishError (or an empty one): all failed
			for i := range call {
				failed[i] = err
			}
		}
	}
	var firstErr error
	for i, rec := range call {
		subj := rec.Event.Subject
		ferr, bad := failed[i]
		switch {
		case !bad:
			r.stats.published.Add(1)
			if subj == "" || !blocked[subj] {
				*done = append(*done, rec.Seq)
			} else if r.cfg.PipelineSubjects {
				// An earlier event of its subject failed in this same call
				// and this one is at the broker ahead of it: it is published
				// again after that one (see PipelineSubjects).
				r.cfg.Logger.Warn("outbox: broker stored an event after an earlier event of its subject failed; it is published again after it",
					"topic", topic, "id", rec.Event.ID, "subject", subj, "seq", rec.Seq)
			}
		case subj != "" && blocked[subj] && errors.Is(ferr, broker.ErrNotSent):
			// Held back by a ChainedPublisher behind an earlier event of
			// its subject that failed in this call: it waits for that one,
			// as if it had been left for a later call.
		case permanent(ferr) && ctx.Err() == nil:
			r.reject(ctx, src, rec, ferr, retry)
			if subj != "" {
				blocked[subj] = true
			}
		default:
			transient = true
			if firstErr == nil {
				firstErr = ferr
			}
			if subj != "" {
				blocked[subj] = true
			}
		}
	}
	if !transient && err == nil {
		r.health.setBroker(nil)
	}
	if transient && ctx.Err() == nil {
		r.health.setBroker(firstErr)
		r.stats.publishErrors.Add(1)
		r.cfg.Metrics.Error("publish")
		r.cfg.Logger.Warn("outbox: publish failed; will retry with backoff",
			"topic", topic, "events", len(call), "failed", len(failed), "err", firstErr)
	}
	return len(failed) == 0, transient
}

// park parks rec at once with err as the reason.
func (r *Relay) park(ctx context.Context, src Source, rec Record, err error) {
	reason := err.Error()
	if len(reason) > 2000 {
		reason = reason[:2000]
	}
	if ferr := r.retryStore(ctx, "fail", func() error {
		return src.Fail(ctx, FailParams{Seq: rec.Seq, Reason: reason, Park: true})
	}); ferr != nil {
		return
	}
	r.stats.parked.Add(1)
	r.cfg.Metrics.Parked(rec.Topic, 1)
	r.cfg.Logger.Error("outbox: undecodable row parked", "topic", rec.Topic, "seq", rec.Seq, "err", err)
}

// reject handles one permanent rejection: count the attempt, park the event
// after MaxAttempts, or schedule its retry.
func (r *Relay) reject(ctx context.Context, src Source, rec Record, err error, retry map[int64]retryState) {
	r.stats.rejected.Add(1)
	r.cfg.Metrics.Error("rejected")
	attempts := rec.Attempts + 1
	park := attempts >= r.cfg.MaxAttempts
	reason := err.Error()
	if len(reason) > 2000 {
		reason = reason[:2000]
	}
	if ferr := r.retryStore(ctx, "fail", func() error {
		return src.Fail(ctx, FailParams{Seq: rec.Seq, Reason: reason, Park: park})
	}); ferr != nil {
		return
	}
	if park {
		r.stats.parked.Add(1)
		r.cfg.Metrics.Parked(rec.Topic, 1)
		r.cfg.Logger.Error("outbox: event parked after permanent rejections",
			"topic", rec.Topic, "id", rec.Event.ID, "type", rec.Event.Type, "subject", rec.Event.Subject,
			"seq", rec.Seq, "attempts", attempts, "err", err)
		return
	}
	delay := r.cfg.RetryDelay << min(attempts-1, 16)
	retry[rec.Seq] = retryState{at: time.Now().Add(delay), subject: rec.Event.Subject}
	r.cfg.Logger.Warn("outbox: broker rejected event; will retry",
		"topic", rec.Topic, "id", rec.Event.ID, "seq", rec.Seq, "attempt", attempts, "in", delay, "err", err)
}

func (r *Relay) complete(ctx context.Context, src Source, seqs []int64) bool {
	keep := r.cfg.Retention > 0
	var n int64
	if err := r.retryStore(ctx, "complete", func() (err error) {
		n, err = src.Complete(ctx, seqs, keep)
		return err
	}); err != nil {
		return false // lost the lock or shutting down: these events will be published again
	}
	return r.completed(seqs, n)
}

// completed counts n completed rows of seqs; false if some were gone.
func (r *Relay) completed(seqs []int64, n int64) bool {
	r.stats.delivered.Add(n)
	r.stats.batches.Add(1)
	r.cfg.Metrics.Delivered(int(n))
	if n < int64(len(seqs)) {
		r.cfg.Logger.Warn("outbox: published rows were already gone when the relay completed them (completed by another relay, or deleted)",
			"published", len(seqs), "completed", n)
		return false
	}
	return true
}

// completeRun is complete for a run of consecutive seqs through a
// RunCompleter; earlier reports a claimable record waiting below before.
func (r *Relay) completeRun(ctx context.Context, rc RunCompleter, seqs []int64, before int64) (ok, earlier bool) {
	keep := r.cfg.Retention > 0
	var n int64
	if err := r.retryStore(ctx, "complete", func() (err error) {
		n, earlier, err = rc.CompleteRun(ctx, seqs[0], seqs[len(seqs)-1], keep, before)
		return err
	}); err != nil {
		return false, false
	}
	return r.completed(seqs, n), earlier
}

// retryStore runs fn until it succeeds or ctx ends, backing off between tries.
func (r *Relay) retryStore(ctx context.Context, op string, fn func() error) error {
	backoff := time.Duration(0)
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		r.storeError(op, err)
		backoff = r.sleepBackoff(ctx, backoff)
	}
}

func (r *Relay) storeError(op string, err error) {
	r.health.setStore(err)
	r.stats.storeErrors.Add(1)
	r.cfg.Metrics.Error("store_" + op)
	r.cfg.Logger.Warn("outbox: store call failed; will retry", "op", op, "err", err)
}

// maintain runs the leader's background work: cleanup of retained events and
// backlog metrics.
func (r *Relay) maintain(ctx context.Context) {
	cleanup := r.cfg.Retention > 0 || r.cfg.ParkedRetention > 0
	var cleanupC, statusC <-chan time.Time
	if cleanup {
		t := time.NewTicker(r.cfg.CleanupInterval)
		defer t.Stop()
		cleanupC = t.C
	}
	if r.cfg.StatusInterval > 0 {
		t := time.NewTicker(r.cfg.StatusInterval)
		defer t.Stop()
		statusC = t.C
		r.reportStatus(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-cleanupC:
			r.Cleanup(ctx)
		case <-statusC:
			r.reportStatus(ctx)
		}
	}
}

// Cleanup deletes delivered events older than Retention and parked events
// older than ParkedRetention (if set) now. The leader does this every
// CleanupInterval; Cleanup is exported for tests and tools.
func (r *Relay) Cleanup(ctx context.Context) (int64, error) {
	now := time.Now()
	var parkedBefore time.Time
	if r.cfg.ParkedRetention > 0 {
		parkedBefore = now.Add(-r.cfg.ParkedRetention)
	}
	n, err := r.store.Cleanup(ctx, now.Add(-r.cfg.Retention), parkedBefore)
	if err != nil && ctx.Err() == nil {
		r.storeError("cleanup", err)
	}
	return n, err
}

func (r *Relay) reportStatus(ctx context.Context) {
	st, err := r.store.Status(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.storeError("status", err)
		}
		return
	}
	r.cfg.Metrics.Backlog(st.Backlog, st.OldestAge, st.ParkedCount)
}

func (s Stats) String() string {
	return fmt.Sprintf("delivered=%d published=%d parked=%d rejected=%d publishErrors=%d storeErrors=%d batches=%d leaderships=%d",
		s.Delivered, s.Published, s.Parked, s.Rejected, s.PublishErrors, s.StoreErrors, s.Batches, s.Leaderships)
}

// permanent reports whether retrying cannot help: eventkit.IsPermanent, or
// an event over a size limit.
func permanent(err error) bool {
	return eventkit.IsPermanent(err) || errors.Is(err, eventkit.ErrTooLarge)
}

func streams(s Source) bool {
	ss, ok := s.(StreamSource)
	return ok && ss.Streams()
}
