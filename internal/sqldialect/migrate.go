package sqldialect

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/eventkit/eventkit/outbox"
)

// VersionTable records, per database, which versions of each table
// eventkit owns (the inbox and dead-letter tables; the outbox keeps its
// <table>_migrations) are applied: one row per (tbl, version), as River's
// river_migration has one per (line, version).
const VersionTable = "eventkit_migrations"

// ErrDataLoss is returned by Migrator.Down when undoing the last version
// would drop a table that holds rows (pass force to drop them anyway).
var ErrDataLoss = errors.New("down would lose data")

// ErrIrreversible is returned by Migrator.Down for a version that has no
// down migration.
var ErrIrreversible = errors.New("this version cannot be undone")

// Migration is one version of a table eventkit owns.
type Migration struct {
	Version int
	Name    string
	Up      []string
	// Down undoes Up; nil: it cannot be undone (ErrIrreversible).
	Down []string
	// Table is the table Up creates. A database where it exists but no
	// version of the line is recorded (created by the unversioned DDL of
	// earlier releases) is adopted at this version, without running Up;
	// Down refuses while it holds rows.
	Table string
}

// Line is the versions of one table eventkit owns.
type Line struct {
	Pkg        string // error prefix: "sqlinbox"
	Table      string // the name its versions are recorded under
	Migrations []Migration
}

// Migrator applies, undoes and reports the versions of lines on one
// database.
type Migrator struct {
	D Dialect
	// InTx runs a transaction: Up and Down run in one holding the
	// migration lock; Status reads in one.
	InTx InTx
}

func (d Dialect) versionsDDL() string {
	table := "ENGINE=InnoDB"
	if d != MySQL {
		table = ""
	}
	return strings.TrimSpace(`CREATE TABLE IF NOT EXISTS ` + VersionTable + ` (
    tbl        VARCHAR(255) NOT NULL,
    version    INTEGER      NOT NULL,
    name       VARCHAR(200) NOT NULL,
    applied_at BIGINT       NOT NULL,
    PRIMARY KEY (tbl, version)
) ` + table)
}

// applied returns the recorded versions of l.
func (m Migrator) applied(ctx context.Context, c Conn, l Line) (map[int]time.Time, error) {
	out := map[int]time.Time{}
	err := c.Query(ctx, m.D.Rebind(`SELECT version, applied_at FROM `+VersionTable+` WHERE tbl = ?`), []any{l.Table}, func(scan func(...any) error) error {
		var v int
		var at int64
		if err := scan(&v, &at); err != nil {
			return err
		}
		out[v] = time.UnixMicro(at).UTC()
		return nil
	})
	return out, err
}

// adoptable returns the versions whose tables exist when none of l's is
// recorded: the prefix of l's migrations whose table exists.
func (m Migrator) adoptable(ctx context.Context, c Conn, l Line, applied map[int]time.Time) ([]Migration, error) {
	if len(applied) > 0 {
		return nil, nil
	}
	var out []Migration
	for _, mig := range l.Migrations {
		if mig.Table == "" {
			break
		}
		ok, err := m.D.TableExists(ctx, c, mig.Table)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		out = append(out, mig)
	}
	return out, nil
}

// forgetDropped deletes the records of l when the table of its first
// version is gone (dropped by hand): the line starts again from nothing
// instead of believing tables exist that do not.
func (m Migrator) forgetDropped(ctx context.Context, c Conn, l Line, applied map[int]time.Time, write bool) (map[int]time.Time, error) {
	first := l.Migrations[0]
	if _, ok := applied[first.Version]; !ok || first.Table == "" {
		return applied, nil
	}
	ok, err := m.D.TableExists(ctx, c, first.Table)
	if err != nil || ok {
		return applied, err
	}
	if !write {
		return map[int]time.Time{}, nil
	}
	_, err = c.Exec(ctx, m.D.Rebind(`DELETE FROM `+VersionTable+` WHERE tbl = ?`), l.Table)
	return map[int]time.Time{}, err
}

// locked runs fn in a transaction holding the migration lock of l, with
// the version table created and l's applied versions (adopted ones
// recorded) read.
func (m Migrator) locked(ctx context.Context, l Line, fn func(c Conn, applied map[int]time.Time) error) error {
	s, ok := m.D.spec()
	if !ok {
		return m.D.Check(l.Pkg)
	}
	return m.InTx(ctx, func(c Conn) error {
		if s.lock != "" {
			var got any
			err := c.Query(ctx, m.D.Rebind(s.lock), []any{VersionTable}, func(scan func(...any) error) error { return scan(&got) })
			if err == nil && s.unlock != "" && fmt.Sprint(got) != "1" { // GET_LOCK: 0 on timeout, NULL on error
				err = fmt.Errorf("not granted within 60s (%v)", got)
			}
			if err != nil {
				return fmt.Errorf("%s: migration lock: %w", l.Pkg, err)
			}
		}
		if s.unlock != "" {
			defer func() { _, _ = c.Exec(context.WithoutCancel(ctx), m.D.Rebind(s.unlock), VersionTable) }()
		}
		if _, err := c.Exec(ctx, m.D.versionsDDL()); err != nil {
			return fmt.Errorf("%s: migrate: %w", l.Pkg, err)
		}
		applied, err := m.applied(ctx, c, l)
		if err != nil {
			return fmt.Errorf("%s: migrate: %w", l.Pkg, err)
		}
		if applied, err = m.forgetDropped(ctx, c, l, applied, true); err != nil {
			return fmt.Errorf("%s: migrate: %w", l.Pkg, err)
		}
		adopt, err := m.adoptable(ctx, c, l, applied)
		if err != nil {
			return fmt.Errorf("%s: migrate: %w", l.Pkg, err)
		}
		for _, mig := range adopt {
			if err := m.record(ctx, c, l, mig); err != nil {
				return err
			}
			applied[mig.Version] = time.Now()
		}
		return fn(c, applied)
	})
}

func (m Migrator) record(ctx context.Context, c Conn, l Line, mig Migration) error {
	_, err := c.Exec(ctx, m.D.Rebind(`INSERT INTO `+VersionTable+` (tbl, version, name, applied_at) VALUES (?, ?, ?, ?)`),
		l.Table, mig.Version, mig.Name, time.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("%s: record version %d of %s: %w", l.Pkg, mig.Version, l.Table, err)
	}
	return nil
}

// Up applies the versions of l that are not applied yet, in order, under
// the migration lock (concurrent callers are safe). Tables made by the
// unversioned DDL of earlier releases are adopted first (see Migration).
// It is idempotent. (MySQL commits DDL implicitly: a version that fails
// halfway is not rolled back; its statements are idempotent so Up can be
// re-run.)
func (m Migrator) Up(ctx context.Context, l Line) error {
	return m.locked(ctx, l, func(c Conn, applied map[int]time.Time) error {
		for _, mig := range l.Migrations {
			if _, ok := applied[mig.Version]; ok {
				continue
			}
			for _, st := range mig.Up {
				if _, err := c.Exec(ctx, st); err != nil {
					return fmt.Errorf("%s: migration %d (%s) of %s: %w", l.Pkg, mig.Version, mig.Name, l.Table, err)
				}
			}
			if err := m.record(ctx, c, l, mig); err != nil {
				return err
			}
		}
		return nil
	})
}

// Down undoes the last applied version of l and returns it. It fails with
// ErrIrreversible for a version without a down migration, and, unless
// force, with ErrDataLoss when the version's table holds rows; nothing is
// changed then. With no version applied it returns a zero Migration.
func (m Migrator) Down(ctx context.Context, l Line, force bool) (Migration, error) {
	var done Migration
	err := m.locked(ctx, l, func(c Conn, applied map[int]time.Time) error {
		var last *Migration
		for i := range l.Migrations {
			if _, ok := applied[l.Migrations[i].Version]; ok {
				last = &l.Migrations[i]
			}
		}
		if last == nil {
			return nil
		}
		if last.Down == nil {
			return fmt.Errorf("%s: version %d (%s) of %s: %w", l.Pkg, last.Version, last.Name, l.Table, ErrIrreversible)
		}
		if last.Table != "" && !force {
			var n int64
			if err := c.Query(ctx, `SELECT count(*) FROM (SELECT 1 AS one FROM `+last.Table+` LIMIT 1) t`, nil,
				func(scan func(...any) error) error { return scan(&n) }); err != nil {
				return fmt.Errorf("%s: down: %w", l.Pkg, err)
			}
			if n > 0 {
				return fmt.Errorf("%s: version %d (%s) of %s: %w: it drops %s, which holds rows (use --force to drop them)",
					l.Pkg, last.Version, last.Name, l.Table, ErrDataLoss, last.Table)
			}
		}
		for _, st := range last.Down {
			if _, err := c.Exec(ctx, st); err != nil {
				return fmt.Errorf("%s: down %d (%s) of %s: %w", l.Pkg, last.Version, last.Name, l.Table, err)
			}
		}
		if _, err := c.Exec(ctx, m.D.Rebind(`DELETE FROM `+VersionTable+` WHERE tbl = ? AND version = ?`), l.Table, last.Version); err != nil {
			return fmt.Errorf("%s: down: %w", l.Pkg, err)
		}
		done = *last
		return nil
	})
	return done, err
}

// Status lists l's versions and whether each is applied. Tables that Up
// would adopt count as applied (with a zero AppliedAt). It changes nothing.
func (m Migrator) Status(ctx context.Context, l Line) ([]outbox.MigrationState, error) {
	applied := map[int]time.Time{}
	err := m.InTx(ctx, func(c Conn) error {
		ok, err := m.D.TableExists(ctx, c, VersionTable)
		if err == nil && ok {
			applied, err = m.applied(ctx, c, l)
		}
		if err == nil {
			applied, err = m.forgetDropped(ctx, c, l, applied, false)
		}
		if err != nil {
			return err
		}
		adopt, err := m.adoptable(ctx, c, l, applied)
		for _, mig := range adopt {
			applied[mig.Version] = time.Time{}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: migrations: %w", l.Pkg, err)
	}
	out := make([]outbox.MigrationState, len(l.Migrations))
	for i, mig := range l.Migrations {
		at, ok := applied[mig.Version]
		out[i] = outbox.MigrationState{Version: mig.Version, Name: mig.Name, Applied: ok, AppliedAt: at}
	}
	return out, nil
}

// Script is the SQL text of what Up runs on a database where nothing of l
// is applied: the version table, then each version's statements and the
// INSERT recording it.
func (d Dialect) Script(l Line) string {
	var b strings.Builder
	b.WriteString(d.versionsDDL() + ";\n")
	for _, mig := range l.Migrations {
		fmt.Fprintf(&b, "\n-- %s version %d: %s\n", l.Table, mig.Version, mig.Name)
		for _, st := range mig.Up {
			b.WriteString(strings.TrimSuffix(strings.TrimSpace(st), ";") + ";\n")
		}
		fmt.Fprintf(&b, "INSERT INTO %s (tbl, version, name, applied_at) VALUES (%s, %d, %s, %s);\n",
			VersionTable, quoteString(l.Table), mig.Version, quoteString(mig.Name), d.NowMicros())
	}
	return b.String()
}

func quoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Statements splits a script at ";\n" into its statements.
func Statements(script string) []string {
	var out []string
	for _, st := range strings.Split(script, ";\n") {
		if st = strings.TrimSpace(st); st != "" {
			out = append(out, st)
		}
	}
	return out
}
