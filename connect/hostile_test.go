package connect_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/mysqloutbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
	"github.com/eventkit/eventkit/outbox/sqliteoutbox"
)

// hostileNames are names that must never reach SQL or a broker as they are.
var hostileNames = []string{
	`a"b`, "a'b", "a`b", "a;b", "t; DROP TABLE x", "a b", " a", "a*", "a>", "a.*", "a.>", "a/b", `a\b`,
	"a-b", "1abc", "a..b", ".a", "a.", "a.b.c", "ä", "日本", "a\x00b", "a\nb", "",
	strings.Repeat("a", 1024),
}

// TestHostileSQLNamesRejected gives every configurable SQL name (outbox,
// inbox and dead-letter tables, CDC table, slot and publication) each
// hostile name: each constructor returns its typed error before any SQL is
// built. "" means the default and is skipped.
func TestHostileSQLNamesRejected(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://127.0.0.1:1/x") // never dialled
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, n := range hostileNames {
		if n == "" {
			continue
		}
		checks := []struct {
			what string
			err  error
			want error
		}{
			{"postgres outbox table", second(pgoutbox.New(pool, pgoutbox.Config{Table: n})), outbox.ErrInvalidTable},
			{"mysql outbox table", second(mysqloutbox.New(db, mysqloutbox.Config{Table: n})), outbox.ErrInvalidTable},
			{"sqlite outbox table", second(sqliteoutbox.New(db, sqliteoutbox.Config{Table: n})), outbox.ErrInvalidTable},
			{"pgcdc table", second(pgcdc.New(pool, nil, pgcdc.Config{Table: n})), nil},
			{"pgcdc slot", second(pgcdc.New(pool, nil, pgcdc.Config{Slot: n})), pgcdc.ErrInvalidName},
			{"pgcdc publication", second(pgcdc.New(pool, nil, pgcdc.Config{Publication: n})), pgcdc.ErrInvalidName},
		}
		for _, d := range []sqlinbox.Dialect{sqlinbox.Postgres, sqlinbox.MySQL, sqlinbox.SQLite} {
			checks = append(checks,
				struct {
					what      string
					err, want error
				}{"inbox table (" + d.String() + ")", second(sqlinbox.New(db, d, sqlinbox.Options{Table: n})), sqlinbox.ErrInvalidTable},
				struct {
					what      string
					err, want error
				}{"dead-letter table (" + d.String() + ")", second(sqldeadletter.New(db, d, n)), sqlinbox.ErrInvalidTable})
		}
		for _, c := range checks {
			if n == "1abc" && strings.HasPrefix(c.what, "pgcdc s") || n == "1abc" && strings.HasPrefix(c.what, "pgcdc p") {
				continue // a valid slot name, and publications are quoted
			}
			if c.err == nil {
				t.Errorf("%s %q accepted", c.what, short(n))
			} else if c.want != nil && !errors.Is(c.err, c.want) {
				t.Errorf("%s %q: %v, want %v", c.what, short(n), c.err, c.want)
			}
		}
	}
}

func second[T any](_ T, err error) error { return err }

func short(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}
