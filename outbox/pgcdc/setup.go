package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventkit/eventkit/outbox"
)

// Setup creates the publication (inserts into the outbox table only) and
// then the durable logical replication slot (plugin pgoutput), unless they
// exist. It is idempotent and safe to call concurrently. It fails with
// ErrMismatch if an object of that name exists but does not fit (a slot of
// another database, another plugin, a publication without the table), and
// if the outbox table does not exist (run the outbox/pgoutbox migrations
// first).
//
// Events committed before the slot exists are not in its stream: the relay
// reads them from the table when it becomes the leader (the backfill, see
// the package doc), in seq order and before the streamed rows.
func (r *Relay) Setup(ctx context.Context) error {
	if err := r.resolve(ctx); err != nil {
		return err
	}
	var exists bool
	if err := r.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, r.cfg.Table).Scan(&exists); err != nil {
		return fmt.Errorf("pgcdc: setup: %w", err)
	}
	if !exists {
		return fmt.Errorf("pgcdc: setup: outbox table %s does not exist (run the outbox migrations first)", r.cfg.Table)
	}
	// A slot of another database is refused before anything is created.
	if si, err := r.slot(ctx); err != nil {
		return fmt.Errorf("pgcdc: setup: %w", err)
	} else if si.exists {
		if err := si.check(r.cfg.Slot); err != nil {
			return err
		}
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
			r.cfg.Logger.Info("pgcdc: the outbox table already held undelivered events when the slot was created; the relay backfills them from the table",
				"table", r.cfg.Table, "events", n, "slot", r.cfg.Slot)
		}
		r.cfg.Logger.Info("pgcdc: created replication slot", "slot", r.cfg.Slot, "publication", r.cfg.Publication)
	}
	return nil
}

// Names returns the replication slot and the publication the relay uses,
// resolving the default names (which depend on the database, see
// Config.Slot) on first use. Setup, Run, Teardown, Status and Lag resolve
// them too; Config reports them once resolved.
func (r *Relay) Names(ctx context.Context) (slot, publication string, err error) {
	if err := r.resolve(ctx); err != nil {
		return "", "", err
	}
	r.names.Lock()
	defer r.names.Unlock()
	return r.cfg.Slot, r.cfg.Publication, nil
}

// resolve fills in the default slot (and publication) name: the
// per-database DefaultSlotName, or the old default name if this database
// has a pgoutput slot of that name and none of the new one. Once set, the
// names do not change; every caller of resolve sees them (under the mutex).
func (r *Relay) resolve(ctx context.Context) error {
	r.names.Lock()
	defer r.names.Unlock()
	if r.cfg.Slot != "" {
		return nil
	}
	var db string
	if err := r.pool.QueryRow(ctx, `SELECT current_database()::text`).Scan(&db); err != nil {
		return fmt.Errorf("pgcdc: resolve the slot name: %w", err)
	}
	slot, legacy := DefaultSlotName(db, r.cfg.Table), legacySlotName(r.cfg.Table)
	rows, err := r.pool.Query(ctx, `SELECT slot_name::text FROM pg_replication_slots
  WHERE database = current_database() AND slot_type = 'logical' AND plugin = 'pgoutput' AND slot_name IN ($1, $2)`, slot, legacy)
	if err != nil {
		return fmt.Errorf("pgcdc: resolve the slot name: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("pgcdc: resolve the slot name: %w", err)
	}
	if !slices.Contains(found, slot) && slices.Contains(found, legacy) {
		r.cfg.Logger.Info("pgcdc: using the existing slot of the old default name (names are per database since this version; see the package doc to move)",
			"slot", legacy, "new_default", slot)
		slot = legacy
	}
	r.cfg.Slot = slot
	if r.cfg.Publication == "" {
		r.cfg.Publication = slot
	}
	return nil
}

// slotInfo describes the slot of the relay's name, wherever it is.
type slotInfo struct {
	exists, here      bool // here: it belongs to the current database
	database, current string
	plugin, slotType  string
	confirmedFlush    *string
	active            bool
}

func (r *Relay) slot(ctx context.Context) (slotInfo, error) {
	si := slotInfo{exists: true}
	err := r.pool.QueryRow(ctx, `SELECT coalesce(database::text, ''), current_database()::text, coalesce(database = current_database(), false),
  coalesce(plugin, ''), slot_type, confirmed_flush_lsn::text, active
  FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&si.database, &si.current, &si.here,
		&si.plugin, &si.slotType, &si.confirmedFlush, &si.active)
	if errors.Is(err, pgx.ErrNoRows) {
		return slotInfo{}, nil
	}
	return si, err
}

// check returns an ErrMismatch unless the slot is a pgoutput logical slot
// of the current database.
func (si slotInfo) check(name string) error {
	if !si.here {
		return fmt.Errorf("%w: replication slot %s belongs to database %q, not to this outbox's database %q; it is left alone: configure another slot name (Config.Slot, --slot), or none for the per-database default",
			ErrMismatch, name, si.database, si.current)
	}
	if si.slotType != "logical" || si.plugin != "pgoutput" {
		return fmt.Errorf("%w: slot %s is a %s slot with plugin %q (want logical, pgoutput)", ErrMismatch, name, si.slotType, si.plugin)
	}
	return nil
}

// publication reports whether the publication exists, whether it publishes
// inserts, and whether it includes the outbox table (listed, in a
// published schema, or FOR ALL TABLES).
func (r *Relay) publication(ctx context.Context) (exists, inserts, hasTable bool, err error) {
	err = r.pool.QueryRow(ctx, `SELECT p.pubinsert, EXISTS (SELECT 1 FROM pg_publication_tables t
    JOIN pg_namespace n ON n.nspname = t.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
    WHERE t.pubname = p.pubname AND c.oid = to_regclass($2))
  FROM pg_publication p WHERE p.pubname = $1`, r.cfg.Publication, r.cfg.Table).Scan(&inserts, &hasTable)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, false, nil
	}
	return err == nil, inserts, hasTable, err
}

// checkPublication returns ErrPublicationNotFound or ErrMismatch unless
// the publication is fit to stream the outbox table's inserts.
func (r *Relay) checkPublication(ctx context.Context) error {
	exists, inserts, has, err := r.publication(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("pgcdc: read publication: %w", err)
	case !exists:
		return fmt.Errorf("%w: %s in this database (create it with Setup; `eventkit relay --mode cdc` does)", ErrPublicationNotFound, r.cfg.Publication)
	case !inserts:
		return fmt.Errorf("%w: publication %s does not publish inserts", ErrMismatch, r.cfg.Publication)
	case !has:
		return fmt.Errorf("%w: publication %s does not include table %s", ErrMismatch, r.cfg.Publication, r.cfg.Table)
	}
	return nil
}

func (r *Relay) setupPublication(ctx context.Context) error {
	pub := pgx.Identifier{r.cfg.Publication}.Sanitize()
	for attempt := 0; ; attempt++ {
		exists, _, _, err := r.publication(ctx)
		if err != nil {
			return fmt.Errorf("pgcdc: setup: %w", err)
		}
		if !exists {
			_, err = r.pool.Exec(ctx, `CREATE PUBLICATION `+pub+` FOR TABLE `+r.cfg.Table+` WITH (publish = 'insert')`)
			if isDuplicate(err) && attempt == 0 {
				continue // created concurrently: check it
			}
			if err != nil {
				return fmt.Errorf("pgcdc: create publication %s: %w", r.cfg.Publication, err)
			}
			return nil
		}
		return r.checkPublication(ctx)
	}
}

// setupSlot creates the slot if needed and reports whether it did.
func (r *Relay) setupSlot(ctx context.Context) (bool, error) {
	for attempt := 0; ; attempt++ {
		si, err := r.slot(ctx)
		if err != nil {
			return false, fmt.Errorf("pgcdc: setup: %w", err)
		}
		if si.exists {
			return false, si.check(r.cfg.Slot)
		}
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
}

func isDuplicate(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42710" || pe.Code == "23505")
}

// fatal reports whether err is a condition retrying cannot fix: the slot or
// the publication is missing or is not the relay's.
func fatal(err error) bool {
	return errors.Is(err, ErrSlotNotFound) || errors.Is(err, ErrMismatch) || errors.Is(err, ErrPublicationNotFound)
}

// preflight resolves the names and checks the slot and the publication
// before Run takes the lock. It retries resolving until ctx ends (nil is
// then returned) and returns only the fatal errors of the check.
func (r *Relay) preflight(ctx context.Context) error {
	backoff := time.Duration(0)
	for {
		err := r.resolve(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		backoff = nextBackoff(backoff, r.cfg.MinBackoff, r.cfg.MaxBackoff)
		r.cfg.Logger.Warn("pgcdc: cannot reach the database; retrying", "err", err, "in", backoff)
		sleep(ctx, backoff)
	}
	if _, err := r.slotPosition(ctx); err != nil && ctx.Err() == nil && fatal(err) {
		return err
	}
	return nil
}

// Teardown drops the replication slot and the publication if they exist in
// this database. A relay streaming from the slot (in any process) is
// disconnected first: its walsender is terminated. Dropping the slot
// releases the WAL it retained; events committed and not yet relayed are
// then no longer relayed by CDC (they stay in the outbox table for the
// polling relay). A slot of the name that belongs to another database is
// never terminated or dropped: Teardown returns ErrMismatch and drops
// nothing.
func (r *Relay) Teardown(ctx context.Context) error {
	if err := r.resolve(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		si, err := r.slot(ctx)
		if err != nil {
			return fmt.Errorf("pgcdc: teardown: %w", err)
		}
		if !si.exists {
			break
		}
		if !si.here {
			return si.check(r.cfg.Slot)
		}
		// Both statements match the slot only in this database, so a slot
		// of the name created meanwhile in another one is not touched.
		const mine = `FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`
		if si.active {
			_, _ = r.pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) `+mine+` AND active`, r.cfg.Slot)
		}
		_, err = r.pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) `+mine, r.cfg.Slot)
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
	// SlotExists and PublicationExists say whether Setup has run (in this
	// database).
	SlotExists, PublicationExists bool
	// OtherDatabase is set when a slot of the name exists but belongs to
	// that other database (only possible with a configured Slot): it is
	// not this outbox's and is not reported on.
	OtherDatabase string `json:",omitempty"`
	// Active: a relay is streaming from the slot now (ActivePID is its
	// walsender's process id).
	Active    bool
	ActivePID int
	// WALStatus is pg_replication_slots.wal_status: "reserved", "extended",
	// "unreserved" or "lost" (a lost slot can no longer be streamed: drop
	// and recreate it: the relay then backfills the waiting rows).
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

// Status reads the state of this database's slot and the outbox table's.
// A slot of the name that belongs to another database is not reported on
// (SlotExists is false); its database is named in OtherDatabase.
func (r *Relay) Status(ctx context.Context) (Status, error) {
	if err := r.resolve(ctx); err != nil {
		return Status{}, err
	}
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
  FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`, r.cfg.Slot).Scan(&st.Active, &pid, &walStatus, &confirmed, &restart, &cur, &lag, &retained)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		err = r.pool.QueryRow(ctx, `SELECT coalesce(database::text, '') FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&st.OtherDatabase)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return st, fmt.Errorf("pgcdc: status: %w", err)
		}
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
// ErrSlotNotFound if the slot does not exist in this database.
func (r *Relay) Lag(ctx context.Context) (int64, error) {
	if err := r.resolve(ctx); err != nil {
		return 0, err
	}
	var lag *int64
	err := r.pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots
  WHERE slot_name = $1 AND database = current_database()`, r.cfg.Slot).Scan(&lag)
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

// slotPosition returns the slot's confirmed_flush_lsn, after checking that
// the slot and the publication are fit (the fatal errors: ErrSlotNotFound,
// ErrMismatch, ErrPublicationNotFound).
func (r *Relay) slotPosition(ctx context.Context) (pglogrepl.LSN, error) {
	if err := r.resolve(ctx); err != nil {
		return 0, err
	}
	si, err := r.slot(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgcdc: read slot: %w", err)
	}
	if !si.exists {
		return 0, fmt.Errorf("%w: %s (create it with Setup; `eventkit relay --mode cdc` does)", ErrSlotNotFound, r.cfg.Slot)
	}
	if err := si.check(r.cfg.Slot); err != nil {
		return 0, err
	}
	if err := r.checkPublication(ctx); err != nil {
		return 0, err
	}
	if si.confirmedFlush == nil {
		return 0, nil
	}
	return pglogrepl.ParseLSN(*si.confirmedFlush)
}
