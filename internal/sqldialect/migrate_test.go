package sqldialect_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/internal/testenv"
)

func open(t *testing.T, d sqldialect.Dialect) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	switch d {
	case sqldialect.SQLite:
		db, err = sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "m.db")+"?_pragma=busy_timeout(5000)")
	case sqldialect.Postgres:
		db, err = sql.Open("pgx", testenv.Postgres.URL(t))
	case sqldialect.MySQL:
		db, err = sql.Open("mysql", testenv.MySQL.URL(t))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// oldDDL is what the unversioned releases ran: the inbox's keys and
// positions tables and the dead-letter table (on MySQL with a separate
// CREATE INDEX), recording no version anywhere.
func oldDDL(d sqldialect.Dialect, inboxT, dlT string) []string {
	var in []string
	switch d {
	case sqldialect.Postgres:
		in = []string{`CREATE TABLE IF NOT EXISTS ` + inboxT + ` (consumer text NOT NULL, event_id text NOT NULL,
    event_type text NOT NULL DEFAULT '', processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id))`,
			`CREATE INDEX IF NOT EXISTS ` + inboxT + `_processed_at_idx ON ` + inboxT + ` (processed_at)`,
			`CREATE TABLE IF NOT EXISTS ` + inboxT + `_positions (consumer text NOT NULL, topic text NOT NULL, subject text NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0, failures integer NOT NULL DEFAULT 0, parked_seq bigint, last_error text, PRIMARY KEY (consumer, topic, subject))`}
	case sqldialect.MySQL:
		in = []string{`CREATE TABLE IF NOT EXISTS ` + inboxT + ` (
    consumer VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    event_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    event_type VARCHAR(255) NOT NULL DEFAULT '', processed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (consumer, event_id), KEY ` + inboxT + `_processed_at_idx (processed_at)) ENGINE=InnoDB`,
			`CREATE TABLE IF NOT EXISTS ` + inboxT + `_positions (k BINARY(32) NOT NULL,
    consumer VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    topic VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    subject VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0, failures INT NOT NULL DEFAULT 0, parked_seq BIGINT NULL, last_error TEXT NULL, PRIMARY KEY (k)) ENGINE=InnoDB`}
	default:
		in = []string{`CREATE TABLE IF NOT EXISTS ` + inboxT + ` (consumer TEXT NOT NULL, event_id TEXT NOT NULL,
    event_type TEXT NOT NULL DEFAULT '', processed_at TEXT NOT NULL, PRIMARY KEY (consumer, event_id)) WITHOUT ROWID`,
			`CREATE INDEX IF NOT EXISTS ` + inboxT + `_processed_at_idx ON ` + inboxT + ` (processed_at)`,
			`CREATE TABLE IF NOT EXISTS ` + inboxT + `_positions (consumer TEXT NOT NULL, topic TEXT NOT NULL, subject TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0, parked_seq INTEGER, last_error TEXT,
    PRIMARY KEY (consumer, topic, subject)) WITHOUT ROWID`}
	}
	blob := map[sqldialect.Dialect]string{sqldialect.Postgres: "BYTEA", sqldialect.MySQL: "LONGBLOB", sqldialect.SQLite: "BLOB"}[d]
	dl := []string{`CREATE TABLE IF NOT EXISTS ` + dlT + ` (topic VARCHAR(255) NOT NULL, grp VARCHAR(255) NOT NULL,
    event_id VARCHAR(255) NOT NULL, event_type VARCHAR(255) NOT NULL, reason VARCHAR(32) NOT NULL, error TEXT NOT NULL,
    attempts INT NOT NULL, dead_at BIGINT NOT NULL, envelope ` + blob + ` NOT NULL, replays INT NOT NULL DEFAULT 0,
    replayed_at BIGINT, PRIMARY KEY (topic, grp, event_id))`}
	if d == sqldialect.MySQL {
		dl = append(dl, `CREATE INDEX `+dlT+`_dead_at ON `+dlT+` (dead_at)`)
	} else {
		dl = append(dl, `CREATE INDEX IF NOT EXISTS `+dlT+`_dead_at ON `+dlT+` (dead_at)`)
	}
	return append(in, dl...)
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// TestAdoptOldTables: tables created by the unversioned DDL of earlier
// releases, holding rows, are adopted by Migrate as version 1 (and 2 for
// the positions) without a change to their rows; then down refuses to drop
// a table that holds rows, does so with force, and up creates it again.
func TestAdoptOldTables(t *testing.T) {
	for _, d := range []sqldialect.Dialect{sqldialect.SQLite, sqldialect.Postgres, sqldialect.MySQL} {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			db := open(t, d)
			inboxT, dlT := testenv.Name("adopt_in"), testenv.Name("adopt_dl")
			t.Cleanup(func() {
				for _, tb := range []string{inboxT, inboxT + "_positions", dlT} {
					_, _ = db.Exec("DROP TABLE IF EXISTS " + tb)
				}
				_, _ = db.Exec(d.Rebind("DELETE FROM "+sqldialect.VersionTable+" WHERE tbl IN (?, ?)"), inboxT, dlT)
			})
			for _, q := range oldDDL(d, inboxT, dlT) {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatalf("old DDL: %v\n%s", err, q)
				}
			}
			in, err := sqlinbox.New(db, d, sqlinbox.Options{Table: inboxT})
			if err != nil {
				t.Fatal(err)
			}
			// A key recorded by the old release, and a dead letter.
			fresh, err := claim(ctx, db, in, inbox.Key{Consumer: "g", EventID: "e1", EventType: "t"})
			if err != nil || !fresh {
				t.Fatalf("claim before migrate: %v %v", fresh, err)
			}
			dls, err := sqldeadletter.New(db, d, dlT)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, d.Rebind(`INSERT INTO `+dlT+` (topic, grp, event_id, event_type, reason, error, attempts, dead_at, envelope)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`), "orders", "g", "e1", "t", "permanent", "boom", 3, time.Now().UnixNano(), []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			// Status before up already counts the old tables as applied.
			st, err := in.MigrationStatus(ctx)
			if err != nil || len(st) != 2 || !st[0].Applied || !st[1].Applied {
				t.Fatalf("inbox status before up: %+v %v", st, err)
			}
			for i := 0; i < 2; i++ { // idempotent
				if err := in.Migrate(ctx); err != nil {
					t.Fatal(err)
				}
				if err := dls.Migrate(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n := count(t, db, d.Rebind("SELECT count(*) FROM "+sqldialect.VersionTable+" WHERE tbl = ?"), inboxT); n != 2 {
				t.Fatalf("inbox versions recorded: %d, want 2 (adopted)", n)
			}
			if n := count(t, db, d.Rebind("SELECT count(*) FROM "+sqldialect.VersionTable+" WHERE tbl = ?"), dlT); n != 1 {
				t.Fatalf("dead-letter versions recorded: %d, want 1 (adopted)", n)
			}
			// Rows intact: the old key still makes a duplicate, the dead letter is there.
			if fresh, err := claim(ctx, db, in, inbox.Key{Consumer: "g", EventID: "e1", EventType: "t"}); err != nil || fresh {
				t.Fatalf("old key after adoption: fresh=%v err=%v", fresh, err)
			}
			if n := count(t, db, "SELECT count(*) FROM "+inboxT); n != 1 {
				t.Fatalf("inbox rows: %d, want 1", n)
			}
			if n := count(t, db, "SELECT count(*) FROM "+dlT+" WHERE error = 'boom'"); n != 1 {
				t.Fatalf("dead-letter rows: %d, want 1", n)
			}

			// Down: version 2 drops the empty positions table; version 1
			// refuses while the keys table holds a row.
			m, err := in.MigrateDown(ctx, false)
			if err != nil || m.Version != 2 {
				t.Fatalf("down 2: %+v %v", m, err)
			}
			if _, err := in.MigrateDown(ctx, false); !errors.Is(err, sqlinbox.ErrDataLoss) {
				t.Fatalf("down 1 with a row: %v, want ErrDataLoss", err)
			}
			if n := count(t, db, "SELECT count(*) FROM "+inboxT); n != 1 {
				t.Fatalf("refused down changed the rows: %d", n)
			}
			if _, err := dls.MigrateDown(ctx, false); !errors.Is(err, sqlinbox.ErrDataLoss) || !strings.Contains(err.Error(), "--force") {
				t.Fatalf("dead-letter down with a row: %v, want ErrDataLoss naming --force", err)
			}
			if m, err := in.MigrateDown(ctx, true); err != nil || m.Version != 1 {
				t.Fatalf("forced down 1: %+v %v", m, err)
			}
			if m, err := in.MigrateDown(ctx, false); err != nil || m.Version != 0 {
				t.Fatalf("down with nothing applied: %+v %v", m, err)
			}
			st, err = in.MigrationStatus(ctx)
			if err != nil || st[0].Applied || st[1].Applied {
				t.Fatalf("status after down: %+v %v", st, err)
			}
			// Up again creates both tables, empty.
			if err := in.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(t, db, "SELECT count(*) FROM "+inboxT+"_positions"); n != 0 {
				t.Fatalf("positions after up: %d", n)
			}
			if st, err = in.MigrationStatus(ctx); err != nil || !st[0].Applied || st[0].AppliedAt.IsZero() || !st[1].Applied {
				t.Fatalf("status after up: %+v %v", st, err)
			}
		})
	}
}

// TestDroppedByHand: a table dropped by hand while its versions stay
// recorded is created again by Migrate.
func TestDroppedByHand(t *testing.T) {
	ctx := context.Background()
	db := open(t, sqldialect.SQLite)
	dls, err := sqldeadletter.New(db, sqldialect.SQLite, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := dls.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DROP TABLE " + sqldeadletter.DefaultTable); err != nil {
		t.Fatal(err)
	}
	if st, err := dls.MigrationStatus(ctx); err != nil || st[0].Applied {
		t.Fatalf("status of a dropped table: %+v %v", st, err)
	}
	if err := dls.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "SELECT count(*) FROM "+sqldeadletter.DefaultTable); n != 0 {
		t.Fatal(n)
	}
}

func claim(ctx context.Context, db *sql.DB, in *sqlinbox.Inbox, k inbox.Key) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	fresh, err := in.ClaimTx(ctx, tx, k)
	if err != nil {
		_ = tx.Rollback()
		return false, err
	}
	return fresh, tx.Commit()
}

// TestNoTx: Tx and PgxTx return an error wrapping ErrNoTx, marked
// permanent, when the context holds no (or the other kind of) inbox
// transaction, and the transaction when it does.
func TestNoTx(t *testing.T) {
	ctx := context.Background()
	if tx, err := sqlinbox.Tx(ctx); tx != nil || !errors.Is(err, sqlinbox.ErrNoTx) || !eventkit.IsPermanent(err) {
		t.Fatalf("Tx without inbox: %v %v", tx, err)
	}
	if tx, err := sqlinbox.PgxTx(ctx); tx != nil || !errors.Is(err, sqlinbox.ErrNoTx) {
		t.Fatalf("PgxTx without inbox: %v %v", tx, err)
	}
	db := open(t, sqldialect.SQLite)
	in, err := sqlinbox.New(db, sqldialect.SQLite, sqlinbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	err = in.Process(ctx, inbox.Key{Consumer: "g", EventID: "e"}, func(ctx context.Context) error {
		if tx, err := sqlinbox.Tx(ctx); tx == nil || err != nil {
			t.Errorf("Tx in Process: %v %v", tx, err)
		}
		_, err := sqlinbox.PgxTx(ctx)
		if !errors.Is(err, sqlinbox.ErrNoTx) || !strings.Contains(err.Error(), "use Tx") {
			t.Errorf("PgxTx under a database/sql inbox: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDropPrefixed: DropPrefixed drops the tables (and, on PostgreSQL, the
// functions) whose names start with the prefix, taking "_" in it literally,
// and leaves a table whose name differs at the "_".
func TestDropPrefixed(t *testing.T) {
	for _, d := range []sqldialect.Dialect{sqldialect.SQLite, sqldialect.Postgres, sqldialect.MySQL} {
		t.Run(d.String(), func(t *testing.T) {
			db := open(t, d)
			ctx := context.Background()
			base := testenv.Name("dp")
			prefix, decoy := base+"_", base+"z_t"
			ddl := []string{
				`CREATE TABLE ` + prefix + `a (x INTEGER)`,
				`CREATE TABLE ` + prefix + `b (x INTEGER)`,
				`CREATE TABLE ` + decoy + ` (x INTEGER)`,
			}
			if d == sqldialect.Postgres {
				ddl = append(ddl, `CREATE FUNCTION `+prefix+`f() RETURNS integer LANGUAGE sql AS 'SELECT 1'`)
			}
			t.Cleanup(func() {
				for _, x := range []string{prefix + "a", prefix + "b", decoy} {
					_, _ = db.Exec(`DROP TABLE IF EXISTS ` + x)
				}
				if d == sqldialect.Postgres {
					_, _ = db.Exec(`DROP FUNCTION IF EXISTS ` + prefix + `f()`)
				}
			})
			for _, st := range ddl {
				if _, err := db.Exec(st); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.DropPrefixed(ctx, sqldialect.SQLConn{Q: db}, prefix); err != nil {
				t.Fatal(err)
			}
			c := sqldialect.SQLConn{Q: db}
			for name, want := range map[string]bool{prefix + "a": false, prefix + "b": false, decoy: true} {
				if ok, err := d.TableExists(ctx, c, name); err != nil || ok != want {
					t.Errorf("%s exists: %v %v, want %v", name, ok, err, want)
				}
			}
			if d == sqldialect.Postgres {
				if n := count(t, db, `SELECT count(*) FROM pg_proc WHERE proname = $1`, prefix+"f"); n != 0 {
					t.Errorf("function %sf() not dropped", prefix)
				}
			}
		})
	}
}
