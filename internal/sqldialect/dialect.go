// Package sqldialect is the one place that knows how eventkit's SQL
// databases differ: placeholders, the clock, the blob type, upserts,
// identifier rules and quoting, advisory locks, lock-name scoping and the
// probes the migrator needs. The outbox stores, the inboxes, the
// dead-letter store, the audit, the demo and the CLI all speak SQL through
// it, and every table eventkit owns is versioned by its Migrator.
//
// A new database is one more entry in the dialects table below (its
// constant and its spec) plus its migration files in the stores; nothing
// else switches on the dialect.
package sqldialect

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Dialect selects the SQL spoken by a connection. sqlinbox.Dialect is this
// type, so sqlinbox.Postgres, MySQL and SQLite are its values.
type Dialect int

// The supported dialects. Register a new one here and in dialects.
const (
	Postgres Dialect = iota + 1 // PostgreSQL (pgx, or database/sql via pgx's stdlib driver, lib/pq, ...)
	MySQL                       // MySQL and MariaDB (go-sql-driver/mysql)
	SQLite                      // SQLite (modernc.org/sqlite, mattn/go-sqlite3)
)

// spec is everything that differs between databases.
type spec struct {
	name string
	// dollar: placeholders are $1, $2, ... instead of ?.
	dollar bool
	// nowMicros is an SQL expression for the database clock in
	// microseconds since the Unix epoch (an integer).
	nowMicros string
	blob      string
	// onDuplicateKey: MySQL's upsert (ON DUPLICATE KEY UPDATE c =
	// VALUES(c)) instead of ON CONFLICT (k) DO UPDATE SET c = EXCLUDED.c.
	onDuplicateKey bool
	quote          byte
	// tableExists returns a query (? for arguments) giving a count > 0
	// when table exists, for a table name that passed Check.
	tableExists func(table string) (string, []any)
	// prefixed lists (kind, quoted name) of the tables, and functions
	// without arguments, of the current schema whose names match the LIKE
	// pattern ?; cascade: DROP ... CASCADE.
	prefixed string
	cascade  bool
	// lock is the statement taking a transaction-scoped lock for the
	// migrator, with one ? for the lock name ("" none: the database
	// serializes writers anyway); unlock releases it ("" at commit).
	lock, unlock string
}

var dialects = map[Dialect]spec{
	Postgres: {
		name: "postgres", dollar: true,
		nowMicros: `(extract(epoch FROM clock_timestamp()) * 1000000)::bigint`,
		blob:      "BYTEA", quote: '"',
		tableExists: func(t string) (string, []any) {
			return `SELECT count(*) FROM (SELECT to_regclass(?) AS c) r WHERE c IS NOT NULL`, []any{t}
		},
		prefixed: `SELECT 'TABLE', quote_ident(relname) FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace = current_schema()::regnamespace AND relname LIKE ? ESCAPE '\'
UNION ALL SELECT 'FUNCTION', quote_ident(proname) || '()' FROM pg_proc WHERE pronamespace = current_schema()::regnamespace AND proname LIKE ? ESCAPE '\' AND pronargs = 0`,
		cascade: true,
		// Advisory locks are per database in PostgreSQL: no scoping needed.
		lock: `SELECT pg_advisory_xact_lock(('x' || substr(md5(?::text), 1, 16))::bit(64)::bigint)`,
	},
	MySQL: {
		name:      "mysql",
		nowMicros: `CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)`,
		blob:      "LONGBLOB", onDuplicateKey: true, quote: '`',
		tableExists: func(t string) (string, []any) {
			if db, name, ok := strings.Cut(t, "."); ok {
				return `SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?`, []any{db, name}
			}
			return `SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?`, []any{t}
		},
		// '\' is MySQL's default LIKE escape (and a string escape in its literals).
		prefixed: "SELECT 'TABLE', CONCAT('`', table_name, '`') FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE ?",
		// GET_LOCK names are server-wide: the name is scoped to the
		// database (see LockName).
		lock:   `SELECT GET_LOCK(CONCAT('eventkit_m_', LEFT(SHA2(CONCAT(LOWER(DATABASE()), CHAR(0), LOWER(?)), 256), 32)), 60)`,
		unlock: `SELECT RELEASE_LOCK(CONCAT('eventkit_m_', LEFT(SHA2(CONCAT(LOWER(DATABASE()), CHAR(0), LOWER(?)), 256), 32)))`,
	},
	SQLite: {
		name:      "sqlite",
		nowMicros: `CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)`,
		blob:      "BLOB", quote: '"',
		tableExists: func(t string) (string, []any) {
			if schema, name, ok := strings.Cut(t, "."); ok {
				return `SELECT count(*) FROM ` + schema + `.sqlite_master WHERE type = 'table' AND name = ?`, []any{name}
			}
			return `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, []any{t}
		},
		prefixed: `SELECT 'TABLE', '"' || name || '"' FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\'`,
	},
}

func (d Dialect) spec() (spec, bool) { s, ok := dialects[d]; return s, ok }

// String returns "postgres", "mysql" or "sqlite".
func (d Dialect) String() string {
	if s, ok := d.spec(); ok {
		return s.name
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// Valid reports whether d is a registered dialect.
func (d Dialect) Valid() bool { _, ok := d.spec(); return ok }

// Check returns an error unless d is a registered dialect; pkg prefixes it.
func (d Dialect) Check(pkg string) error {
	if !d.Valid() {
		return fmt.Errorf("%s: unknown dialect %v", pkg, d)
	}
	return nil
}

// Rebind turns '?' placeholders into the dialect's ($1, $2, ... on
// PostgreSQL; unchanged elsewhere). No '?' may appear in literals.
func (d Dialect) Rebind(q string) string {
	if s, _ := d.spec(); !s.dollar {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// Placeholders returns n comma-separated placeholders ("?, ?" or "$1, $2").
func (d Dialect) Placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return d.Rebind(strings.Repeat("?, ", n-1) + "?")
}

// NowMicros is an SQL expression for the database clock in microseconds
// since the Unix epoch.
func (d Dialect) NowMicros() string { s, _ := d.spec(); return s.nowMicros }

// Blob is the column type for arbitrary bytes.
func (d Dialect) Blob() string { s, _ := d.spec(); return s.blob }

// Excluded is the value col would have had in an upsert's rejected row
// (EXCLUDED.col, or VALUES(col) on MySQL).
func (d Dialect) Excluded(col string) string {
	if s, _ := d.spec(); s.onDuplicateKey {
		return "VALUES(" + col + ")"
	}
	return "EXCLUDED." + col
}

// OnConflict is the upsert clause for a conflict on keyCols: it runs the
// assignments sets ("c = " + d.Excluded("c"), ...), or does nothing when
// sets is empty.
func (d Dialect) OnConflict(keyCols []string, sets ...string) string {
	if s, _ := d.spec(); s.onDuplicateKey {
		if len(sets) == 0 {
			sets = []string{keyCols[0] + " = " + keyCols[0]}
		}
		return " ON DUPLICATE KEY UPDATE " + strings.Join(sets, ", ")
	}
	if len(sets) == 0 {
		return " ON CONFLICT (" + strings.Join(keyCols, ", ") + ") DO NOTHING"
	}
	return " ON CONFLICT (" + strings.Join(keyCols, ", ") + ") DO UPDATE SET " + strings.Join(sets, ", ")
}

// DoNothing is the clause that makes an INSERT skip a row that conflicts
// with any unique key (ON CONFLICT DO NOTHING; on MySQL a no-op ON
// DUPLICATE KEY UPDATE of col, which unlike INSERT IGNORE does not turn
// other errors into warnings).
func (d Dialect) DoNothing(col string) string {
	if s, _ := d.spec(); s.onDuplicateKey {
		return " ON DUPLICATE KEY UPDATE " + col + " = " + col
	}
	return " ON CONFLICT DO NOTHING"
}

// Upsert returns an INSERT of cols into table that, when a row with the
// same keyCols exists, overwrites its other columns instead. Table and
// column names must have passed Check.
func (d Dialect) Upsert(table string, keyCols, cols []string) string {
	isKey := map[string]bool{}
	for _, c := range keyCols {
		isKey[c] = true
	}
	var sets []string
	for _, c := range cols {
		if !isKey[c] {
			sets = append(sets, c+" = "+d.Excluded(c))
		}
	}
	return "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + d.Placeholders(len(cols)) + ")" + d.OnConflict(keyCols, sets...)
}

// Quote quotes an identifier (each part of schema.table) for the dialect.
// Names that passed Check need no quoting; Quote is for names eventkit did
// not choose (a LIKE match from the catalogue, say).
func (d Dialect) Quote(ident string) string {
	s, _ := d.spec()
	q := string(s.quote)
	if q == "" {
		q = `"`
	}
	parts := strings.Split(ident, ".")
	for i, p := range parts {
		parts[i] = q + strings.ReplaceAll(p, q, q+q) + q
	}
	return strings.Join(parts, ".")
}

// Base returns a table name without its schema.
func Base(table string) string { return table[strings.LastIndexByte(table, '.')+1:] }

// LockName is a server-wide lock name for table in database: prefix and
// 32 hex digits of the SHA-256 of the lower-cased database and table names
// (GET_LOCK names are server-wide, so two databases' tables of one name
// must not share a lock). Lower-cased because names may be
// case-insensitive (lower_case_table_names): two spellings of one table
// must share the lock, while two tables whose names differ only in case,
// where that makes them distinct, merely share a lock, which is safe.
func LockName(prefix, database, table string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(database) + "\x00" + strings.ToLower(table)))
	return prefix + hex.EncodeToString(sum[:16])
}
