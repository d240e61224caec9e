package pgcdc

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/eventkit/eventkit/outbox"
)

// Backfill: rows the stream will never carry are read from the table.
//
// The slot streams the inserts committed after its confirmed position.
// Rows committed before it and still waiting in the table are not in the
// stream: rows committed before the slot existed, rows requeued after
// parking (an UPDATE, and the publication carries inserts only), and any
// row a previous leader left behind. So whenever a relay becomes the leader
// it lists, in one snapshot, the seqs of every waiting row it does not hold
// already (the low watermark is the stream's start, the high watermark the
// WAL insert position read with the list), and then reads those rows from
// the table in seq order, BatchSize at a time (a next chunk as soon as the
// ones held offer less than a batch to claim, up to maxHeldChunks: see
// backfillStep); while it does, Claim returns only those rows (the
// streamed ones wait in the buffer). A streamed row
// of a transaction visible to the list's snapshot is dropped (its rows are
// on the list, or no longer waiting); the full list is taken before the
// stream starts.
// While leading, it lists requeued rows (attempts = 0 with a last error:
// what Requeue leaves) every BackfillInterval in the same way.
//
// Order: within a subject, Add serializes writers, so the rows of a subject
// visible in one snapshot are a prefix of its commit order; the listed rows
// go out first, in seq order, and the subject's later rows come from the
// stream after them. A row of the list that commits late (not visible to the
// snapshot) is not on it: it comes from the stream, with its subject's later
// rows behind it. Duplicates: a listed row that is also streamed is
// published once; a kill during a backfill publishes at most the rows in
// flight again (the next leader lists them again): the same bound as a
// kill of the stream.
type backfillState struct {
	need     bool    // list the waiting rows at the next Claim
	requeued bool    // list only requeued rows (the periodic scan)
	list     []int64 // seqs still to read, ascending
	seen     map[int64]bool
	snap     *snapshot // the snapshot of the full list
	ts       []*txn    // the chunks read and not all finished, in seq order
	lastScan time.Time
	reading  chan struct{} // a read-ahead is in flight until closed
}

// dedupeLocked drops the streamed rows the stream carries again although
// the backfill has them or they are done: a transaction that committed
// before the full list was taken (end <= hw) held, at that time, only rows
// that were listed (read from the table), already buffered (streamed before
// the list: not dropped, they were pushed earlier) or no longer waiting
// (completed or parked, maybe by an earlier leader). Requeued rows listed by
// the periodic scan are dropped by seq.
func (s *source) dedupeLocked(t *txn) {
	if s.bf.snap != nil && s.bf.snap.sees(t.xid) {
		clear(t.items)
		t.items = t.items[:0]
		return
	}
	if len(s.bf.seen) == 0 {
		return
	}
	k := 0
	for _, it := range t.items {
		if s.bf.seen[it.rec.Seq] {
			delete(s.bf.seen, it.rec.Seq)
			continue
		}
		t.items[k] = it
		k++
	}
	clear(t.items[k:])
	t.items = t.items[:k]
}

// maxHeldChunks bounds the rows read from the table and not finished:
// at most this many chunks (BatchSize rows each) are held while the heads
// of their subjects wait for a retry.
const maxHeldChunks = 4

// backfillStep lists or reads the next backfill rows if due, and reports
// whether streamed rows must wait (rows of the list are still unread).
// The next chunk is read as soon as the chunks held offer fewer than limit
// rows to claim (ex: rows excluded by the engine, such as the subjects
// whose head waits for a retry), so other subjects flow while one
// subject's head is retried, as on the polling path; order within a
// subject holds because Claim hands the chunks out in seq order and the
// engine holds back a subject behind its retried head.
func (s *source) backfillStep(ctx context.Context, limit int, ex func(*item) bool) (gate bool, err error) {
	s.mu.Lock()
	s.dropFinishedChunksLocked()
	if !s.bf.need && len(s.bf.list) == 0 && len(s.bf.ts) == 0 && time.Since(s.bf.lastScan) >= s.r.cfg.BackfillInterval {
		s.bf.need, s.bf.requeued = true, true
	}
	need, requeued := s.bf.need, s.bf.requeued
	s.mu.Unlock()
	if need {
		if err := s.listBackfill(ctx, requeued); err != nil {
			return false, err
		}
	}
	for {
		s.mu.Lock()
		next := len(s.bf.list) > 0 && (len(s.bf.ts) == 0 ||
			(len(s.bf.ts) < maxHeldChunks && s.claimableLocked(ex, limit) < limit))
		reading := s.bf.reading
		s.mu.Unlock()
		if !next {
			break
		}
		if reading != nil { // the next chunk is being read ahead: wait for it
			select {
			case <-reading:
			case <-ctx.Done():
				return false, ctx.Err()
			}
			continue
		}
		if err := s.readBackfill(ctx, limit); err != nil {
			return false, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bf.list) > 0, nil
}

// dropFinishedChunksLocked forgets the backfill chunks whose rows are all
// finished.
func (s *source) dropFinishedChunksLocked() {
	k := 0
	for _, t := range s.bf.ts {
		if t.left > 0 {
			s.bf.ts[k] = t
			k++
		}
	}
	clear(s.bf.ts[k:])
	s.bf.ts = s.bf.ts[:k]
}

// claimableLocked counts, up to limit, the unfinished rows of the chunks
// held that a Claim excluding ex would return.
func (s *source) claimableLocked(ex func(*item) bool, limit int) int {
	n := 0
	for _, t := range s.bf.ts {
		for _, it := range t.items {
			if it.done || ex(it) {
				continue
			}
			if n++; n >= limit {
				return n
			}
		}
	}
	return n
}

// listBackfill takes the list of waiting rows the buffer does not hold, in
// one snapshot, with the WAL insert position.
func (s *source) listBackfill(ctx context.Context, requeued bool) error {
	cond := ``
	if requeued {
		cond = ` AND attempts = 0 AND last_error IS NOT NULL`
	}
	var seqs []int64
	var xmaxText string
	var xip []string
	err := s.r.pool.QueryRow(ctx, `SELECT ARRAY(SELECT seq FROM `+s.r.cfg.Table+`
    WHERE delivered_at IS NULL AND parked_at IS NULL`+cond+` ORDER BY seq),
  pg_snapshot_xmax(pg_current_snapshot())::text, ARRAY(SELECT x::text FROM pg_snapshot_xip(pg_current_snapshot()) AS x)`).Scan(&seqs, &xmaxText, &xip)
	if err != nil {
		return fmt.Errorf("pgcdc: backfill: list rows: %w", err)
	}
	snap, err := parseSnapshot(xmaxText, xip)
	if err != nil {
		return fmt.Errorf("pgcdc: backfill: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bf.need = false
	s.bf.lastScan = time.Now()
	k := 0
	for _, q := range seqs {
		if s.bySeq[q] == nil { // not held already (streamed, or read before)
			seqs[k] = q
			k++
		}
	}
	seqs = seqs[:k]
	if !requeued {
		s.bf.snap = snap
	}
	if len(seqs) == 0 {
		return nil
	}
	if requeued {
		if s.bf.seen == nil {
			s.bf.seen = make(map[int64]bool, len(seqs))
		}
		for _, q := range seqs {
			s.bf.seen[q] = true
		}
	}
	s.bf.list = append(s.bf.list, seqs...)
	if !requeued {
		s.r.cfg.Logger.Info("pgcdc: backfilling rows the stream does not carry", "table", s.r.cfg.Table, "rows", len(seqs))
	} else {
		s.r.cfg.Logger.Info("pgcdc: backfilling requeued rows", "table", s.r.cfg.Table, "rows", len(seqs))
	}
	return nil
}

// Skipping what the backfill delivers: the rows of every transaction
// visible to the full list's snapshot are on the list (or no longer
// waiting), so the stream's copy of such a transaction is dropped. When the
// slot is behind (a backlog, or a previous leader's rows in flight), the
// server would decode and send all of it, and the relay parse it, only to
// drop it: the same work again for every row, on top of reading it from
// the table. So the slot first skips to a point P before which every
// commit is visible to the list's snapshot: P is the WAL insert position
// read before the list, and the list is taken only once every transaction
// that had an id at P (the only ones whose commit record can be before P
// without being visible then) has ended: a transaction id is taken after
// P, and a new snapshot's xmin must be past it. pg_replication_slot_advance then moves the
// slot to P in fast-forward mode (the server reads the WAL without
// decoding rows or running the output plugin), and the stream starts at
// P: every commit after P comes from the stream, every one before it was
// visible to the list. If the transactions in progress do not end within
// skipWait (a long transaction elsewhere in the database) or the advance
// fails, nothing is skipped: the stream starts at the slot's position and
// its copies are dropped as before.

// skipWait bounds the wait for the transactions in progress at the skip
// point.
const skipWait = 2 * time.Second

// skipPoint returns the skip point P, or 0 if nothing may be skipped. It
// must be called before the full list is taken.
func (s *source) skipPoint(ctx context.Context) pglogrepl.LSN {
	var lsnText, next string
	if err := s.r.pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsnText); err != nil {
		return 0
	}
	p, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return 0
	}
	// A transaction id assigned after P: every transaction that had one at
	// P (every one that can have a commit record before P) has a smaller
	// one, so once a snapshot's xmin is past it, they have all ended.
	if err := s.r.pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&next); err != nil {
		return 0
	}
	deadline := time.Now().Add(skipWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		var done bool
		if err := s.r.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::text::xid8`, next).Scan(&done); err != nil || ctx.Err() != nil {
			return 0
		}
		if done {
			return p
		}
		if time.Now().After(deadline) {
			s.r.cfg.Logger.Debug("pgcdc: transactions in progress did not end; the stream starts at the slot's position", "slot", s.r.cfg.Slot)
			return 0
		}
		sleep(ctx, wait)
	}
}

// fastForward moves the slot to p (if p is after it) in fast-forward mode,
// before the stream starts. A failure only costs the skip.
func (s *source) fastForward(ctx context.Context, p pglogrepl.LSN) {
	if p == 0 {
		return
	}
	if _, err := s.r.pool.Exec(ctx, `SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)`, s.r.cfg.Slot, p.String()); err != nil {
		if ctx.Err() == nil {
			s.r.cfg.Logger.Debug("pgcdc: could not skip the slot to the backfill's position; streaming from the slot's", "slot", s.r.cfg.Slot, "err", err)
		}
	}
}

// readAheadLocked starts reading the next chunk of the list in the
// background, if there is one to read and room to hold it, so that the
// table read overlaps the publishing of the rows claimed now (as the
// polling relay reads its next batch ahead). The engine's next Claim uses
// it (readBackfill waits for a read in flight); it never hands out a chunk
// before the ones before it, so the order is that of the reads in Claim.
func (s *source) readAheadLocked(ctx context.Context, limit int) {
	if s.bf.reading != nil || len(s.bf.list) == 0 || len(s.bf.ts) >= maxHeldChunks || ctx.Err() != nil {
		return
	}
	done := make(chan struct{})
	s.bf.reading = done
	s.ahead.Add(1)
	go func() {
		defer s.ahead.Done()
		err := s.readBackfill(ctx, limit)
		s.mu.Lock()
		if s.bf.reading == done {
			s.bf.reading = nil
		}
		s.mu.Unlock()
		close(done)
		if err != nil && ctx.Err() == nil {
			// The engine's next Claim reads the chunk again (and reports
			// the error if it persists).
			s.r.cfg.Logger.Debug("pgcdc: backfill read-ahead failed", "err", err)
		}
	}()
}

// readBackfill reads the next rows of the list from the table, in seq order.
// Rows that are gone (completed or parked meanwhile) are dropped; rows not on
// the list (committed after it was taken) are left to the stream. Reads are
// serialized (the engine's and the read-ahead's); one that began before the
// buffer was reset is dropped.
func (s *source) readBackfill(ctx context.Context, limit int) error {
	s.bfRead.Lock()
	defer s.bfRead.Unlock()
	s.mu.Lock()
	gen := s.gen
	if len(s.bf.list) == 0 {
		s.mu.Unlock()
		return nil
	}
	after := s.bf.list[0] - 1
	n := min(limit, len(s.bf.list))
	last := s.bf.list[n-1]
	s.mu.Unlock()
	var recs []outbox.Record
	for {
		rs, err := s.r.store.Claim(ctx, outbox.ClaimParams{Limit: limit, AfterSeq: after})
		if err != nil {
			return fmt.Errorf("pgcdc: backfill: read rows: %w", err)
		}
		for _, r := range rs {
			if r.Seq <= last {
				recs = append(recs, r)
			}
		}
		if len(rs) < limit || rs[len(rs)-1].Seq >= last {
			break
		}
		after = rs[len(rs)-1].Seq
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen || len(s.bf.list) < n || s.bf.list[n-1] != last {
		return nil // reset meanwhile: a new leadership lists again
	}
	want := make(map[int64]bool, n)
	for _, q := range s.bf.list[:n] {
		want[q] = true
	}
	s.bf.list = s.bf.list[n:]
	if len(s.bf.list) == 0 {
		s.bf.list = nil
	}
	t := &txn{backfill: true}
	for _, r := range recs {
		if !want[r.Seq] || s.bySeq[r.Seq] != nil {
			continue
		}
		it := &item{rec: r, t: t}
		t.items = append(t.items, it)
		s.bySeq[r.Seq] = it
	}
	t.left = len(t.items)
	if t.left > 0 {
		s.bf.ts = append(s.bf.ts, t)
		s.r.stats.backfilled.Add(int64(t.left))
	}
	return nil
}

// snapshot is a database snapshot's visibility: transactions below xmax and
// not in xip are visible.
type snapshot struct {
	xmax uint64
	xip  map[uint64]bool
}

func parseSnapshot(xmaxText string, xip []string) (*snapshot, error) {
	xmax, err := strconv.ParseUint(xmaxText, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	sn := &snapshot{xmax: xmax, xip: make(map[uint64]bool, len(xip))}
	for _, x := range xip {
		if v, err := strconv.ParseUint(x, 10, 64); err == nil {
			sn.xip[v] = true
		}
	}
	return sn, nil
}

// sees reports whether the transaction of 32-bit id x (as the stream gives
// it) is visible to the snapshot.
func (sn *snapshot) sees(x uint32) bool {
	// Widen the 32-bit xid of the stream to the epoch of xmax.
	full := sn.xmax&^0xFFFFFFFF | uint64(x)
	if full >= sn.xmax && full >= 1<<32 {
		full -= 1 << 32
	}
	return full < sn.xmax && !sn.xip[full]
}
