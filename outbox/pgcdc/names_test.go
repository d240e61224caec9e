package pgcdc_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

var validSlot = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// TestDefaultSlotName: valid, deterministic, and different for every
// database and table, also for hostile names and names that differ only
// past the point where the readable part is cut.
func TestDefaultSlotName(t *testing.T) {
	long := strings.Repeat("x", 80)
	cases := [][2]string{
		{"shop", "eventkit_outbox"}, {"billing", "eventkit_outbox"}, {"shop", "other_outbox"},
		{"shop", "public.eventkit_outbox"}, {"shop", "public_eventkit_outbox"}, // '.' and '_' read alike
		{"a-b", "t"}, {"a_b", "t"}, {"A_B", "t"}, // replaced and lower-cased characters read alike
		{"shop_x", "t"}, {"shop", "x_t"}, // where database and table meet
		{`Ünïcødé "db"; DROP DATABASE x; --`, "t"}, {"", "t"}, {"\x00", "t"},
		{long + "1", "t"}, {long + "2", "t"}, {"d", long + "1"}, {"d", long + "2"},
	}
	seen := map[string][2]string{}
	for _, c := range cases {
		n := pgcdc.DefaultSlotName(c[0], c[1])
		if !validSlot.MatchString(n) || !strings.HasPrefix(n, "eventkit_") {
			t.Fatalf("DefaultSlotName(%q, %q) = %q: not a valid slot name", c[0], c[1], n)
		}
		if n != pgcdc.DefaultSlotName(c[0], c[1]) {
			t.Fatalf("DefaultSlotName(%q, %q) is not deterministic", c[0], c[1])
		}
		if prev, dup := seen[n]; dup {
			t.Fatalf("DefaultSlotName(%q, %q) = DefaultSlotName(%q, %q) = %q", c[0], c[1], prev[0], prev[1], n)
		}
		seen[n] = c
	}
	// Unquoted identifiers fold to lower case: one table, one name.
	if pgcdc.DefaultSlotName("shop", "Eventkit_Outbox") != pgcdc.DefaultSlotName("shop", "eventkit_outbox") {
		t.Fatal("two spellings of one table give two slot names")
	}
	// The example of the package doc.
	if n := pgcdc.DefaultSlotName("shop", "eventkit_outbox"); n != "eventkit_shop_eventkit_outbox_b7a662892c7c" {
		t.Fatalf("DefaultSlotName(shop, eventkit_outbox) = %q", n)
	}
}

func distinctIDs(rec *outboxtest.Recorder) map[string]bool {
	m := map[string]bool{}
	for _, p := range rec.Events() {
		m[p.Event.ID] = true
	}
	return m
}

// databaseOf returns the name of the database of e's pool.
func databaseOf(t *testing.T, e *env) string {
	t.Helper()
	var db string
	if err := e.pool.QueryRow(context.Background(), `SELECT current_database()::text`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestTwoDatabases runs a CDC relay with the default names on the default
// table in each of two databases of one server: both stream at once, each
// sees only its own slot, and tearing one down leaves the other running.
// A slot of the other database is refused by Setup, Run and Teardown, even
// when named explicitly.
func TestTwoDatabases(t *testing.T) {
	ctx := context.Background()
	a := newEnvOn(t, testdb.Postgres(t), outbox.DefaultTable)
	b := newEnvOn(t, testdb.Postgres(t), outbox.DefaultTable)
	dbA, dbB := databaseOf(t, a), databaseOf(t, b)
	if a.slot != pgcdc.DefaultSlotName(dbA, outbox.DefaultTable) || b.slot != pgcdc.DefaultSlotName(dbB, outbox.DefaultTable) || a.slot == b.slot {
		t.Fatalf("slots %q (database %s) and %q (database %s)", a.slot, dbA, b.slot, dbB)
	}
	recA, recB := &outboxtest.Recorder{}, &outboxtest.Recorder{}
	ra, rb := a.relay(recA), b.relay(recB)
	stopA := start(t, ra)
	start(t, rb)
	testenv.WaitFor(t, 10*time.Second, "both relays streaming", func() bool { return ra.Stats().Streaming && rb.Stats().Streaming })
	for i := range 50 {
		a.insert("t", ev("a", i))
		b.insert("t", ev("b", i))
	}
	// Delivered, not rows deleted: that the relay deletes every delivered
	// row is another test's subject (issue 9, item 2).
	testenv.WaitFor(t, 20*time.Second, "both outboxes relayed", func() bool {
		return len(distinctIDs(recA)) == 50 && len(distinctIDs(recB)) == 50
	})

	// Status reports this database's slot only.
	st, err := a.relay(nil).Status(ctx)
	if err != nil || !st.SlotExists || st.Slot != a.slot || !st.Active || st.OtherDatabase != "" {
		t.Fatalf("status of a: %+v, %v", st, err)
	}
	foreign := func(c *pgcdc.Config) { c.Slot = b.slot }
	st, err = a.relay(nil, foreign).Status(ctx)
	if err != nil || st.SlotExists || st.Active || st.OtherDatabase != dbB {
		t.Fatalf("status of b's slot from a: %+v, %v", st, err)
	}
	// Setup, Run and Teardown refuse b's slot from a, with one clear error.
	if err := a.relay(nil, foreign).Setup(ctx); !errors.Is(err, pgcdc.ErrMismatch) || !strings.Contains(err.Error(), dbB) {
		t.Fatalf("Setup with b's slot from a: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = a.relay(&outboxtest.Recorder{}, foreign).Run(rctx)
	cancel()
	if !errors.Is(err, pgcdc.ErrMismatch) {
		t.Fatalf("Run with b's slot from a: %v (want ErrMismatch at once)", err)
	}
	if err := a.relay(nil, foreign).Teardown(ctx); !errors.Is(err, pgcdc.ErrMismatch) {
		t.Fatalf("Teardown of b's slot from a: %v", err)
	}

	// Tearing a down leaves b's slot, publication and relay alone.
	stopA()
	if err := a.relay(nil).Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := a.relay(nil).Status(ctx); err != nil || st.SlotExists || st.PublicationExists {
		t.Fatalf("status of a after its teardown: %+v, %v", st, err)
	}
	st, err = b.relay(nil).Status(ctx)
	if err != nil || !st.SlotExists || !st.PublicationExists || !st.Active {
		t.Fatalf("status of b after a's teardown: %+v, %v", st, err)
	}
	for i := 50; i < 60; i++ {
		b.insert("t", ev("b", i))
	}
	testenv.WaitFor(t, 20*time.Second, "b still relaying", func() bool { return len(distinctIDs(recB)) == 60 })
	if s := rb.Stats(); !s.Streaming || s.Reconnects != 0 {
		t.Fatalf("b's relay was disturbed: %+v", s)
	}
}

// TestStartupChecks: a publication that lacks the table, or none at all,
// stops Run at once with one clear error instead of a retry loop.
func TestStartupChecks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	run := func() error {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return e.relay(&outboxtest.Recorder{}).Run(rctx)
	}
	other := testenv.Name(prefix)
	if _, err := e.pool.Exec(ctx, `CREATE TABLE `+other+` (x int)`); err != nil {
		t.Fatal(err)
	}
	defer e.pool.Exec(context.Background(), `DROP TABLE `+other) //nolint:errcheck
	if _, err := e.pool.Exec(ctx, `ALTER PUBLICATION `+e.pub+` SET TABLE `+other); err != nil {
		t.Fatal(err)
	}
	if err := run(); !errors.Is(err, pgcdc.ErrMismatch) || !strings.Contains(err.Error(), "does not include table") {
		t.Fatalf("Run with a publication without the table: %v", err)
	}
	if err := e.relay(nil).Setup(ctx); !errors.Is(err, pgcdc.ErrMismatch) {
		t.Fatalf("Setup with a publication without the table: %v", err)
	}
	if _, err := e.pool.Exec(ctx, `DROP PUBLICATION `+e.pub); err != nil {
		t.Fatal(err)
	}
	if err := run(); !errors.Is(err, pgcdc.ErrPublicationNotFound) {
		t.Fatalf("Run without the publication: %v", err)
	}
}

// TestOldDefaultNameAdopted: a slot of the old default name (eventkit_ +
// table) in this database is used, not replaced by a new one; the same
// name in another database is not this outbox's and is left alone.
func TestOldDefaultNameAdopted(t *testing.T) {
	ctx := context.Background()
	urlB := testdb.Postgres(t)
	table := tableName()
	old := "eventkit_" + table
	e := newEnvOn(t, testenv.Postgres.URL(t), table, func(pool *pgxpool.Pool) {
		// What Setup of an earlier version created.
		if _, err := pool.Exec(ctx, `CREATE PUBLICATION `+old+` FOR TABLE `+table+` WITH (publish = 'insert')`); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput', false)`, old); err != nil {
			t.Fatal(err)
		}
	})
	slot, pub, err := e.relay(nil).Names(ctx)
	if err != nil || slot != old || pub != old || e.slot != old {
		t.Fatalf("names %q, %q (%v), want the old slot %q adopted", slot, pub, err, old)
	}
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`,
		pgcdc.DefaultSlotName(databaseOf(t, e), table)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a slot of the new name was created beside the old one: %d, %v", n, err)
	}
	rec := &outboxtest.Recorder{}
	start(t, e.relay(rec))
	e.insert("t", ev("s", 1))
	testenv.WaitFor(t, 10*time.Second, "delivery through the old slot", func() bool { return len(rec.Events()) == 1 })

	// Another database with the same table does not take the old slot.
	b := newEnvOn(t, urlB, table)
	if want := pgcdc.DefaultSlotName(databaseOf(t, b), table); b.slot != want {
		t.Fatalf("database b uses slot %q, want its own %q", b.slot, want)
	}
}
