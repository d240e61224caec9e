package sqldialect_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/eventkit/eventkit/internal/sqldialect"
)

func TestRebindAndUpsert(t *testing.T) {
	for _, c := range []struct {
		d                     sqldialect.Dialect
		rebind, upsert, quote string
	}{
		{sqldialect.Postgres, "a = $1 AND b IN ($2, $3)",
			"INSERT INTO stock (sku, qty) VALUES ($1, $2) ON CONFLICT (sku) DO UPDATE SET qty = EXCLUDED.qty", `"s"."t""x"`},
		{sqldialect.MySQL, "a = ? AND b IN (?, ?)",
			"INSERT INTO stock (sku, qty) VALUES (?, ?) ON DUPLICATE KEY UPDATE qty = VALUES(qty)", "`s`.`t\"x`"},
		{sqldialect.SQLite, "a = ? AND b IN (?, ?)",
			"INSERT INTO stock (sku, qty) VALUES (?, ?) ON CONFLICT (sku) DO UPDATE SET qty = EXCLUDED.qty", `"s"."t""x"`},
	} {
		if got := c.d.Rebind("a = ? AND b IN (" + sqldialect.MySQL.Placeholders(2) + ")"); got != c.rebind {
			t.Errorf("%v Rebind: %q, want %q", c.d, got, c.rebind)
		}
		if got := c.d.Upsert("stock", []string{"sku"}, []string{"sku", "qty"}); got != c.upsert {
			t.Errorf("%v Upsert: %q, want %q", c.d, got, c.upsert)
		}
		if got := c.d.Quote(`s.t"x`); got != c.quote {
			t.Errorf("%v Quote: %q, want %q", c.d, got, c.quote)
		}
	}
	if err := sqldialect.Dialect(9).Check("x"); err == nil || !strings.Contains(err.Error(), "unknown dialect Dialect(9)") {
		t.Errorf("unknown dialect: %v", err)
	}
}

func TestIdent(t *testing.T) {
	errBad := errors.New("bad")
	for _, c := range []struct {
		r    sqldialect.Ident
		name string
		ok   bool
	}{
		{sqldialect.Table, "processed_events", true},
		{sqldialect.Table, "inbox.processed_events", true},
		{sqldialect.Table, strings.Repeat("a", 63), true},
		{sqldialect.Table, strings.Repeat("a", 64), false},
		{sqldialect.Table, "a.b.c", false},
		{sqldialect.Table, "1abc", false},
		{sqldialect.Table, "a;drop", false},
		{sqldialect.Table, "", false},
		{sqldialect.Table, ".a", false},
		{sqldialect.Column, "a.b", false},
		{sqldialect.Ident{MaxLen: 51}, strings.Repeat("a", 51), true},
		{sqldialect.Ident{MaxLen: 51}, strings.Repeat("a", 52), false},
	} {
		err := c.r.Err(errBad, c.name)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, errBad)) {
			t.Errorf("%+v %q: %v, want ok=%v", c.r, c.name, err, c.ok)
		}
	}
}
