package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/seqrun"
)

// txn is one committed transaction as received.
type txn struct {
	end   pglogrepl.LSN // end of the commit record: confirm this once done
	xid   uint32
	items []*item
	left  int // items not finished yet
	// backfill: the items were read from the table (see backfill.go), not
	// streamed; the transaction is not in the buffer and has no position.
	backfill bool
}

// item is one received row: finished once the database completed or
// parked it.
type item struct {
	rec  outbox.Record
	t    *txn
	done bool
}

// source is the relay engine's outbox.Source for the stream: Claim reads
// the transactions received and not finished yet, in commit order; Complete
// and Fail write the table (and only count a row once the database did);
// the slot's confirmed position moves past a transaction once all its rows
// are finished, and all transactions before it.
type source struct {
	r *Relay

	mu       sync.Mutex
	txns     []*txn // received, not all finished; commit order
	bySeq    map[int64]*item
	received pglogrepl.LSN // end of the last transaction buffered
	wake     func()
	space    chan struct{} // signalled when transactions leave the buffer

	bf backfillState // rows read from the table (backfill.go)

	bfRead sync.Mutex     // serializes readBackfill (the engine's and the read-ahead)
	ahead  sync.WaitGroup // the read-ahead of the next backfill chunk
	gen    uint64         // bumped by reset: a backfill read begun before it is dropped
}

var (
	_ outbox.Source         = (*source)(nil)
	_ outbox.Checker        = (*source)(nil)
	_ outbox.StreamSource   = (*source)(nil)
	_ outbox.CommitNotifier = (*source)(nil)
)

func (s *source) Streams() bool          { return true }
func (s *source) NotifiesOnCommit() bool { return true }

// Check implements outbox.Checker.
func (s *source) Check(ctx context.Context) error { return s.r.check(ctx) }

// push buffers a committed transaction and wakes the engine. It reports
// false (and buffers nothing) when the buffer is full.
func (s *source) push(t *txn) bool {
	s.mu.Lock()
	if len(s.txns) >= s.r.cfg.QueueSize {
		s.mu.Unlock()
		return false
	}
	s.dedupeLocked(t)
	t.left = len(t.items)
	s.txns = append(s.txns, t)
	for _, it := range t.items {
		s.bySeq[it.rec.Seq] = it
	}
	s.received = t.end
	s.popLocked()
	wake := s.wake
	s.mu.Unlock()
	if wake != nil && len(t.items) > 0 {
		wake()
	}
	return true
}

// popLocked drops the finished transactions at the head of the buffer and
// confirms the position after them.
func (s *source) popLocked() {
	n := 0
	for n < len(s.txns) && s.txns[n].left == 0 {
		s.r.advance(s.txns[n].end)
		n++
	}
	if n == 0 {
		return
	}
	clear(s.txns[:n])
	s.txns = s.txns[n:]
	select {
	case s.space <- struct{}{}:
	default:
	}
}

func (s *source) receivedEnd() pglogrepl.LSN {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received
}

// reset forgets the buffer (the lock was released: the next leader starts
// from the slot).
func (s *source) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txns, s.bySeq, s.received = nil, map[int64]*item{}, 0
	s.bf = backfillState{}
	s.gen++
}

// finish marks seqs finished and moves the confirmed position.
func (s *source) finish(seqs []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range seqs {
		it := s.bySeq[q]
		if it == nil || it.done {
			continue
		}
		it.done = true
		it.t.left--
		delete(s.bySeq, q)
	}
	s.popLocked()
}

// Claim implements outbox.Source: the unfinished rows received, in commit
// order. AfterSeq (read-ahead) is not supported: it returns nothing.
func (s *source) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Record, error) {
	if p.AfterSeq > 0 {
		return nil, nil
	}
	var exSubj map[string]bool
	var exSeq map[int64]bool
	if len(p.ExcludeSubjects) > 0 {
		exSubj = make(map[string]bool, len(p.ExcludeSubjects))
		for _, x := range p.ExcludeSubjects {
			exSubj[x] = true
		}
	}
	if len(p.ExcludeSeqs) > 0 {
		exSeq = make(map[int64]bool, len(p.ExcludeSeqs))
		for _, x := range p.ExcludeSeqs {
			exSeq[x] = true
		}
	}
	excluded := func(it *item) bool {
		return exSeq[it.rec.Seq] || (exSubj != nil && exSubj[it.rec.Event.Subject])
	}
	gate, err := s.backfillStep(ctx, p.Limit, excluded)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.readAheadLocked(ctx, p.Limit)
	var out []outbox.Record
	txns := s.txns
	if len(s.bf.ts) > 0 {
		// Rows read from the table go first, in seq order: they committed
		// before the streamed rows not yet finished (see backfill.go);
		// while more are to be read, the streamed rows wait.
		bts := s.bf.ts
		if !gate {
			bts = append(bts[:len(bts):len(bts)], txns...)
		}
		txns = bts
	} else if gate {
		return nil, nil
	}
	for _, t := range txns {
		if t.left == 0 {
			continue
		}
		for _, it := range t.items {
			if it.done || excluded(it) {
				continue
			}
			out = append(out, it.rec)
			if len(out) >= p.Limit {
				return out, nil
			}
		}
	}
	return out, nil
}

// unfinished returns the seqs of seqs that are buffered and not finished.
func (s *source) unfinished(seqs []int64) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int64, 0, len(seqs))
	for _, q := range seqs {
		if it := s.bySeq[q]; it != nil && !it.done {
			out = append(out, q)
		}
	}
	return out
}

// xids returns the transaction ids of the buffered seqs.
func (s *source) xids(seqs []int64) map[int64]uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int64]uint32, len(seqs))
	for _, q := range seqs {
		if it := s.bySeq[q]; it != nil {
			out[q] = it.t.xid
		}
	}
	return out
}

// untilDone runs op on the rows of seqs that are not finished until the
// database has done it for every one. The stream can hand a transaction
// over before its rows are visible to other sessions, so a row op does not
// find is tried again, with a short backoff, until it is found, or until
// its transaction is visible to a snapshot taken before op ran and op still
// does not find it (the row was deleted meanwhile: nothing to do). Rows are
// finished (and the slot may move past them) only then. It returns how many
// rows op did.
func (s *source) untilDone(ctx context.Context, seqs []int64, op func([]int64) ([]int64, error)) (int64, error) {
	pending := s.unfinished(seqs)
	var total int64
	backoff := time.Millisecond
	for attempt := 0; len(pending) > 0; attempt++ {
		var visible map[int64]bool
		if attempt >= 2 {
			v, err := s.visible(ctx, pending)
			if err != nil {
				return total, err
			}
			visible = v
		}
		done, err := op(pending)
		if err != nil {
			return total, err
		}
		total += int64(len(done))
		s.finish(done)
		got := make(map[int64]bool, len(done))
		for _, q := range done {
			got[q] = true
		}
		var gone, next []int64
		for _, q := range pending {
			switch {
			case got[q]:
			case visible[q]:
				gone = append(gone, q)
			default:
				next = append(next, q)
			}
		}
		if len(gone) > 0 {
			s.r.cfg.Logger.Warn("pgcdc: streamed rows are no longer waiting in the outbox table (deleted, or parked, by something else); left as they are",
				"table", s.r.cfg.Table, "rows", len(gone), "first_seq", gone[0])
			s.finish(gone)
		}
		pending = next
		if len(pending) == 0 {
			break
		}
		s.r.stats.recheck.Add(1)
		sleep(ctx, backoff)
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
		backoff = nextBackoff(backoff, time.Millisecond, s.r.cfg.MaxBackoff)
	}
	return total, nil
}

// visible reports, per seq, whether its transaction is visible to a new
// snapshot (committed and no longer in progress for other sessions).
func (s *source) visible(ctx context.Context, seqs []int64) (map[int64]bool, error) {
	var xmaxText string
	var xip []string
	err := s.r.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(s)::text, ARRAY(SELECT x::text FROM pg_snapshot_xip(s) AS x)
  FROM pg_current_snapshot() AS s`).Scan(&xmaxText, &xip)
	if err != nil {
		return nil, fmt.Errorf("pgcdc: read snapshot: %w", err)
	}
	sn, err := parseSnapshot(xmaxText, xip)
	if err != nil {
		return nil, fmt.Errorf("pgcdc: %w", err)
	}
	out := map[int64]bool{}
	s.mu.Lock()
	for _, q := range seqs {
		if it := s.bySeq[q]; it != nil && it.t.backfill {
			out[q] = true // read from the table: committed and visible
		}
	}
	s.mu.Unlock()
	for q, x := range s.xids(seqs) {
		if out[q] {
			continue
		}
		out[q] = sn.sees(x)
	}
	return out, nil
}

// Complete implements outbox.Source: rows are finished only once deleted
// (or marked delivered); see untilDone.
func (s *source) Complete(ctx context.Context, seqs []int64, keep bool) (int64, error) {
	q, qRange := s.r.q.del, s.r.q.delRange
	if keep {
		q, qRange = s.r.q.deliver, s.r.q.deliverRange
	}
	return s.untilDone(ctx, seqs, func(p []int64) ([]int64, error) {
		var rows pgx.Rows
		var err error
		if len(p) > 1 && seqrun.Consecutive(p) {
			rows, err = s.r.pool.Query(ctx, qRange, p[0], p[len(p)-1])
		} else {
			rows, err = s.r.pool.Query(ctx, q, p)
		}
		if err != nil {
			return nil, fmt.Errorf("pgcdc: complete: %w", err)
		}
		done, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, fmt.Errorf("pgcdc: complete: %w", err)
		}
		return done, nil
	})
}

// Fail implements outbox.Source: the attempt is recorded in the table (the
// row may need to become visible first, see untilDone) and in the buffer;
// a parked row is finished.
func (s *source) Fail(ctx context.Context, p outbox.FailParams) error {
	_, err := s.untilDone(ctx, []int64{p.Seq}, func([]int64) ([]int64, error) {
		tag, err := s.r.pool.Exec(ctx, s.r.q.fail, p.Seq, p.Reason, p.Park)
		if err != nil {
			return nil, fmt.Errorf("pgcdc: fail: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return nil, nil
		}
		if !p.Park {
			// Counted, not finished: it is claimed again after its delay.
			s.mu.Lock()
			if it := s.bySeq[p.Seq]; it != nil {
				it.rec.Attempts++
				it.rec.LastError = p.Reason
			}
			s.mu.Unlock()
			return nil, errRecorded
		}
		return []int64{p.Seq}, nil
	})
	if err == errRecorded {
		return nil
	}
	return err
}

var errRecorded = fmt.Errorf("pgcdc: attempt recorded")

// Cleanup implements outbox.Source.
func (s *source) Cleanup(ctx context.Context, deliveredBefore, parkedBefore time.Time) (int64, error) {
	return s.r.store.Cleanup(ctx, deliveredBefore, parkedBefore)
}

// Status implements outbox.Source.
func (s *source) Status(ctx context.Context) (outbox.Status, error) { return s.r.store.Status(ctx) }

// Listen implements outbox.Source: the stream wakes the engine whenever a
// transaction with rows arrives.
func (s *source) Listen(ctx context.Context, wake func()) error {
	s.mu.Lock()
	s.wake = wake
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.wake = nil
	s.mu.Unlock()
	return ctx.Err()
}

// TryLock implements outbox.Source: it takes the outbox's leadership lock
// and, while it is held, streams from the slot into the buffer.
func (s *source) TryLock(ctx context.Context) (outbox.Lock, error) {
	inner, err := s.r.store.TryLock(ctx)
	if inner == nil || err != nil {
		return nil, err
	}
	s.reset()
	// The partition count cannot change while the lock is held
	// (SetPartitions takes it), but it may have changed while this relay
	// stood by: then stop (Run returns ErrPartitioned) rather than stream.
	if err := s.r.checkPartitions(ctx); err != nil {
		if !errors.Is(err, ErrPartitioned) {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = inner.Release(rctx)
			rcancel()
			return nil, err
		}
		l := &streamLock{inner: inner, cancel: func() {}, lost: make(chan struct{}), done: make(chan struct{}), src: s, err: err}
		close(l.done)
		l.markLost()
		return l, nil
	}
	// The full backfill list is taken before the stream starts: every
	// transaction the stream then hands over that committed before it is
	// either on it or done (see backfill.go). If every transaction that
	// committed before skipTo is visible to the list's snapshot, the slot
	// skips to skipTo first (fastForward).
	skipTo := s.skipPoint(ctx)
	if err := s.listBackfill(ctx, false); err != nil {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = inner.Release(rctx)
		rcancel()
		return nil, err
	}
	s.r.confirmed.Store(0)
	sctx, cancel := context.WithCancel(ctx)
	l := &streamLock{inner: inner, cancel: cancel, lost: make(chan struct{}), done: make(chan struct{}), src: s}
	go func() {
		defer close(l.done)
		s.fastForward(sctx, skipTo)
		if err := s.r.stream(sctx); err != nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
		}
		l.markLost()
	}()
	go func() {
		select {
		case <-inner.Lost():
			l.markLost()
		case <-l.done:
		}
	}()
	s.r.cfg.Logger.Info("pgcdc: streaming", "slot", s.r.cfg.Slot)
	return l, nil
}

// streamLock is the leadership lock with the stream that runs under it.
type streamLock struct {
	inner  outbox.Lock
	cancel context.CancelFunc
	src    *source
	lost   chan struct{}
	once   sync.Once
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

var _ outbox.SourceError = (*streamLock)(nil)

func (l *streamLock) markLost()             { l.once.Do(func() { close(l.lost) }) }
func (l *streamLock) Lost() <-chan struct{} { return l.lost }

// Err implements outbox.SourceError: ErrSlotNotFound if the slot vanished.
func (l *streamLock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Release stops the stream (its last status update reports the confirmed
// position), forgets the buffer and releases the lock.
func (l *streamLock) Release(ctx context.Context) error {
	l.cancel()
	<-l.done
	l.src.ahead.Wait() // the engine's context has ended: a read-ahead stops
	l.src.reset()
	return l.inner.Release(ctx)
}
