package pgcdc

import (
	"context"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// TestStreamedRowParkedMeanwhileStaysParked: the stream hands over a row
// that something else (a previous leader still finishing its last call)
// parked after it was written. Completing it (deleting, or marking it
// delivered with Retention) and counting a failed attempt must leave it
// parked, as it is: not deleted, not marked delivered, not unparked.
func TestStreamedRowParkedMeanwhileStaysParked(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.Postgres.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	table := testenv.Name("cdcparked")
	store, err := pgoutbox.New(pool, pgoutbox.Config{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table+`, `+table+`_migrations, `+table+`_subject_seq, `+table+`_leases, `+table+`_relays CASCADE; DROP FUNCTION IF EXISTS `+table+`_notify()`)
	})
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Add(ctx, tx, "t", eventkit.New("x.y", "application/json", []byte(`{}`), eventkit.WithSubject("s"))); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var seq int64
	var xmin string
	if err := pool.QueryRow(ctx, `SELECT seq, xmin::text FROM `+table).Scan(&seq, &xmin); err != nil {
		t.Fatal(err)
	}
	if err := store.Fail(ctx, outbox.FailParams{Seq: seq, Reason: "poison", Park: true}); err != nil {
		t.Fatal(err)
	}
	r, err := New(pool, nil, Config{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := strconv.ParseUint(xmin, 10, 32)
	push := func() {
		it := &txn{xid: uint32(x), end: 1}
		it.items = []*item{{rec: outbox.Record{Seq: seq}, t: it}}
		if !r.src.push(it) {
			t.Fatal("push refused")
		}
	}
	parked := func(what string) {
		t.Helper()
		var n int
		var attempts int
		if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(max(attempts), -1) FROM `+table+`
  WHERE parked_at IS NOT NULL AND delivered_at IS NULL`).Scan(&n, &attempts); err != nil {
			t.Fatal(err)
		}
		if n != 1 || attempts != 1 {
			t.Fatalf("after %s: %d parked rows (attempts %d), want the row parked as it was", what, n, attempts)
		}
	}
	for _, keep := range []bool{false, true} {
		push()
		n, err := r.src.Complete(ctx, []int64{seq}, keep)
		if err != nil || n != 0 {
			t.Fatalf("Complete(keep=%v) of a parked row: %d, %v; want 0, nil", keep, n, err)
		}
		parked("Complete(keep=" + strconv.FormatBool(keep) + ")")
	}
	push()
	if err := r.src.Fail(ctx, outbox.FailParams{Seq: seq, Reason: "again", Park: false}); err != nil {
		t.Fatal(err)
	}
	parked("Fail")
}
