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

// TestCompleteRangeAndSet: Complete deletes (or marks delivered) exactly
// the streamed rows it is given, by a range when they are consecutive and
// by the set otherwise: a parked row inside a consecutive run stays parked,
// and the row in the gap of a non-consecutive set (another partition's, or
// one still in flight) is left alone.
func TestCompleteRangeAndSet(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.Postgres.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, keep := range []bool{false, true} {
		table := testenv.Name("cdcrange")
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
		for i := range 9 {
			if err := store.Add(ctx, tx, "t", eventkit.New("x.y", "application/json", []byte(`{}`), eventkit.WithSubject("s"+strconv.Itoa(i)))); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		var first int64
		var xmin string
		if err := pool.QueryRow(ctx, `SELECT min(seq), min(xmin::text) FROM `+table).Scan(&first, &xmin); err != nil {
			t.Fatal(err)
		}
		if err := store.Fail(ctx, outbox.FailParams{Seq: first + 2, Reason: "poison", Park: true}); err != nil {
			t.Fatal(err)
		}
		r, err := New(pool, nil, Config{Table: table})
		if err != nil {
			t.Fatal(err)
		}
		x, _ := strconv.ParseUint(xmin, 10, 32)
		it := &txn{xid: uint32(x), end: 1}
		for i := range int64(9) {
			it.items = append(it.items, &item{rec: outbox.Record{Seq: first + i}, t: it})
		}
		if !r.src.push(it) {
			t.Fatal("push refused")
		}
		run := []int64{first, first + 1, first + 2, first + 3, first + 4, first + 5}
		if n, err := r.src.Complete(ctx, run, keep); err != nil || n != 5 {
			t.Fatalf("keep=%v: Complete(%v): %d, %v; want the 5 rows not parked", keep, run, n, err)
		}
		if n, err := r.src.Complete(ctx, []int64{first + 6, first + 8}, keep); err != nil || n != 2 {
			t.Fatalf("keep=%v: Complete of two rows with a gap: %d, %v; want 2", keep, n, err)
		}
		var waiting []int64
		rows, err := pool.Query(ctx, `SELECT seq FROM `+table+` WHERE delivered_at IS NULL AND parked_at IS NULL ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s int64
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			waiting = append(waiting, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var parked, total int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE parked_at IS NOT NULL AND delivered_at IS NULL), count(*) FROM `+table).Scan(&parked, &total); err != nil {
			t.Fatal(err)
		}
		wantTotal := 2 // the parked row and the gap's
		if keep {
			wantTotal = 9
		}
		if len(waiting) != 1 || waiting[0] != first+7 || parked != 1 || total != wantTotal {
			t.Fatalf("keep=%v: waiting %v (want [%d]), parked %d (want 1), rows %d (want %d)", keep, waiting, first+7, parked, total, wantTotal)
		}
	}
}
