package outboxtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/outbox"
)

// TwoDatabases checks that two outboxes of the same table name in two
// databases of one server (a and b: stores on different databases, as two
// services would have) do not share their leadership: a relay on each
// leads at the same time and both outboxes drain while events are written
// to both. A store whose lock name ignores the database fails here, as
// the second relay never leads.
func TwoDatabases(t *testing.T, a, b Harness) {
	t.Helper()
	ctx := ctxT(t)
	cfg := fastConfig(t)
	cfg.BatchSize = 25
	recA, recB := &Recorder{}, &Recorder{}
	ra, rb := outbox.NewRelay(a.Store, recA, cfg), outbox.NewRelay(b.Store, recB, cfg)
	StartRelay(t, ra)
	StartRelay(t, rb)
	WaitFor(t, 5*time.Second, "both relays to lead at once", func() bool { return ra.IsLeader() && rb.IsLeader() })

	const total = 300
	sent := [2]map[string][]string{{}, {}}
	for i := 0; i < total; i += 10 {
		for k, h := range []Harness{a, b} {
			var evs []eventkit.Event
			for j := i; j < i+10; j++ {
				e := Event(fmt.Sprint("s", j%7), j)
				evs = append(evs, e)
				sent[k][e.Subject] = append(sent[k][e.Subject], e.ID)
			}
			AddCommit(t, ctx, h, "t", evs...)
		}
	}
	for k, rec := range []*Recorder{recA, recB} {
		WaitFor(t, 20*time.Second, fmt.Sprintf("outbox %d to drain", k), func() bool { return len(distinct(rec.Events())) == total })
		if _, err := CheckStream(eventsOf(rec.Events()), sent[k]); err != nil {
			t.Fatalf("outbox %d: %v", k, err)
		}
	}
	for k, h := range []Harness{a, b} {
		WaitFor(t, 5*time.Second, fmt.Sprintf("outbox %d to be empty", k), func() bool {
			st, err := h.Store.Status(ctx)
			return err == nil && st.Backlog == 0
		})
	}
	if !ra.IsLeader() || !rb.IsLeader() {
		t.Fatalf("a relay stepped down: a %v, b %v", ra.IsLeader(), rb.IsLeader())
	}
}
