// Package sqldeadletter keeps dead letters in a table
// (eventkit_dead_letters) in PostgreSQL, MySQL/MariaDB or SQLite, where
// operators list, show, replay and purge them (`eventkit dlq`): a dead
// letter stored with deadletter.Collect is never lost (it is stored before
// it is acked), is one row however often it is delivered (the key is topic,
// group and original event id), and Replay republishes it at least once
// (the broker confirms the event before the row is marked replayed).
//
// Use: New, then Migrate (or take MigrationSQL into your own migrations);
// run deadletter.Collect with the Store on the dead-letter topics; List,
// Count, Replay, Purge, and for strict-order consumers Unpark and Skip.
//
// Limits: a replay goes to the group that gave up only, with an id of its
// own (see deadletter.Replay), and a crash between the publish and the mark
// replays the event again on the next call, which the consumer's inbox
// drops as a duplicate. Undecodable dead letters hold raw bytes, not an
// event, and cannot be replayed; they can be shown and purged.
package sqldeadletter

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
)

// DefaultTable is the dead-letter table's default name.
const DefaultTable = "eventkit_dead_letters"

// ErrNotDeadLetter is returned by Add for an event that lacks the
// dead-letter attributes.
var ErrNotDeadLetter = deadletter.ErrNotDeadLetter

// Store is the dead-letter table on a database/sql connection.
type Store struct {
	db      *sql.DB
	dialect sqlinbox.Dialect
	table   string
}

// New returns a store on db. table "" means DefaultTable.
func New(db *sql.DB, dialect sqlinbox.Dialect, table string) (*Store, error) {
	if table == "" {
		table = DefaultTable
	}
	if err := sqlinbox.CheckTable(table); err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	if err := dialect.Check("deadletter"); err != nil {
		return nil, err
	}
	return &Store{db: db, dialect: dialect, table: table}, nil
}

// Table returns the table name.
func (s *Store) Table() string { return s.table }

// migrations returns the versions of the dead-letter table: 1 creates it
// with its index on dead_at.
func (s *Store) migrations() sqldialect.Line {
	index := strings.ReplaceAll(s.table, ".", "_") + "_dead_at"
	create := `CREATE TABLE IF NOT EXISTS ` + s.table + ` (
	topic       VARCHAR(255) NOT NULL,
	grp         VARCHAR(255) NOT NULL,
	event_id    VARCHAR(255) NOT NULL,
	event_type  VARCHAR(255) NOT NULL,
	reason      VARCHAR(32)  NOT NULL,
	error       TEXT         NOT NULL,
	attempts    INT          NOT NULL,
	dead_at     BIGINT       NOT NULL,
	envelope    ` + s.dialect.Blob() + ` NOT NULL,
	replays     INT          NOT NULL DEFAULT 0,
	replayed_at BIGINT,
	PRIMARY KEY (topic, grp, event_id)`
	v1 := []string{create + "\n)", `CREATE INDEX IF NOT EXISTS ` + index + ` ON ` + s.table + ` (dead_at)`}
	if s.dialect == sqlinbox.MySQL { // no CREATE INDEX IF NOT EXISTS: the index is part of the table
		v1 = []string{create + ",\n\tKEY " + index + " (dead_at)\n) ENGINE=InnoDB"}
	}
	return sqldialect.Line{Pkg: "deadletter", Table: s.table, Migrations: []sqldialect.Migration{
		{Version: 1, Name: "create_dead_letters", Table: s.table, Up: v1, Down: []string{"DROP TABLE " + s.table}},
	}}
}

func (s *Store) migrator() sqldialect.Migrator {
	return sqldialect.Migrator{D: s.dialect, InTx: sqldialect.SQLInTx(s.db)}
}

// MigrationSQL returns the SQL text Migrate runs on a database without the
// table, with the INSERT recording its version in eventkit_migrations, for
// review (eventkit migrate sql).
func (s *Store) MigrationSQL() string { return s.dialect.Script(s.migrations()) }

// Migrate applies the versions of the table that are not applied yet,
// recording them in eventkit_migrations; a table created by an earlier,
// unversioned release is adopted as it is. It is idempotent and safe to
// run concurrently.
func (s *Store) Migrate(ctx context.Context) error { return s.migrator().Up(ctx, s.migrations()) }

// MigrationStatus lists the table's versions and whether each is applied.
func (s *Store) MigrationStatus(ctx context.Context) ([]outbox.MigrationState, error) {
	return s.migrator().Status(ctx, s.migrations())
}

// MigrateDown undoes the last applied version (1 drops the table) and
// returns it (Version 0: none was applied). Unless force, it refuses with
// an error wrapping sqlinbox.ErrDataLoss, changing nothing, while the table
// holds dead letters.
func (s *Store) MigrateDown(ctx context.Context, force bool) (outbox.Migration, error) {
	m, err := s.migrator().Down(ctx, s.migrations(), force)
	return outbox.Migration{Version: m.Version, Name: m.Name}, err
}

// Entry is one stored dead letter.
type Entry struct {
	Topic      string // original topic
	Group      string // consumer group that gave up
	EventID    string // original event id (the dead letter's own id if undecodable)
	EventType  string
	Reason     string // deadletter.ReasonMaxAttempts, ReasonPermanent, ReasonUndecodable
	Error      string
	Attempts   int
	DeadAt     time.Time // last failure
	Replays    int
	ReplayedAt time.Time // zero if never replayed
	// Event is the dead-letter event as the consumer published it
	// (deadletter.InfoOf reads its attributes; consumer.Original
	// gives the original event).
	Event eventkit.Event
}

// Undecodable reports whether the entry holds raw bytes instead of an event.
func (e Entry) Undecodable() bool { return e.Event.Type == deadletter.UndecodableType }

func (s *Store) q(query string) string { return s.dialect.Rebind(query) }

// Add stores a dead-letter event (as published by the consumer runtime). A
// dead letter with the same topic, group and event id replaces the stored
// one (the event failed again after a replay) and keeps its replay count.
func (s *Store) Add(ctx context.Context, dl eventkit.Event) error {
	info, ok := deadletter.InfoOf(dl)
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotDeadLetter, dl.ID)
	}
	env, err := dl.MarshalJSON()
	if err != nil {
		return err
	}
	dead := info.LastFailure
	if dead.IsZero() {
		dead = time.Now()
	}
	typ := dl.Type
	args := []any{info.Topic, info.Group, info.EventID, typ, info.Reason, info.Error, info.Attempts, dead.UnixNano(), env}
	var sets []string
	for _, c := range []string{"event_type", "reason", "error", "attempts", "dead_at", "envelope"} {
		sets = append(sets, c+" = "+s.dialect.Excluded(c))
	}
	upsert := s.dialect.OnConflict([]string{"topic", "grp", "event_id"}, append(sets, "replayed_at = NULL")...)
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO `+s.table+` (topic, grp, event_id, event_type, reason, error, attempts, dead_at, envelope)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`+upsert), args...)
	if err != nil {
		return fmt.Errorf("deadletter: add %s: %w", info.EventID, err)
	}
	return nil
}

// Filter selects dead letters. Zero fields match everything.
type Filter struct {
	Topic   string
	Group   string
	Type    string
	EventID string
	Since   time.Time // dead at or after
	Until   time.Time // dead before
	// Replayed: nil matches all, true only replayed, false only not replayed.
	Replayed *bool
	Limit    int // 0: no limit
}

func (s *Store) where(f Filter) (string, []any) {
	var conds []string
	var args []any
	add := func(c string, v any) { conds = append(conds, c); args = append(args, v) }
	if f.Topic != "" {
		add("topic = ?", f.Topic)
	}
	if f.Group != "" {
		add("grp = ?", f.Group)
	}
	if f.Type != "" {
		add("event_type = ?", f.Type)
	}
	if f.EventID != "" {
		add("event_id = ?", f.EventID)
	}
	if !f.Since.IsZero() {
		add("dead_at >= ?", f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		add("dead_at < ?", f.Until.UnixNano())
	}
	if f.Replayed != nil {
		if *f.Replayed {
			conds = append(conds, "replayed_at IS NOT NULL")
		} else {
			conds = append(conds, "replayed_at IS NULL")
		}
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// List returns the dead letters that f selects, oldest first.
func (s *Store) List(ctx context.Context, f Filter) ([]Entry, error) {
	w, args := s.where(f)
	q := `SELECT topic, grp, event_id, event_type, reason, error, attempts, dead_at, envelope, replays, replayed_at FROM ` + s.table + w + ` ORDER BY dead_at, event_id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("deadletter: list: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var dead int64
		var replayed sql.NullInt64
		var env []byte
		if err := rows.Scan(&e.Topic, &e.Group, &e.EventID, &e.EventType, &e.Reason, &e.Error, &e.Attempts, &dead, &env, &e.Replays, &replayed); err != nil {
			return nil, fmt.Errorf("deadletter: list: %w", err)
		}
		e.DeadAt = time.Unix(0, dead).UTC()
		if replayed.Valid {
			e.ReplayedAt = time.Unix(0, replayed.Int64).UTC()
		}
		ev, err := eventkit.DecodeStructured(env)
		if err != nil {
			return nil, fmt.Errorf("deadletter: stored dead letter %s is corrupt: %w", e.EventID, err)
		}
		e.Event = ev
		out = append(out, e)
	}
	return out, rows.Err()
}

// Count returns how many dead letters f selects (ignoring f.Limit).
func (s *Store) Count(ctx context.Context, f Filter) (int64, error) {
	w, args := s.where(f)
	var n int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM `+s.table+w), args...).Scan(&n)
	return n, err
}

// ReplayResult says what Replay did.
type ReplayResult struct {
	Replayed int
	// Skipped are undecodable dead letters, which hold no event to replay.
	Skipped int
}

// Replay republishes the original events of the dead letters f selects to
// their original topics, in dead-letter order, and marks each replayed after
// the broker confirmed it. Each is published as consumer.Replay makes it:
// with an id of its own (so JetStream's duplicate window cannot drop it)
// and addressed to the group that gave up, whose runtime hands the handler
// the original event id; other groups of the topic skip it. At least once:
// see the package doc.
func (s *Store) Replay(ctx context.Context, pub broker.Publisher, f Filter) (ReplayResult, error) {
	var res ReplayResult
	entries, err := s.List(ctx, f)
	if err != nil {
		return res, err
	}
	for _, e := range entries {
		if e.Undecodable() {
			res.Skipped++
			continue
		}
		if err := pub.Publish(ctx, e.Topic, deadletter.Replay(e.Event)); err != nil {
			return res, fmt.Errorf("deadletter: replay %s to %s: %w", e.EventID, e.Topic, err)
		}
		if _, err := s.db.ExecContext(ctx, s.q(`UPDATE `+s.table+` SET replays = replays + 1, replayed_at = ?
			WHERE topic = ? AND grp = ? AND event_id = ?`), time.Now().UnixNano(), e.Topic, e.Group, e.EventID); err != nil {
			return res, fmt.Errorf("deadletter: mark %s replayed (it was republished): %w", e.EventID, err)
		}
		res.Replayed++
	}
	return res, nil
}

// Purge deletes the dead letters f selects (f.Limit is ignored) and returns
// how many.
func (s *Store) Purge(ctx context.Context, f Filter) (int64, error) {
	w, args := s.where(f)
	r, err := s.db.ExecContext(ctx, s.q(`DELETE FROM `+s.table+w), args...)
	if err != nil {
		return 0, fmt.Errorf("deadletter: purge: %w", err)
	}
	return r.RowsAffected()
}
