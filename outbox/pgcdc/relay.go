package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
	"github.com/eventkit/eventkit/outbox/postgres"
)

// Relay streams committed outbox inserts from a logical replication slot to
// a broker.Publisher. See the package doc for its guarantees.
type Relay struct {
	pool  *pgxpool.Pool
	pub   broker.Publisher
	cfg   Config
	store *postgres.Store

	schema, base string
	names        sync.Mutex // guards the resolution of cfg.Slot and cfg.Publication (setup.go)

	confirmed atomic.Uint64 // published, completed (rows deleted) and so safe to confirm
	lastData  atomic.Int64  // unix nanos of the last change received
	lag       atomic.Int64
	streaming atomic.Bool
	stats     struct {
		delivered, parked, publishErrors, storeErrors, batches, txns, reconnects, heartbeats atomic.Int64
	}
}

// New returns a CDC relay for the outbox table of cfg on pool's database,
// publishing to pub. pub may be nil when the relay is only used for Setup,
// Teardown, Status and Lag. New does not touch the database.
func New(pool *pgxpool.Pool, pub broker.Publisher, cfg Config) (*Relay, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	store, err := postgres.New(pool, postgres.Config{Table: c.Table, Logger: c.Logger})
	if err != nil {
		return nil, err
	}
	c.Table = store.Table()
	base := sqlutil.Base(c.Table)
	schema := strings.TrimSuffix(strings.TrimSuffix(c.Table, base), ".")
	return &Relay{pool: pool, pub: pub, cfg: c, store: store, schema: schema, base: base}, nil
}

// Config returns the effective configuration, with the defaults filled in.
// The default slot and publication names depend on the database: they are
// empty until the relay has resolved them (Names, Setup, Run, Teardown,
// Status and Lag do).
func (r *Relay) Config() Config {
	r.names.Lock()
	defer r.names.Unlock()
	return r.cfg
}

// Stats are a relay's counters since it was created.
type Stats struct {
	Delivered     int64 // events confirmed by the broker and completed
	Parked        int64 // events parked (permanent rejection or undecodable row)
	PublishErrors int64 // failed Publish calls (each retry counts)
	StoreErrors   int64 // failed database calls (deletes, parks)
	Batches       int64 // publish rounds
	Transactions  int64 // transactions received
	Reconnects    int64 // replication sessions that ended with an error
	Heartbeats    int64 // heartbeat messages written
	// ConfirmedLSN is the position up to which everything has been
	// published and confirmed (the slot follows within StatusInterval).
	ConfirmedLSN pglogrepl.LSN
	// LagBytes is the slot's lag at the last measurement (see LagInterval).
	LagBytes int64
	// Streaming: the relay holds the lock and a replication session is open.
	Streaming bool
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	s := &r.stats
	return Stats{
		Delivered: s.delivered.Load(), Parked: s.parked.Load(), PublishErrors: s.publishErrors.Load(),
		StoreErrors: s.storeErrors.Load(), Batches: s.batches.Load(), Transactions: s.txns.Load(),
		Reconnects: s.reconnects.Load(), Heartbeats: s.heartbeats.Load(),
		ConfirmedLSN: pglogrepl.LSN(r.confirmed.Load()), LagBytes: r.lag.Load(), Streaming: r.streaming.Load(),
	}
}

// advance moves the confirmed position forward (never back).
func (r *Relay) advance(lsn pglogrepl.LSN) {
	for {
		cur := r.confirmed.Load()
		if uint64(lsn) <= cur || r.confirmed.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Run relays events until ctx ends, then returns nil. It first takes the
// outbox's leadership lock (the one the polling relay of outbox/postgres
// takes, so a polling relay and a CDC relay never run at once on a table,
// and further CDC relays stand by), then streams from the slot, reconnecting
// with backoff when the connection breaks. It returns at once, with
// ErrSlotNotFound, ErrPublicationNotFound or ErrMismatch, if the slot or
// the publication does not exist in this database or does not fit (see
// Setup). Every goroutine it starts has ended when it returns.
func (r *Relay) Run(ctx context.Context) error {
	if r.pub == nil {
		return ErrNoPublisher
	}
	if err := r.preflight(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	log := r.cfg.Logger
	for {
		lock, err := r.store.TryLock(ctx)
		if err != nil && ctx.Err() == nil {
			r.storeError("lock", err)
		}
		if lock != nil {
			log.Info("pgcdc: relay is the leader", "slot", r.cfg.Slot)
			err := r.lead(ctx, lock)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = lock.Release(rctx)
			cancel()
			if err != nil {
				return err
			}
			if ctx.Err() == nil {
				log.Warn("pgcdc: relay lost the leadership lock; standing by", "slot", r.cfg.Slot)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.LockRetryInterval):
		}
	}
}

// lead streams while lock is held. It returns a non-nil error only for a
// condition retrying cannot fix (the slot is gone).
func (r *Relay) lead(ctx context.Context, lock outbox.Lock) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(2)
	go func() {
		defer wg.Done()
		select {
		case <-lock.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	go func() {
		defer wg.Done()
		r.monitor(ctx)
	}()
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		t0 := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fatal(err) {
			r.cfg.Logger.Error("pgcdc: replication slot or publication is gone or not the relay's; stopping", "slot", r.cfg.Slot, "err", err)
			return err
		}
		r.stats.reconnects.Add(1)
		r.cfg.Metrics.Error("replication")
		if time.Since(t0) > 30*time.Second {
			backoff = 0
		}
		backoff = nextBackoff(backoff, r.cfg.MinBackoff, r.cfg.MaxBackoff)
		r.cfg.Logger.Warn("pgcdc: replication session ended; reconnecting", "slot", r.cfg.Slot, "err", err, "in", backoff)
		sleep(ctx, backoff)
	}
	return nil
}

func nextBackoff(prev, lo, hi time.Duration) time.Duration {
	if prev <= 0 {
		return lo
	}
	return min(prev*2, hi)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// txn is one committed transaction as received.
type txn struct {
	end  pglogrepl.LSN // end of the commit record: confirm this once done
	recs []outbox.Record
	bad  []badRow
}

// badRow is an inserted row that is not a valid event; it is parked.
type badRow struct {
	seq int64
	err error
}

// completion is a published batch whose rows must be deleted before its
// position is confirmed.
type completion struct {
	seqs []int64
	end  pglogrepl.LSN
	n    int
}

// session runs one replication connection: it reads (this goroutine),
// publishes (one goroutine) and completes (one goroutine) until the
// connection breaks or ctx ends.
func (r *Relay) session(ctx context.Context) error {
	start, err := r.slotPosition(ctx)
	if err != nil {
		return err
	}
	// The in-memory position may be ahead of the slot's if the last
	// status update did not reach the server: starting there skips the
	// transactions already published.
	if c := pglogrepl.LSN(r.confirmed.Load()); c > start {
		start = c
	} else {
		r.confirmed.Store(uint64(start))
	}
	conn, err := r.connect(ctx)
	if err != nil {
		return fmt.Errorf("pgcdc: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(cctx)
		cancel()
	}()
	args := []string{"proto_version '1'", "publication_names '" + r.cfg.Publication + "'"}
	if serverMajor(conn) >= 14 {
		// Values in binary send format: bytea is sent raw, not hex-encoded,
		// which halves what the server encodes and sends for the payload.
		args = append(args, "binary 'true'")
	}
	err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: args,
	})
	if err != nil {
		return fmt.Errorf("pgcdc: start replication from %s: %w", start, err)
	}
	r.streaming.Store(true)
	defer r.streaming.Store(false)
	r.lastData.Store(time.Now().UnixNano())

	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	txs := make(chan *txn, r.cfg.QueueSize)
	// Few published batches may wait for their rows to be deleted: the
	// publisher must not run far ahead of the confirmed position, since
	// everything between the two is published again after a crash.
	done := make(chan completion, 4)
	finished := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(done)
		r.publishLoop(pctx, txs, done)
	}()
	go func() {
		defer wg.Done()
		r.completeLoop(pctx, done)
	}()
	go func() { wg.Wait(); close(finished) }()

	rerr := r.read(ctx, conn, txs, start, finished)
	close(txs)
	if ctx.Err() == nil {
		// The connection broke: finish what was received, briefly.
		t := time.NewTimer(r.cfg.DrainTimeout)
		select {
		case <-finished:
		case <-t.C:
		}
		t.Stop()
	}
	pcancel()
	<-finished
	if !conn.IsClosed() { // shutting down: tell the server what is confirmed
		_, _ = r.sendStatus(conn)
	}
	return rerr
}

// connect opens a replication connection with the pool's settings.
func (r *Relay) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg := r.pool.Config().ConnConfig.Config.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["bytea_output"] = "hex"
	cfg.RuntimeParams["DateStyle"] = "ISO"
	cfg.RuntimeParams["TimeZone"] = "UTC"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "eventkit-pgcdc"
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

// serverMajor returns the server's major version (0 if unknown).
func serverMajor(conn *pgconn.PgConn) int {
	v := conn.ParameterStatus("server_version")
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// sendStatus reports the confirmed position (as written, flushed and
// applied) and returns it.
func (r *Relay) sendStatus(conn *pgconn.PgConn) (pglogrepl.LSN, error) {
	pos := pglogrepl.LSN(r.confirmed.Load())
	return pos, pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos,
	})
}

// read receives the replication stream, assembles transactions and hands
// them to the publisher in commit order. It reports only the CONFIRMED
// position to the server (never the received one), every StatusInterval
// and whenever the server asks.
func (r *Relay) read(ctx context.Context, conn *pgconn.PgConn, txs chan<- *txn, start pglogrepl.LSN, finished <-chan struct{}) error {
	rels := map[uint32]*relation{}
	var cur *txn
	received := start // end of the last commit received
	nextStatus := time.Now()
	var sentPos uint64
	var sentAt time.Time
	// While events flow, a new confirmed position is reported within
	// statusGap rather than StatusInterval: fewer duplicates after a crash.
	statusGap := min(100*time.Millisecond, r.cfg.StatusInterval)
	var dl deadline // one deadline context per status interval, not one per message
	defer dl.stop()
	for {
		now := time.Now()
		if c := r.confirmed.Load(); c != sentPos && now.Sub(sentAt) >= statusGap {
			nextStatus = now
		}
		if !now.Before(nextStatus) {
			pos, err := r.sendStatus(conn)
			if err != nil {
				return fmt.Errorf("pgcdc: send status: %w", err)
			}
			sentPos, sentAt = uint64(pos), now
			nextStatus = now.Add(r.cfg.StatusInterval)
		}
		until := nextStatus
		if uint64(received) > sentPos { // something is in flight: look again soon
			if t := now.Truncate(statusGap).Add(statusGap); t.Before(until) {
				until = t
			}
		}
		msg, err := conn.ReceiveMessage(dl.get(ctx, until))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("pgcdc: receive: %w", err)
		}
		select {
		case <-finished: // the publisher stopped (cannot happen while txs is open, but be safe)
			return errors.New("pgcdc: publisher stopped")
		default:
		}
		var data []byte
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			data = m.Data
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		case *pgproto3.CopyDone:
			return errors.New("pgcdc: server ended the replication stream")
		default:
			continue
		}
		if len(data) == 0 {
			continue
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
			if err != nil {
				return fmt.Errorf("%w: %v", ErrProtocol, err)
			}
			// Idle: nothing received is unconfirmed and no transaction is
			// open, so everything up to the server's WAL end is either
			// confirmed or irrelevant to this slot.
			if cur == nil && uint64(received) <= r.confirmed.Load() {
				r.advance(ka.ServerWALEnd)
			}
			if ka.ReplyRequested {
				nextStatus = time.Now()
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(data[1:])
			if err != nil {
				return fmt.Errorf("%w: %v", ErrProtocol, err)
			}
			m, err := decodeMessage(xld.WALData)
			if err != nil {
				return err
			}
			r.lastData.Store(time.Now().UnixNano())
			switch m := m.(type) {
			case beginMsg:
				cur = &txn{}
			case relationMsg:
				rel, err := newRelation(m, r.schema, r.base)
				if err != nil {
					return err
				}
				rels[m.id] = rel
			case insertMsg:
				rel := rels[m.relID]
				if rel == nil {
					return fmt.Errorf("%w: insert into unannounced relation %d", ErrProtocol, m.relID)
				}
				if cur == nil {
					return fmt.Errorf("%w: insert outside a transaction", ErrProtocol)
				}
				if !rel.ours {
					continue
				}
				rec, err := decodeRow(rel, m.cols)
				if err != nil {
					cur.bad = append(cur.bad, badRow{seq: rec.Seq, err: err})
					continue
				}
				cur.recs = append(cur.recs, rec)
			case commitMsg:
				if cur == nil {
					return fmt.Errorf("%w: commit without begin", ErrProtocol)
				}
				cur.end = m.endLSN
				received = m.endLSN
				r.stats.txns.Add(1)
				t := cur
				cur = nil
				for sent := false; !sent; {
					timer := time.NewTimer(time.Until(nextStatus))
					select {
					case txs <- t:
						sent = true
					case <-ctx.Done():
						timer.Stop()
						return nil
					case <-timer.C:
						// The publisher is behind (the broker may be down):
						// keep the server from timing us out.
						pos, err := r.sendStatus(conn)
						if err != nil {
							timer.Stop()
							return fmt.Errorf("pgcdc: send status: %w", err)
						}
						sentPos, sentAt = uint64(pos), time.Now()
						nextStatus = time.Now().Add(r.cfg.StatusInterval)
					}
					timer.Stop()
				}
			}
		}
	}
}

// deadline keeps a context with a deadline for as long as the deadline
// stays the same.
type deadline struct {
	ctx    context.Context
	cancel context.CancelFunc
	until  time.Time
}

func (d *deadline) get(parent context.Context, until time.Time) context.Context {
	if d.ctx == nil || !d.until.Equal(until) || d.ctx.Err() != nil {
		d.stop()
		d.ctx, d.cancel = context.WithDeadline(parent, until)
		d.until = until
	}
	return d.ctx
}

func (d *deadline) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}

// publishLoop takes transactions in commit order, batches those that are
// available (up to BatchSize events), publishes them and hands the batch
// to completeLoop.
func (r *Relay) publishLoop(ctx context.Context, txs <-chan *txn, done chan<- completion) {
	for {
		var first *txn
		select {
		case t, ok := <-txs:
			if !ok {
				return
			}
			first = t
		case <-ctx.Done():
			return
		}
		batch := []*txn{first}
		n := len(first.recs)
		closed := false
	collect:
		for n < r.cfg.BatchSize {
			select {
			case t, ok := <-txs:
				if !ok {
					closed = true
					break collect
				}
				batch = append(batch, t)
				n += len(t.recs)
			default:
				break collect
			}
		}
		var recs []outbox.Record
		var bad []badRow
		if len(batch) == 1 {
			recs, bad = first.recs, first.bad
		} else {
			recs = make([]outbox.Record, 0, n)
			for _, t := range batch {
				recs = append(recs, t.recs...)
				bad = append(bad, t.bad...)
			}
		}
		parked, ok := r.deliver(ctx, recs, bad)
		if !ok {
			return
		}
		c := completion{end: batch[len(batch)-1].end, n: len(recs) - len(parked), seqs: make([]int64, 0, len(recs))}
		for _, rec := range recs {
			if !parked[rec.Seq] {
				c.seqs = append(c.seqs, rec.Seq)
			}
		}
		select {
		case done <- c:
		case <-ctx.Done():
			return
		}
		if closed {
			return
		}
	}
}

// deliver publishes recs (in chunks of BatchSize; per chunk one Publish per
// topic, topics concurrently, each in commit order) until the broker has
// accepted every event or rejected it permanently (then it is parked). It
// retries transient failures with backoff forever. It reports false if ctx
// ended first.
func (r *Relay) deliver(ctx context.Context, recs []outbox.Record, bad []badRow) (map[int64]bool, bool) {
	parked := map[int64]bool{}
	var mu sync.Mutex
	for _, b := range bad {
		r.cfg.Logger.Error("pgcdc: outbox row is not a valid event; parking it", "table", r.cfg.Table, "seq", b.seq, "err", b.err)
		if b.seq != 0 && !r.park(ctx, b.seq, "", b.err) {
			return nil, false
		}
	}
	for start := 0; start < len(recs); start += r.cfg.BatchSize {
		chunk := recs[start:min(start+r.cfg.BatchSize, len(recs))]
		r.stats.batches.Add(1)
		var order []string
		byTopic := map[string][]outbox.Record{}
		for _, rec := range chunk {
			if _, ok := byTopic[rec.Topic]; !ok {
				order = append(order, rec.Topic)
			}
			byTopic[rec.Topic] = append(byTopic[rec.Topic], rec)
		}
		if len(order) == 1 {
			p, ok := r.publishTopic(ctx, order[0], chunk)
			if !ok {
				return nil, false
			}
			for _, s := range p {
				parked[s] = true
			}
			continue
		}
		var wg sync.WaitGroup
		var failed atomic.Bool
		for _, topic := range order {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, ok := r.publishTopic(ctx, topic, byTopic[topic])
				if !ok {
					failed.Store(true)
				}
				mu.Lock()
				for _, s := range p {
					parked[s] = true
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if failed.Load() {
			return nil, false
		}
	}
	return parked, true
}

// publishTopic publishes recs to topic until each is accepted or parked. On
// a transient failure it publishes again from the first event that failed
// (later events of the call are sent again even if they were accepted, so
// that the last copy of each event is in commit order). It returns the
// parked seqs, and false if ctx ended.
func (r *Relay) publishTopic(ctx context.Context, topic string, recs []outbox.Record) ([]int64, bool) {
	var parked []int64
	pending := recs
	backoff := time.Duration(0)
	events := make([]eventkit.Event, len(recs))
	for len(pending) > 0 {
		events = events[:len(pending)]
		for i := range pending {
			events[i] = pending[i].Event
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		t0 := time.Now()
		err := r.pub.Publish(pctx, topic, events...)
		cancel()
		r.cfg.Metrics.PublishLatency(topic, time.Since(t0), err == nil)
		if err == nil {
			return parked, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		failed := map[int]error{}
		var pe *broker.PublishError
		if errors.As(err, &pe) {
			for _, f := range pe.Failed {
				if f.Index >= 0 && f.Index < len(pending) {
					failed[f.Index] = f.Err
				}
			}
		}
		if len(failed) == 0 {
			for i := range pending {
				failed[i] = err
			}
		}
		firstTransient := -1
		var firstErr error
		for i := range pending {
			ferr, bad := failed[i]
			if !bad {
				continue
			}
			if !eventkit.IsPermanent(ferr) {
				firstTransient, firstErr = i, ferr
				break
			}
			if !r.park(ctx, pending[i].Seq, topic, ferr) {
				return nil, false
			}
			r.cfg.Logger.Error("pgcdc: broker rejected event permanently; parked",
				"topic", topic, "id", pending[i].Event.ID, "seq", pending[i].Seq, "err", ferr)
			parked = append(parked, pending[i].Seq)
		}
		if firstTransient < 0 {
			return parked, true
		}
		pending = pending[firstTransient:]
		r.stats.publishErrors.Add(1)
		r.cfg.Metrics.Error("publish")
		backoff = nextBackoff(backoff, r.cfg.MinBackoff, r.cfg.MaxBackoff)
		r.cfg.Logger.Warn("pgcdc: publish failed; will retry (the slot does not advance meanwhile)",
			"topic", topic, "events", len(pending), "err", firstErr, "in", backoff)
		sleep(ctx, backoff)
		if ctx.Err() != nil {
			return nil, false
		}
	}
	return parked, true
}

// park marks a row parked with the reason (it stays in the table for an
// operator). It reports false if ctx ended first.
func (r *Relay) park(ctx context.Context, seq int64, topic string, reason error) bool {
	msg := reason.Error()
	if len(msg) > 2000 {
		msg = msg[:2000]
	}
	if err := r.retryStore(ctx, "park", func() error {
		return r.store.Fail(ctx, outbox.FailParams{Seq: seq, Reason: msg, Park: true})
	}); err != nil {
		return false
	}
	r.stats.parked.Add(1)
	r.cfg.Metrics.Parked(topic, 1)
	return true
}

// completeLoop deletes (or marks delivered) the rows of published batches,
// in order, then confirms their position.
func (r *Relay) completeLoop(ctx context.Context, done <-chan completion) {
	keep := r.cfg.Retention > 0
	for {
		var c completion
		select {
		case x, ok := <-done:
			if !ok {
				return
			}
			c = x
		case <-ctx.Done():
			return
		}
	more:
		for len(c.seqs) < 10*r.cfg.BatchSize {
			select {
			case x, ok := <-done:
				if !ok {
					break more
				}
				c.seqs = append(c.seqs, x.seqs...)
				c.end, c.n = x.end, c.n+x.n
			default:
				break more
			}
		}
		if len(c.seqs) > 0 {
			if err := r.retryStore(ctx, "complete", func() error { return r.store.Complete(ctx, c.seqs, keep) }); err != nil {
				return
			}
		}
		r.advance(c.end)
		if c.n > 0 {
			r.stats.delivered.Add(int64(c.n))
			r.cfg.Metrics.Delivered(c.n)
		}
	}
}

func (r *Relay) retryStore(ctx context.Context, op string, fn func() error) error {
	backoff := time.Duration(0)
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		r.storeError(op, err)
		backoff = nextBackoff(backoff, r.cfg.MinBackoff, r.cfg.MaxBackoff)
		sleep(ctx, backoff)
	}
}

func (r *Relay) storeError(op string, err error) {
	r.stats.storeErrors.Add(1)
	r.cfg.Metrics.Error("store_" + op)
	r.cfg.Logger.Warn("pgcdc: database call failed; will retry", "op", op, "err", err)
}

// monitor measures the slot's lag, writes heartbeats when idle and cleans
// up retained rows, while the relay leads.
func (r *Relay) monitor(ctx context.Context) {
	lagT := time.NewTicker(r.cfg.LagInterval)
	defer lagT.Stop()
	var hbC, cleanC <-chan time.Time
	if r.cfg.HeartbeatInterval > 0 {
		t := time.NewTicker(r.cfg.HeartbeatInterval)
		defer t.Stop()
		hbC = t.C
	}
	if r.cfg.Retention > 0 {
		t := time.NewTicker(r.cfg.CleanupInterval)
		defer t.Stop()
		cleanC = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-lagT.C:
			r.checkLag(ctx)
		case <-hbC:
			if time.Since(time.Unix(0, r.lastData.Load())) >= r.cfg.HeartbeatInterval && r.streaming.Load() {
				if _, err := r.pool.Exec(ctx, `SELECT pg_logical_emit_message(false, 'eventkit.pgcdc.heartbeat', '')`); err != nil {
					if ctx.Err() == nil {
						r.cfg.Logger.Warn("pgcdc: heartbeat failed", "err", err)
					}
				} else {
					r.stats.heartbeats.Add(1)
				}
			}
		case <-cleanC:
			if _, err := r.store.Cleanup(ctx, time.Now().Add(-r.cfg.Retention), time.Time{}); err != nil && ctx.Err() == nil {
				r.storeError("cleanup", err)
			}
		}
	}
}

func (r *Relay) checkLag(ctx context.Context) {
	lag, err := r.Lag(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.cfg.Logger.Warn("pgcdc: cannot measure slot lag", "slot", r.cfg.Slot, "err", err)
		}
		return
	}
	r.lag.Store(lag)
	if lm, ok := r.cfg.Metrics.(LagMetrics); ok {
		lm.SlotLag(lag)
	}
	if lag > r.cfg.LagWarnBytes {
		r.cfg.Logger.Warn("pgcdc: REPLICATION SLOT IS FALLING BEHIND: the server keeps WAL for it; if the relay cannot catch up, fix the broker or drop the slot",
			"slot", r.cfg.Slot, "lag_bytes", lag, "threshold_bytes", r.cfg.LagWarnBytes)
	}
}
