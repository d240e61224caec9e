package pgcdc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
)

// TestInvalidEventRowsParked: rows whose columns decode but cannot form a
// valid event (an invalid topic, an empty type, an empty id), written around
// Store.Add, are parked with the reason by both sources, never offered to
// the broker, and the good rows around them flow.
func TestInvalidEventRowsParked(t *testing.T) {
	for _, mode := range []string{"polling", "cdc"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			rec := &outboxtest.Recorder{}
			var relay interface {
				Run(context.Context) error
			}
			var parked func() int64
			if mode == "cdc" {
				r := e.relay(rec)
				relay, parked = r, func() int64 { return r.Stats().Parked }
			} else {
				r := outbox.NewRelay(e.store, rec, e.cfg.RelayConfig)
				relay, parked = r, func() int64 { return r.Stats().Parked }
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.Run(rctx) }()
			t.Cleanup(func() { cancel(); <-done })
			good1, good2 := ev("a", 1), ev("a", 2)
			e.insert("t1", good1)
			tm := time.Now().UTC().Format(time.RFC3339Nano)
			if _, err := e.pool.Exec(ctx, `INSERT INTO `+e.cfg.Table+` (topic, id, type, source, event_time) VALUES
  ('no spaces allowed', 'bad-topic', 't', 's', $1), ('t1', 'bad-type', '', 's', $1), ('t1', '', 't', 's', $1)`, tm); err != nil {
				t.Fatal(err)
			}
			e.insert("t1", good2)
			testenv.WaitFor(t, 20*time.Second, "three rows parked", func() bool { return parked() == 3 })
			testenv.WaitFor(t, 10*time.Second, "good rows delivered", func() bool { return len(rec.Events()) == 2 })
			// A good row is deleted a moment after the broker has it.
			testenv.WaitFor(t, 10*time.Second, "good rows completed", func() bool { return e.rows() == 3 })
			for _, p := range rec.Events() {
				if p.Event.ID != good1.ID && p.Event.ID != good2.ID {
					t.Fatalf("invalid row published: %+v", p)
				}
			}
			rows, err := e.pool.Query(ctx, `SELECT id, last_error FROM `+e.cfg.Table+` WHERE parked_at IS NOT NULL ORDER BY seq`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			want := map[string]string{"bad-topic": "topic", "bad-type": "type", "": "id"}
			n := 0
			for rows.Next() {
				var id, reason string
				if err := rows.Scan(&id, &reason); err != nil {
					t.Fatal(err)
				}
				n++
				if !strings.Contains(reason, want[id]) {
					t.Errorf("row %q parked with reason %q, want it to name %q", id, reason, want[id])
				}
			}
			if n != 3 || e.rows() != 3 {
				t.Fatalf("%d parked rows, %d rows left; want 3 and 3", n, e.rows())
			}
		})
	}
}
