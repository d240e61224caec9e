package outboxtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/outbox"
)

// Run runs the store conformance suite. factory is called once per subtest.
func Run(t *testing.T, factory Factory) {
	t.Run("RollbackLeavesNothing", func(t *testing.T) { t.Parallel(); testRollback(t, factory(t)) })
	t.Run("CommitMakesVisible", func(t *testing.T) { t.Parallel(); testCommitVisible(t, factory(t)) })
	t.Run("ClaimInOrder", func(t *testing.T) { t.Parallel(); testClaimOrder(t, factory(t)) })
	t.Run("Complete", func(t *testing.T) { t.Parallel(); testComplete(t, factory(t)) })
	t.Run("CompleteOnlyThese", func(t *testing.T) { t.Parallel(); testCompleteOnlyThese(t, factory(t)) })
	t.Run("CompleteRun", func(t *testing.T) { t.Parallel(); testCompleteRun(t, factory(t)) })
	t.Run("FailAndPark", func(t *testing.T) { t.Parallel(); testPark(t, factory(t)) })
	t.Run("RetentionCleanup", func(t *testing.T) { t.Parallel(); testCleanup(t, factory(t)) })
	t.Run("RoundTrip", func(t *testing.T) { t.Parallel(); testRoundTrip(t, factory(t)) })
	t.Run("Status", func(t *testing.T) { t.Parallel(); testStatus(t, factory(t)) })
	t.Run("Validation", func(t *testing.T) { t.Parallel(); testValidation(t, factory(t)) })
	t.Run("TraceContext", func(t *testing.T) { t.Parallel(); testTrace(t, factory(t)) })
	t.Run("Lock", func(t *testing.T) { t.Parallel(); testLock(t, factory(t)) })
	t.Run("Listen", func(t *testing.T) { t.Parallel(); testListen(t, factory(t)) })
	t.Run("OutOfOrderCommit", func(t *testing.T) { t.Parallel(); testGapStore(t, factory(t)) })
	t.Run("UndecodableRow", func(t *testing.T) { t.Parallel(); testCorrupt(t, factory(t)) })
	t.Run("LargeTransaction", func(t *testing.T) { t.Parallel(); testLarge(t, factory(t)) })
	t.Run("SubjectSequence", func(t *testing.T) { t.Parallel(); testSubjectSeq(t, factory(t)) })
}

// testLarge adds 1,200 small events and h.LargeTxMB events of 1,000 KB in
// one transaction (more rows, and for MySQL more bytes, than one INSERT
// statement takes).
func testLarge(t *testing.T, h Harness) {
	ctx := ctxT(t)
	var evs []eventkit.Event
	for i := range 1200 {
		evs = append(evs, Event(fmt.Sprint("s", i%7), i))
	}
	mb := h.LargeTxMB
	if mb <= 0 {
		mb = 5
	}
	for i := range mb {
		e := Event("big", i)
		e.Data = bytes.Repeat([]byte{byte('a' + i)}, 1000<<10)
		evs = append(evs, e)
	}
	AddCommit(t, ctx, h, "t1", evs...)
	recs := claimAll(t, ctx, h.Store)
	if len(recs) != len(evs) {
		t.Fatalf("%d records, want %d", len(recs), len(evs))
	}
	for i := range evs {
		if recs[i].Event.ID != evs[i].ID || !bytes.Equal(recs[i].Event.Data, evs[i].Data) {
			t.Fatalf("record %d differs", i)
		}
	}
}

func testCorrupt(t *testing.T, h Harness) {
	if h.Corrupt == nil {
		t.Skip("harness cannot corrupt rows")
	}
	ctx := ctxT(t)
	AddCommit(t, ctx, h, "t1", Event("a", 1), Event("a", 2))
	recs := claimAll(t, ctx, h.Store)
	if err := h.Corrupt(ctx, recs[0].Seq); err != nil {
		t.Fatal(err)
	}
	recs = claimAll(t, ctx, h.Store)
	if len(recs) != 2 {
		t.Fatalf("%d records: an undecodable row must not fail the claim", len(recs))
	}
	var de *eventkit.DecodeError
	if !errors.As(recs[0].DecodeErr, &de) || !errors.Is(recs[0].DecodeErr, eventkit.ErrDecode) {
		t.Fatalf("corrupt row: DecodeErr %v", recs[0].DecodeErr)
	}
	if recs[1].DecodeErr != nil {
		t.Fatalf("good row: %v", recs[1].DecodeErr)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Event returns a test event of type "test.event" with subject and a small payload.
func Event(subject string, n int) eventkit.Event {
	return eventkit.New("test.event", "application/json", fmt.Appendf(nil, `{"n":%d}`, n), eventkit.WithSubject(subject))
}

// AddCommit adds events to topic in one committed transaction.
func AddCommit(t testing.TB, ctx context.Context, h Harness, topic string, events ...eventkit.Event) {
	t.Helper()
	tx, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Add(ctx, topic, events...); err != nil {
		_ = tx.Rollback(ctx)
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func claimAll(t *testing.T, ctx context.Context, s outbox.Store) []outbox.Record {
	t.Helper()
	recs, err := s.Claim(ctx, outbox.ClaimParams{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func ids(recs []outbox.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Event.ID
	}
	return out
}

func seqs(recs []outbox.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func testRollback(t *testing.T, h Harness) {
	ctx := ctxT(t)
	tx, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Add(ctx, "t1", Event("a", 1), Event("b", 2)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if recs := claimAll(t, ctx, h.Store); len(recs) != 0 {
		t.Fatalf("after rollback: %d records", len(recs))
	}
	st, err := h.Store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backlog != 0 {
		t.Fatalf("backlog %d after rollback", st.Backlog)
	}
}

func testCommitVisible(t *testing.T, h Harness) {
	ctx := ctxT(t)
	tx, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := Event("a", 1)
	if err := tx.Add(ctx, "t1", e); err != nil {
		t.Fatal(err)
	}
	if h.ConcurrentWriters { // SQLite would block on its own write lock
		if recs := claimAll(t, ctx, h.Store); len(recs) != 0 {
			t.Fatalf("uncommitted event visible: %v", ids(recs))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	recs := claimAll(t, ctx, h.Store)
	if len(recs) != 1 || recs[0].Event.ID != e.ID || recs[0].Topic != "t1" {
		t.Fatalf("after commit: %+v", recs)
	}
	// Claim takes no lock: a second claim sees the same record until it is completed.
	if again := claimAll(t, ctx, h.Store); len(again) != 1 {
		t.Fatalf("second claim: %d records", len(again))
	}
}

func testClaimOrder(t *testing.T, h Harness) {
	ctx := ctxT(t)
	var want []string
	for i := 0; i < 5; i++ {
		evs := []eventkit.Event{Event("a", i), Event("b", i), Event(fmt.Sprint("c", i), i)}
		topic := []string{"t1", "t2"}[i%2]
		AddCommit(t, ctx, h, topic, evs...)
		for _, e := range evs {
			want = append(want, e.ID)
		}
	}
	recs := claimAll(t, ctx, h.Store)
	if got := ids(recs); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("claim order:\n got %v\nwant %v", got, want)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq <= recs[i-1].Seq {
			t.Fatalf("seq not increasing: %d then %d", recs[i-1].Seq, recs[i].Seq)
		}
	}
	limited, err := h.Store.Claim(ctx, outbox.ClaimParams{Limit: 4})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(limited); strings.Join(got, ",") != strings.Join(want[:4], ",") {
		t.Fatalf("limit 4: got %v", got)
	}
	ex, err := h.Store.Claim(ctx, outbox.ClaimParams{Limit: 100, ExcludeSubjects: []string{"a"}, ExcludeSeqs: []int64{recs[1].Seq}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ex {
		if r.Event.Subject == "a" || r.Seq == recs[1].Seq {
			t.Fatalf("excluded record returned: %+v", r)
		}
	}
	if len(ex) != len(recs)-5-1 {
		t.Fatalf("with exclusions: %d records, want %d", len(ex), len(recs)-6)
	}
	after, err := h.Store.Claim(ctx, outbox.ClaimParams{Limit: 100, AfterSeq: recs[9].Seq})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(after); strings.Join(got, ",") != strings.Join(want[10:], ",") {
		t.Fatalf("after seq %d: got %v, want %v", recs[9].Seq, got, want[10:])
	}
}

func testComplete(t *testing.T, h Harness) {
	ctx := ctxT(t)
	AddCommit(t, ctx, h, "t1", Event("a", 1), Event("a", 2), Event("a", 3), Event("a", 4))
	recs := claimAll(t, ctx, h.Store)
	if n, err := h.Store.Complete(ctx, seqs(recs[:2]), false); err != nil || n != 2 {
		t.Fatalf("complete 2: %d rows, %v", n, err)
	}
	if n, err := h.Store.Complete(ctx, seqs(recs[2:3]), true); err != nil || n != 1 {
		t.Fatalf("complete 1 (keep): %d rows, %v", n, err)
	}
	// Rows already completed are not counted again: the relay compares
	// the rows affected with what it published.
	if n, err := h.Store.Complete(ctx, seqs(recs[:3]), false); err != nil || n != 1 {
		t.Fatalf("complete again (2 gone, 1 retained): %d rows, %v; want 1", n, err)
	}
	if n, err := h.Store.Complete(ctx, seqs(recs[:2]), true); err != nil || n != 0 {
		t.Fatalf("complete gone rows: %d rows, %v; want 0", n, err)
	}
	left := claimAll(t, ctx, h.Store)
	if len(left) != 1 || left[0].Seq != recs[3].Seq {
		t.Fatalf("after complete: %v", ids(left))
	}
	st, err := h.Store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backlog != 1 || st.Delivered != 0 {
		t.Fatalf("status backlog=%d delivered=%d, want 1 and 0", st.Backlog, st.Delivered)
	}
	if _, err := h.Store.Complete(ctx, nil, false); err != nil {
		t.Fatalf("complete nothing: %v", err)
	}
}

// Complete touches the rows given and no other, whether they are a run of
// consecutive seqs (a store may complete those by range) or not: a row in
// a gap of the set (a late commit, or an event being retried) stays.
func testCompleteOnlyThese(t *testing.T, h Harness) {
	ctx := ctxT(t)
	recs := addSeven(t, ctx, h)
	pick := func(is ...int) []int64 {
		var out []int64
		for _, i := range is {
			out = append(out, recs[i].Seq)
		}
		return out
	}
	for _, c := range []struct {
		what string
		seqs []int64
		keep bool
		n    int64
	}{
		{"a gap", pick(0, 2), false, 2},
		{"descending", pick(4, 3), false, 2},
		{"a run", pick(5, 6), true, 2},
		{"a run again, kept rows", pick(5, 6), true, 0},
	} {
		if n, err := h.Store.Complete(ctx, c.seqs, c.keep); err != nil || n != c.n {
			t.Fatalf("complete %s %v: %d rows, %v; want %d", c.what, c.seqs, n, err, c.n)
		}
	}
	left := claimAll(t, ctx, h.Store)
	if len(left) != 1 || left[0].Seq != recs[1].Seq {
		t.Fatalf("pending after completing all but the gap: %v, want only seq %d", ids(left), recs[1].Seq)
	}
}

// A RunCompleter completes exactly the run given and reports a claimable
// record below its before outside the run: one below the run, or one
// between the run and before; a parked or completed one does not count.
// The relay trusts a false answer to publish what it read ahead, so a
// wrong false reorders a subject.
func testCompleteRun(t *testing.T, h Harness) {
	rc, ok := h.Store.(outbox.RunCompleter)
	if !ok {
		t.Skip("store does not implement outbox.RunCompleter")
	}
	ctx := ctxT(t)
	recs := addSeven(t, ctx, h)
	if !consecutiveRecs(recs) {
		t.Fatalf("claimed %v, want 7 consecutive seqs", ids(recs))
	}
	s := func(i int) int64 { return recs[i].Seq }
	if err := h.Store.Fail(ctx, outbox.FailParams{Seq: s(4), Reason: "parked", Park: true}); err != nil {
		t.Fatal(err)
	}
	step := func(what string, first, last int, keep bool, before int64, wantN int64, wantEarlier bool) {
		t.Helper()
		n, earlier, err := rc.CompleteRun(ctx, s(first), s(last), keep, before)
		if err != nil || n != wantN || earlier != wantEarlier {
			t.Fatalf("%s: CompleteRun(%d, %d, keep %v, before %d) = %d, %v, %v; want %d, %v",
				what, s(first), s(last), keep, before, n, earlier, err, wantN, wantEarlier)
		}
	}
	step("row 0 pending below the run", 1, 2, false, s(5), 2, true)
	if _, err := h.Store.Complete(ctx, []int64{s(0)}, false); err != nil {
		t.Fatal(err)
	}
	step("nothing below; row 4 between is parked", 3, 3, true, s(5), 1, false)
	step("the same run again (kept, already delivered)", 3, 3, true, s(5), 0, false)
	step("row 5 pending between the run and before", 3, 3, true, s(6), 0, true)
	if _, err := h.Store.Requeue(ctx, []int64{s(4)}); err != nil {
		t.Fatal(err)
	}
	step("row 4 requeued, below the run", 5, 6, false, s(6)+1, 2, true)
	left := claimAll(t, ctx, h.Store)
	if len(left) != 1 || left[0].Seq != s(4) {
		t.Fatalf("pending at the end: %v, want only seq %d", ids(left), s(4))
	}
}

// addSeven commits seven events of subject a in one transaction and
// returns their records.
func addSeven(t *testing.T, ctx context.Context, h Harness) []outbox.Record {
	t.Helper()
	var evs []eventkit.Event
	for i := 1; i <= 7; i++ {
		evs = append(evs, Event("a", i))
	}
	AddCommit(t, ctx, h, "t1", evs...)
	recs := claimAll(t, ctx, h.Store)
	if len(recs) != 7 {
		t.Fatalf("claimed %d rows, want 7", len(recs))
	}
	return recs
}

func consecutiveRecs(recs []outbox.Record) bool {
	for i := range recs {
		if recs[i].Seq != recs[0].Seq+int64(i) {
			return false
		}
	}
	return true
}

func testPark(t *testing.T, h Harness) {
	ctx := ctxT(t)
	AddCommit(t, ctx, h, "t1", Event("a", 1), Event("b", 2))
	recs := claimAll(t, ctx, h.Store)
	bad := recs[0]
	if err := h.Store.Fail(ctx, outbox.FailParams{Seq: bad.Seq, Reason: "first try"}); err != nil {
		t.Fatal(err)
	}
	recs = claimAll(t, ctx, h.Store)
	if len(recs) != 2 || recs[0].Attempts != 1 || recs[0].LastError != "first try" {
		t.Fatalf("after fail: %+v", recs)
	}
	if err := h.Store.Fail(ctx, outbox.FailParams{Seq: bad.Seq, Reason: "too large: 2 MiB", Park: true}); err != nil {
		t.Fatal(err)
	}
	recs = claimAll(t, ctx, h.Store)
	if len(recs) != 1 || recs[0].Event.Subject != "b" {
		t.Fatalf("parked record still claimed: %v", ids(recs))
	}
	st, err := h.Store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ParkedCount != 1 || len(st.Parked) != 1 {
		t.Fatalf("status parked: %+v", st)
	}
	p := st.Parked[0]
	if p.Seq != bad.Seq || p.ID != bad.Event.ID || p.Reason != "too large: 2 MiB" || p.Attempts != 2 ||
		p.Topic != "t1" || p.Type != "test.event" || p.Subject != "a" || p.ParkedAt.IsZero() {
		t.Fatalf("parked event: %+v", p)
	}
	if st.Backlog != 1 {
		t.Fatalf("backlog %d, want 1", st.Backlog)
	}
	n, err := h.Store.Requeue(ctx, []int64{bad.Seq})
	if err != nil || n != 1 {
		t.Fatalf("requeue: %d %v", n, err)
	}
	recs = claimAll(t, ctx, h.Store)
	if len(recs) != 2 || recs[0].Seq != bad.Seq || recs[0].Attempts != 0 {
		t.Fatalf("after requeue: %+v", recs)
	}
}

func testCleanup(t *testing.T, h Harness) {
	ctx := ctxT(t)
	AddCommit(t, ctx, h, "t1", Event("a", 1), Event("a", 2), Event("a", 3))
	recs := claimAll(t, ctx, h.Store)
	if _, err := h.Store.Complete(ctx, seqs(recs[:2]), true); err != nil {
		t.Fatal(err)
	}
	if err := h.Store.Fail(ctx, outbox.FailParams{Seq: recs[2].Seq, Reason: "bad", Park: true}); err != nil {
		t.Fatal(err)
	}
	n, err := h.Store.Cleanup(ctx, time.Now().Add(-time.Hour), time.Time{})
	if err != nil || n != 0 {
		t.Fatalf("cleanup of nothing old: %d %v", n, err)
	}
	n, err = h.Store.Cleanup(ctx, time.Now().Add(time.Hour), time.Time{})
	if err != nil || n != 2 {
		t.Fatalf("cleanup delivered: %d %v, want 2", n, err)
	}
	st, err := h.Store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Delivered != 0 || st.ParkedCount != 1 {
		t.Fatalf("after cleanup: %+v", st)
	}
	n, err = h.Store.Cleanup(ctx, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("cleanup parked: %d %v, want 1", n, err)
	}
}

func testRoundTrip(t *testing.T, h Harness) {
	ctx := ctxT(t)
	full := eventkit.Event{
		ID: "id-1 ü", Type: "com.example.order.created", Source: "/orders/eu-1", Subject: "order-42",
		Time:        time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("X", 3600)),
		DataVersion: "7", DataContentType: "application/json; charset=utf-8", DataSchema: "https://example.com/s.json",
		Data:       []byte("{\"k\":\"v\",\"bin\":\"\x00\x01\xff\"}"),
		Extensions: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "correlationid": "c-1", "e": ""},
	}
	minimal := eventkit.Event{ID: "id-2", Type: "t", Source: "s", Time: time.Unix(0, 1).UTC()}
	AddCommit(t, ctx, h, "orders.v1", full, minimal)
	recs := claimAll(t, ctx, h.Store)
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	for i, want := range []eventkit.Event{full, minimal} {
		got := recs[i].Event
		if recs[i].Topic != "orders.v1" {
			t.Errorf("topic %q", recs[i].Topic)
		}
		if err := SameEvent(got, want); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
		if recs[i].CreatedAt.IsZero() || time.Since(recs[i].CreatedAt) > time.Hour || time.Since(recs[i].CreatedAt) < -time.Hour {
			t.Errorf("created at %v", recs[i].CreatedAt)
		}
	}
}

// SameEvent reports how got differs from want ("" data equals nil data; an
// empty extension map equals nil; times compare with Equal; a subjectseq
// extension in got that want does not have is the store's stamp and is
// ignored).
func SameEvent(got, want eventkit.Event) error {
	if _, ok := want.Extensions[eventkit.SubjectSeqExtension]; !ok {
		if _, ok := got.Extensions[eventkit.SubjectSeqExtension]; ok {
			got.Extensions = maps.Clone(got.Extensions)
			delete(got.Extensions, eventkit.SubjectSeqExtension)
		}
	}
	switch {
	case got.ID != want.ID, got.Type != want.Type, got.Source != want.Source, got.Subject != want.Subject,
		got.DataVersion != want.DataVersion, got.DataContentType != want.DataContentType, got.DataSchema != want.DataSchema:
		return fmt.Errorf("attributes differ:\n got %+v\nwant %+v", got, want)
	case !got.Time.Equal(want.Time):
		return fmt.Errorf("time %v, want %v", got.Time, want.Time)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Errorf("data %q, want %q", got.Data, want.Data)
	case !(len(got.Extensions) == 0 && len(want.Extensions) == 0) && !maps.Equal(got.Extensions, want.Extensions):
		return fmt.Errorf("extensions %v, want %v", got.Extensions, want.Extensions)
	}
	return nil
}

func testStatus(t *testing.T, h Harness) {
	ctx := ctxT(t)
	st, err := h.Store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backlog != 0 || st.OldestAge != 0 || !st.Oldest.IsZero() || len(st.ByType) != 0 {
		t.Fatalf("empty outbox status: %+v", st)
	}
	a := eventkit.New("order.created", "application/json", []byte("{}"))
	b := eventkit.New("order.paid", "application/json", []byte("{}"))
	AddCommit(t, ctx, h, "t1", a, a.Clone(), b)
	time.Sleep(1100 * time.Millisecond) // some stores keep created_at to the second
	st, err = h.Store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backlog != 3 || st.ByType["order.created"] != 2 || st.ByType["order.paid"] != 1 {
		t.Fatalf("status: %+v", st)
	}
	if st.OldestAge < 500*time.Millisecond || st.OldestAge > time.Minute || st.Oldest.IsZero() {
		t.Fatalf("oldest age %v (oldest %v)", st.OldestAge, st.Oldest)
	}
}

func testValidation(t *testing.T, h Harness) {
	ctx := ctxT(t)
	tx, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	bad := Event("a", 1)
	bad.Type = ""
	err = tx.Add(ctx, "t1", Event("a", 0), bad)
	if !errors.Is(err, eventkit.ErrInvalidEvent) {
		t.Fatalf("invalid event: %v", err)
	}
	var ve *eventkit.ValidationError
	if !errors.As(err, &ve) || ve.Field != "type" {
		t.Fatalf("want a *ValidationError for type, got %v", err)
	}
	big := Event("a", 2)
	big.Data = make([]byte, eventkit.DefaultMaxSize+1)
	if err := tx.Add(ctx, "t1", big); !errors.Is(err, eventkit.ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if err := tx.Add(ctx, "bad topic!", Event("a", 3)); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Fatalf("bad topic: %v", err)
	}
	if err := tx.Add(ctx, "t1"); err != nil {
		t.Fatalf("no events: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if recs := claimAll(t, ctx, h.Store); len(recs) != 0 {
		t.Fatalf("invalid events were stored: %v", ids(recs))
	}
}

func testTrace(t *testing.T, h Harness) {
	ctx := ctxT(t)
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	sctx := trace.ContextWithSpanContext(ctx, sc)
	plain := Event("a", 1)
	own := Event("a", 2)
	own.Extensions = map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
	AddCommit(t, sctx, h, "t1", plain, own)
	if plain.Extensions != nil {
		t.Fatal("Add modified the caller's event")
	}
	recs := claimAll(t, ctx, h.Store)
	if got := recs[0].Event.Extensions["traceparent"]; got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("traceparent %q", got)
	}
	if got := recs[1].Event.Extensions["traceparent"]; got != own.Extensions["traceparent"] {
		t.Fatalf("existing traceparent overwritten: %q", got)
	}
	AddCommit(t, ctx, h, "t1", Event("b", 3)) // no span: nothing added
	if recs := claimAll(t, ctx, h.Store); recs[2].Event.Extensions["traceparent"] != "" {
		t.Fatalf("traceparent without a span: %v", recs[2].Event.Extensions)
	}
}

func testLock(t *testing.T, h Harness) {
	ctx := ctxT(t)
	other := h.Store
	if h.NewStore != nil {
		other = h.NewStore(t)
	}
	l1, err := h.Store.TryLock(ctx)
	if err != nil || l1 == nil {
		t.Fatalf("first lock: %v %v", l1, err)
	}
	l2, err := other.TryLock(ctx)
	if err != nil || l2 != nil {
		t.Fatalf("second lock while held: %v %v", l2, err)
	}
	select {
	case <-l1.Lost():
		t.Fatal("lock reported lost")
	default:
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	<-l1.Lost() // closed after release
	l2, err = other.TryLock(ctx)
	if err != nil || l2 == nil {
		t.Fatalf("lock after release: %v %v", l2, err)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func testListen(t *testing.T, h Harness) {
	ctx := ctxT(t)
	lctx, cancel := context.WithCancel(ctx)
	woke := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() { done <- h.Store.Listen(lctx, func() { woke <- struct{}{} }) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Listen returned %v", err)
		}
	}()
	time.Sleep(200 * time.Millisecond) // let it start listening
	for len(woke) > 0 {
		<-woke
	}
	AddCommit(t, ctx, h, "t1", Event("a", 1))
	select {
	case <-woke:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after a commit")
	}
}

func testGapStore(t *testing.T, h Harness) {
	if !h.ConcurrentWriters {
		t.Skip("store does not allow concurrent write transactions")
	}
	ctx := ctxT(t)
	txA, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := Event("a", 1)
	if err := txA.Add(ctx, "t1", a); err != nil { // takes the lower seq
		t.Fatal(err)
	}
	b := Event("b", 2)
	AddCommit(t, ctx, h, "t1", b) // higher seq, committed first
	recs := claimAll(t, ctx, h.Store)
	if len(recs) != 1 || recs[0].Event.ID != b.ID {
		t.Fatalf("before A commits: %v", ids(recs))
	}
	if _, err := h.Store.Complete(ctx, seqs(recs), false); err != nil {
		t.Fatal(err)
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	recs = claimAll(t, ctx, h.Store)
	if len(recs) != 1 || recs[0].Event.ID != a.ID {
		t.Fatalf("after A commits: %v (the lower id must not be skipped)", ids(recs))
	}
}
