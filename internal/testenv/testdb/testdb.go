// Package testdb creates throwaway databases on the test servers of
// package testenv, for tests that need two databases on one server (names
// that must not collide across databases). Each database is dropped with
// the test; databases that a killed test run left behind are dropped by
// the next run after an hour.
package testdb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/eventkit/eventkit/internal/testenv"
)

// prefix starts every database name, followed by the creation time (unix
// seconds, hex) and a random part.
const prefix = "ekdb"

func newName() string { return testenv.Name(fmt.Sprintf("%s_%x", prefix, time.Now().Unix())) }

// stale reports whether name is a database of this package created over an
// hour ago.
func stale(name string) bool {
	parts := strings.Split(name, "_")
	if len(parts) != 3 || parts[0] != prefix {
		return false
	}
	sec, err := strconv.ParseInt(parts[1], 16, 64)
	return err == nil && time.Since(time.Unix(sec, 0)) > time.Hour
}

var pgSweep, mySweep sync.Once

// Postgres creates a database on the test PostgreSQL server and returns its
// URL (the server's URL with the database replaced). With t, the
// connections to it are closed, its replication slots dropped and the
// database dropped.
func Postgres(t testing.TB) string {
	t.Helper()
	base := testenv.Postgres.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	pgSweep.Do(func() {
		rows, err := admin.Query(ctx, `SELECT datname::text FROM pg_database WHERE datname LIKE '`+prefix+`\_%'`)
		if err != nil {
			return
		}
		names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, n := range names {
			if stale(n) {
				_ = dropPostgres(ctx, admin, n)
			}
		}
	})
	name := newName()
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("testdb: drop %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		if err := dropPostgres(ctx, admin, name); err != nil {
			t.Errorf("testdb: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// dropPostgres drops a database of this package: the connections to it
// (the test's own) are ended, and its slots dropped, which DROP DATABASE
// requires.
func dropPostgres(ctx context.Context, admin *pgx.Conn, name string) error {
	for {
		_, _ = admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name)
		_, err := admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, name)
		if err != nil {
			return err
		}
		var left int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&left); err != nil {
			return err
		}
		if left == 0 {
			break
		}
		select { // a walsender that was just terminated still holds its slot
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	_, err := admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
	return err
}

// MySQL creates a database on the test MariaDB/MySQL server and returns its
// DSN (the server's DSN with the database replaced). It is dropped with t.
func MySQL(t testing.TB) string {
	t.Helper()
	base := testenv.MySQL.URL(t)
	db, err := sql.Open("mysql", base)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mySweep.Do(func() {
		rows, err := db.QueryContext(ctx, `SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '`+prefix+`\_%'`)
		if err != nil {
			return
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if rows.Scan(&n) == nil && stale(n) {
				names = append(names, n)
			}
		}
		for _, n := range names {
			_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+n+"`")
		}
	})
	name := newName()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE `"+name+"`"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("mysql", base)
		if err != nil {
			t.Errorf("testdb: drop %s: %v", name, err)
			return
		}
		defer db.Close()
		if _, err := db.Exec("DROP DATABASE IF EXISTS `" + name + "`"); err != nil {
			t.Errorf("testdb: drop %s: %v", name, err)
		}
	})
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBName = name
	return cfg.FormatDSN()
}
