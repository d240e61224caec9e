package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventkit/eventkit/outbox"
)

// Setup creates the publication (inserts into the outbox table only) and
// then the durable logical replication slot (plugin pgoutput), unless they
// exist. It is idempotent and safe to call concurrently. It fails with
// ErrMismatch if an object of that name exists but does not fit, and if the
// outbox table does not exist (run the outbox/postgres migrations first).
//
// Events committed before the slot exists are not in its stream: if the
// table already holds undelivered rows, drain them with the polling relay
// first (Setup logs a warning naming how many there are).
func (r *Relay) Setup(ctx context.Context) error {
	var exists bool
	if err := r.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, r.cfg.Table).Scan(&exists); err != nil {
		return fmt.Errorf("pgcdc: setup: %w", err)
	}
	if !exists {
		return fmt.Errorf("pgcdc: setup: outbox table %s does not exist (run the outbox migrations first)", r.cfg.Table)
	}
	if err := r.setupPublication(ctx); err != nil {
		return err
	}
	created, err := r.setupSlot(ctx)
	if err != nil {
		return err
	}
	if created {
		var n int64
		if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM `+r.cfg.Table+` WHERE delivered_at IS NULL AND parked_at IS NULL`).Scan(&n); err == nil && n > 0 {
			r.cfg.Logger.Warn("pgcdc: the outbox table already held undelivered events when the slot was created; CDC will not deliver them: drain them with the polling relay",
				"table", r.cfg.Table, "events", n, "slot", r.cfg.Slot)
		}
		r.cfg.Logger.Info("pgcdc: created replication slot", "slot", r.cfg.Slot, "publication", r.cfg.Publication)
	}
	return nil
}

func (r *Relay) setupPublication(ctx context.Context) error {
	pub := pgx.Identifier{r.cfg.Publication}.Sanitize()
	for attempt := 0; ; attempt++ {
		var insert bool
		err := r.pool.QueryRow(ctx, `SELECT pubinsert FROM pg_publication WHERE pubname = $1`, r.cfg.Publication).Scan(&insert)
		if errors.Is(err, pgx.ErrNoRows) {
			_, err = r.pool.Exec(ctx, `CREATE PUBLICATION `+pub+` FOR TABLE `+r.cfg.Table+` WITH (publish = 'insert')`)
			if isDuplicate(err) && attempt == 0 {
				continue // created concurrently: check it
			}
			if err != nil {
				return fmt.Errorf("pgcdc: create publication %s: %w", r.cfg.Publication, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("pgcdc: setup: %w", err)
		}
		if !insert {
			return fmt.Errorf("%w: publication %s does not publish inserts", ErrMismatch, r.cfg.Publication)
		}
		var has bool
		err = r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
  WHERE p.pubname = $1 AND pr.prrelid = to_regclass($2)) OR EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1 AND puballtables)`,
			r.cfg.Publication, r.cfg.Table).Scan(&has)
		if err != nil {
			return fmt.Errorf("pgcdc: setup: %w", err)
		}
		if !has {
			return fmt.Errorf("%w: publication %s does not include table %s", ErrMismatch, r.cfg.Publication, r.cfg.Table)
		}
		return nil
	}
}

// setupSlot creates the slot if needed and reports whether it did.
func (r *Relay) setupSlot(ctx context.Context) (bool, error) {
	for attempt := 0; ; attempt++ {
		var plugin, db, cur string
		var slotType string
		err := r.pool.QueryRow(ctx, `SELECT coalesce(plugin, ''), slot_type, coalesce(database::text, ''), current_database()::text
  FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&plugin, &slotType, &db, &cur)
		if errors.Is(err, pgx.ErrNoRows) {
			// Durable (temporary = false). The call waits for transactions
			// running now to end, to find a consistent starting point.
			_, err = r.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput', false)`, r.cfg.Slot)
			if isDuplicate(err) && attempt == 0 {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("pgcdc: create replication slot %s: %w", r.cfg.Slot, err)
			}
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("pgcdc: setup: %w", err)
		}
		if slotType != "logical" || plugin != "pgoutput" || db != cur {
			return false, fmt.Errorf("%w: slot %s is a %s slot with plugin %q on database %q (want logical, pgoutput, %q)",
				ErrMismatch, r.cfg.Slot, slotType, plugin, db, cur)
		}
		return false, nil
	}
}

func isDuplicate(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42710" || pe.Code == "23505")
}

// Teardown drops the replication slot and the publication if they exist.
// A relay streaming from the slot (in any process) is disconnected first:
// its walsender is terminated. Dropping the slot releases the WAL it
// retained; events committed and not yet relayed are then no longer
// relayed by CDC (they stay in the outbox table for the polling relay).
func (r *Relay) Teardown(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var active bool
		var pid *int32
		err := r.pool.QueryRow(ctx, `SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&active, &pid)
		if errors.Is(err, pgx.ErrNoRows) {
			break
		}
		if err != nil {
			return fmt.Errorf("pgcdc: teardown: %w", err)
		}
		if active && pid != nil {
			_, _ = r.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, *pid)
		}
		_, err = r.pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, r.cfg.Slot)
		var pe *pgconn.PgError
		switch {
		case err == nil:
		case errors.As(err, &pe) && pe.Code == "42704": // undefined_object: dropped concurrently
		case errors.As(err, &pe) && pe.Code == "55006" && time.Now().Before(deadline): // still active
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		default:
			return fmt.Errorf("pgcdc: drop replication slot %s: %w", r.cfg.Slot, err)
		}
		break
	}
	if _, err := r.pool.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pgx.Identifier{r.cfg.Publication}.Sanitize()); err != nil {
		return fmt.Errorf("pgcdc: drop publication %s: %w", r.cfg.Publication, err)
	}
	return nil
}

// Status is a snapshot of a CDC relay's slot for operators
// (`eventkit outbox status`).
type Status struct {
	Table, Slot, Publication string
	// SlotExists and PublicationExists say whether Setup has run.
	SlotExists, PublicationExists bool
	// Active: a relay is streaming from the slot now (ActivePID is its
	// walsender's process id).
	Active    bool
	ActivePID int
	// WALStatus is pg_replication_slots.wal_status: "reserved", "extended",
	// "unreserved" or "lost" (a lost slot can no longer be streamed: drop
	// and recreate it, and drain the table with the polling relay).
	WALStatus string
	// ConfirmedFlushLSN: every transaction that committed before it has
	// been published and confirmed. CurrentLSN is pg_current_wal_lsn().
	ConfirmedFlushLSN, RestartLSN, CurrentLSN pglogrepl.LSN
	// LagBytes is CurrentLSN - ConfirmedFlushLSN: how far the relay is
	// behind. RetainedBytes is CurrentLSN - RestartLSN: the WAL the slot
	// keeps on the server's disk.
	LagBytes, RetainedBytes int64
	// Outbox describes the rows in the table: in CDC mode, events whose
	// deletion is pending, parked events, and (if Retention is set)
	// delivered events kept.
	Outbox outbox.Status
}

// Status reads the slot's state and the outbox table's.
func (r *Relay) Status(ctx context.Context) (Status, error) {
	st := Status{Table: r.cfg.Table, Slot: r.cfg.Slot, Publication: r.cfg.Publication}
	if err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, r.cfg.Publication).Scan(&st.PublicationExists); err != nil {
		return st, fmt.Errorf("pgcdc: status: %w", err)
	}
	var pid *int32
	var walStatus, confirmed, restart *string
	var cur string
	var lag, retained *int64
	err := r.pool.QueryRow(ctx, `SELECT active, active_pid, wal_status, confirmed_flush_lsn::text, restart_lsn::text, pg_current_wal_lsn()::text,
  (pg_current_wal_lsn() - confirmed_flush_lsn)::int8, (pg_current_wal_lsn() - restart_lsn)::int8
  FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&st.Active, &pid, &walStatus, &confirmed, &restart, &cur, &lag, &retained)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("pgcdc: status: %w", err)
	default:
		st.SlotExists = true
		if pid != nil {
			st.ActivePID = int(*pid)
		}
		st.WALStatus = deref(walStatus)
		st.ConfirmedFlushLSN, _ = pglogrepl.ParseLSN(deref(confirmed))
		st.RestartLSN, _ = pglogrepl.ParseLSN(deref(restart))
		st.CurrentLSN, _ = pglogrepl.ParseLSN(cur)
		if lag != nil {
			st.LagBytes = *lag
		}
		if retained != nil {
			st.RetainedBytes = *retained
		}
	}
	ost, err := r.store.Status(ctx)
	if err != nil {
		return st, err
	}
	st.Outbox = ost
	return st, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Lag returns pg_current_wal_lsn() - confirmed_flush_lsn of the slot in
// bytes: how much WAL the relay has not confirmed yet. It returns
// ErrSlotNotFound if the slot does not exist.
func (r *Relay) Lag(ctx context.Context) (int64, error) {
	var lag *int64
	err := r.pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: %s", ErrSlotNotFound, r.cfg.Slot)
	}
	if err != nil {
		return 0, fmt.Errorf("pgcdc: lag: %w", err)
	}
	if lag == nil {
		return 0, nil
	}
	return *lag, nil
}

// slotPosition returns the slot's confirmed_flush_lsn.
func (r *Relay) slotPosition(ctx context.Context) (pglogrepl.LSN, error) {
	var s *string
	err := r.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: %s (create it with Setup; `eventkit relay --mode cdc` does)", ErrSlotNotFound, r.cfg.Slot)
	}
	if err != nil {
		return 0, fmt.Errorf("pgcdc: read slot: %w", err)
	}
	if s == nil {
		return 0, nil
	}
	return pglogrepl.ParseLSN(*s)
}
