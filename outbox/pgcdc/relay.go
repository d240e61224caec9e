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

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/backoff"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// Relay streams committed outbox inserts from a logical replication slot to
// a broker.Publisher. It is the outbox relay engine (outbox.Relay: publish,
// per-subject order, retry, park, completion, metrics, leadership) over a
// stream Source (Source). See the package doc for its guarantees.
type Relay struct {
	pool  *pgxpool.Pool
	pub   broker.Publisher
	cfg   Config
	store *pgoutbox.Store

	schema, base string
	names        sync.Mutex // guards the resolution of cfg.Slot and cfg.Publication (setup.go)

	src    *source
	engine *outbox.Relay
	q      queries

	confirmed atomic.Uint64 // completed (rows deleted or parked) and so safe to confirm
	lastData  atomic.Int64  // unix nanos of the last change received
	lag       atomic.Int64
	streaming atomic.Bool
	stats     struct {
		txns, reconnects, heartbeats, recheck, backfilled atomic.Int64
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
	store, err := pgoutbox.New(pool, pgoutbox.Config{Table: c.Table, Logger: c.Logger})
	if err != nil {
		return nil, err
	}
	c.Table = store.Table()
	base := sqlutil.Base(c.Table)
	schema := strings.TrimSuffix(strings.TrimSuffix(c.Table, base), ".")
	r := &Relay{pool: pool, pub: pub, cfg: c, store: store, schema: schema, base: base, q: newQueries(c.Table)}
	r.src = &source{r: r, bySeq: map[int64]*item{}, space: make(chan struct{}, 1)}
	if pub != nil {
		r.engine = outbox.NewRelay(r.src, pub, c.RelayConfig)
	}
	return r, nil
}

// queries are the statements of the stream's completions and failures.
// They are outbox/pgoutbox's with "AND parked_at IS NULL": the stream can
// hand over a row that was parked meanwhile (by a previous leader still
// finishing, say), and that row stays parked (Requeue gives it back, and
// the backfill then delivers it); it is never deleted, marked delivered,
// or taken out of the parked state by an attempt count.
//
// delRange and deliverRange are del and deliver of a run of consecutive
// seqs, $1 to $2: the same rows (every seq of the range is in the run), by
// an index range scan rather than an array bound and probed per element.
type queries struct{ del, deliver, delRange, deliverRange, fail string }

func newQueries(table string) queries {
	return queries{
		del:          `DELETE FROM ` + table + ` WHERE seq = ANY($1::bigint[]) AND parked_at IS NULL RETURNING seq`,
		deliver:      `UPDATE ` + table + ` SET delivered_at = now() WHERE seq = ANY($1::bigint[]) AND delivered_at IS NULL AND parked_at IS NULL RETURNING seq`,
		delRange:     `DELETE FROM ` + table + ` WHERE seq >= $1 AND seq <= $2 AND parked_at IS NULL RETURNING seq`,
		deliverRange: `UPDATE ` + table + ` SET delivered_at = now() WHERE seq >= $1 AND seq <= $2 AND delivered_at IS NULL AND parked_at IS NULL RETURNING seq`,
		fail: `UPDATE ` + table + ` SET attempts = attempts + 1, last_error = $2,
  parked_at = CASE WHEN $3::bool THEN now() ELSE NULL END WHERE seq = $1 AND parked_at IS NULL AND delivered_at IS NULL`,
	}
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

// Source returns the relay's stream source, for outbox.NewRelay (Run does
// that itself; this is for tests and for code that builds its own engine).
func (r *Relay) Source() outbox.Source { return r.src }

// Stats are a relay's counters since it was created: the engine's (every
// field means what it means for the polling relay) plus the stream's.
type Stats struct {
	outbox.Stats
	Transactions int64 // transactions received
	Reconnects   int64 // replication sessions that ended with an error
	Heartbeats   int64 // heartbeat messages written
	// Rechecks counts completions (deletes, parks) retried because a row
	// the stream delivered was not visible to the relay's session yet.
	Rechecks int64
	// Backfilled counts rows read from the table rather than the stream
	// (rows committed before the slot's position: before the slot existed,
	// requeued, or left by an earlier leader; see the package doc).
	Backfilled int64
	// ConfirmedLSN is the position up to which everything has been
	// published and completed (the slot follows within FeedbackInterval).
	ConfirmedLSN pglogrepl.LSN
	// LagBytes is the slot's lag at the last measurement (see LagInterval).
	LagBytes int64
	// Streaming: the relay holds the lock and a replication session is open.
	Streaming bool
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	var st Stats
	if r.engine != nil {
		st.Stats = r.engine.Stats()
	}
	s := &r.stats
	st.Transactions, st.Reconnects, st.Heartbeats, st.Rechecks, st.Backfilled = s.txns.Load(), s.reconnects.Load(), s.heartbeats.Load(), s.recheck.Load(), s.backfilled.Load()
	st.ConfirmedLSN, st.LagBytes, st.Streaming = pglogrepl.LSN(r.confirmed.Load()), r.lag.Load(), r.streaming.Load()
	return st
}

// Health returns the engine's health (see outbox.Relay.Health).
func (r *Relay) Health() outbox.Health {
	if r.engine == nil {
		return outbox.Health{State: outbox.StateStarting}
	}
	return r.engine.Health()
}

// IsLeader reports whether this relay holds the leadership lock now.
func (r *Relay) IsLeader() bool { return r.engine != nil && r.engine.IsLeader() }

// advance moves the confirmed position forward (never back).
func (r *Relay) advance(lsn pglogrepl.LSN) {
	for {
		cur := r.confirmed.Load()
		if uint64(lsn) <= cur || r.confirmed.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Run relays events until ctx ends, then returns nil. It resolves the slot
// and publication names and checks first that the table, the slot and the
// publication are there, belong to this database and fit (returning
// outbox.ErrNoTable, outbox.ErrTableShape, ErrSlotNotFound,
// ErrPublicationNotFound or ErrMismatch at once), then runs the relay
// engine: it takes the outbox's leadership lock (the one the polling relay
// of outbox/pgoutbox takes, so a polling relay and a CDC relay never run at
// once on a table, and further CDC relays stand by), streams from the slot
// while it holds it, and reconnects with backoff when the replication
// connection breaks. It returns ErrSlotNotFound if the slot is dropped while
// it runs. Every goroutine it starts has ended when it returns.
func (r *Relay) Run(ctx context.Context) error {
	if r.engine == nil {
		return ErrNoPublisher
	}
	if err := r.preflight(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	return r.engine.Run(ctx)
}

// check is the start-up check (outbox.Checker): the table has the outbox's
// shape, the slot exists, and the publication carries the table's inserts.
func (r *Relay) check(ctx context.Context) error {
	if err := r.store.Check(ctx); err != nil {
		return err
	}
	if err := r.checkPartitions(ctx); err != nil {
		return err
	}
	if _, err := r.slotPosition(ctx); err != nil {
		return err
	}
	var exists, insert, has bool
	err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
  coalesce((SELECT pubinsert FROM pg_publication WHERE pubname = $1), false),
  EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
    WHERE p.pubname = $1 AND pr.prrelid = to_regclass($2)) OR EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1 AND puballtables)`,
		r.cfg.Publication, r.cfg.Table).Scan(&exists, &insert, &has)
	switch {
	case err != nil:
		return fmt.Errorf("pgcdc: check publication %s: %w", r.cfg.Publication, err)
	case !exists:
		return fmt.Errorf("%w: publication %s does not exist (create it with Setup)", ErrMismatch, r.cfg.Publication)
	case !insert:
		return fmt.Errorf("%w: publication %s does not publish inserts", ErrMismatch, r.cfg.Publication)
	case !has:
		return fmt.Errorf("%w: publication %s does not include table %s", ErrMismatch, r.cfg.Publication, r.cfg.Table)
	}
	return nil
}

// checkPartitions returns ErrPartitioned if the outbox has more than one
// partition.
func (r *Relay) checkPartitions(ctx context.Context) error {
	n, err := r.store.Partitions(ctx)
	if err != nil {
		return fmt.Errorf("pgcdc: read the partition count of %s: %w", r.cfg.Table, err)
	}
	if n > 1 {
		return fmt.Errorf("%w: %s has %d partitions", ErrPartitioned, r.cfg.Table, n)
	}
	return nil
}

// stream runs replication sessions while the lock is held. It returns a
// non-nil error only for a condition retrying cannot fix (the slot is
// gone).
func (r *Relay) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
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
	return backoff.Policy{Min: lo, Max: hi}.Next(prev)
}

func sleep(ctx context.Context, d time.Duration) { backoff.Sleep(ctx, d) }

// session runs one replication connection, handing every committed
// transaction to the source's buffer, until the connection breaks or ctx
// ends. Transactions already in the buffer stay there: the next session
// starts after the last one received.
func (r *Relay) session(ctx context.Context) error {
	start, err := r.slotPosition(ctx)
	if err != nil {
		return err
	}
	// The in-memory positions may be ahead of the slot's: the last status
	// update may not have reached the server (confirmed), and what was
	// received is still buffered (received). Starting there skips what
	// this relay has already.
	if c := pglogrepl.LSN(r.confirmed.Load()); c > start {
		start = c
	} else {
		r.confirmed.Store(uint64(start))
	}
	start = max(start, r.src.receivedEnd())
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
	rerr := r.read(ctx, conn, start)
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
// them to the source in commit order. It reports only the CONFIRMED
// position to the server (never the received one), every FeedbackInterval
// and whenever the server asks.
func (r *Relay) read(ctx context.Context, conn *pgconn.PgConn, start pglogrepl.LSN) error {
	rels := map[uint32]*relation{}
	var cur *txn
	received := start // end of the last commit received
	nextStatus := time.Now()
	var sentPos uint64
	var sentAt time.Time
	// While events flow, a new confirmed position is reported within
	// statusGap rather than FeedbackInterval: fewer duplicates after a crash.
	statusGap := min(100*time.Millisecond, r.cfg.FeedbackInterval)
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
			nextStatus = now.Add(r.cfg.FeedbackInterval)
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
				cur = &txn{xid: m.xid}
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
					if rec.Seq == 0 { // cannot even name the row: nothing to park
						r.cfg.Logger.Error("pgcdc: outbox row is not a valid event and has no readable seq; skipped",
							"table", r.cfg.Table, "err", err)
						continue
					}
					rec.DecodeErr = err // the engine parks it with the reason
				}
				cur.items = append(cur.items, &item{rec: rec, t: cur})
			case commitMsg:
				if cur == nil {
					return fmt.Errorf("%w: commit without begin", ErrProtocol)
				}
				cur.end = m.endLSN
				received = m.endLSN
				r.stats.txns.Add(1)
				t := cur
				cur = nil
				for !r.src.push(t) {
					// The buffer is full (the broker may be down): wait for
					// room, keeping the server from timing us out.
					timer := time.NewTimer(time.Until(nextStatus))
					select {
					case <-r.src.space:
					case <-ctx.Done():
						timer.Stop()
						return nil
					case <-timer.C:
						pos, err := r.sendStatus(conn)
						if err != nil {
							timer.Stop()
							return fmt.Errorf("pgcdc: send status: %w", err)
						}
						sentPos, sentAt = uint64(pos), time.Now()
						nextStatus = time.Now().Add(r.cfg.FeedbackInterval)
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

// monitor measures the slot's lag and writes heartbeats when idle, while
// the relay leads.
func (r *Relay) monitor(ctx context.Context) {
	lagT := time.NewTicker(r.cfg.LagInterval)
	defer lagT.Stop()
	var hbC <-chan time.Time
	if r.cfg.HeartbeatInterval > 0 {
		t := time.NewTicker(r.cfg.HeartbeatInterval)
		defer t.Stop()
		hbC = t.C
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
