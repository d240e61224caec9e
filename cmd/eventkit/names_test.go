package main_test

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

// TestCDCTwoDatabases: two databases on one server, each with the default
// outbox table and the default CDC names. Both set up; outbox status on one
// shows only its own slot; cdc drop on one refuses the other's slot even
// when named, drops its own, and leaves the other's slot, publication and
// running relay alone.
func TestCDCTwoDatabases(t *testing.T) {
	t.Parallel()
	a := newPGOn(t, testdb.Postgres(t), "")
	b := newPGOn(t, testdb.Postgres(t), "")
	ctx := context.Background()
	created := regexp.MustCompile(`created slot (\S+) and publication (\S+) on `)
	setup := func(f *pgFixture) string {
		t.Helper()
		r := run(t, "", append([]string{"outbox", "cdc", "setup"}, f.flags...)...).mustOK(t)
		m := created.FindStringSubmatch(r.stdout)
		var db string
		if err := f.pool.QueryRow(ctx, `SELECT current_database()::text`).Scan(&db); err != nil {
			t.Fatal(err)
		}
		if m == nil || m[1] != pgcdc.DefaultSlotName(db, outbox.DefaultTable) || m[2] != m[1] {
			t.Fatalf("cdc setup on %s:\n%s", db, r.stdout)
		}
		return m[1]
	}
	slotA, slotB := setup(a), setup(b)

	topic := testenv.Name("cdc2db")
	ids := collect(t, b.nats, topic)
	relay := exec.Command(bin, append([]string{"relay", "--mode", "cdc", "--broker", b.nats, "--listen", ""}, b.flags...)...)
	relayLog := &testenv.SyncBuffer{}
	relay.Stderr = relayLog
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = relay.Process.Signal(syscall.SIGKILL)
			_ = relay.Wait()
		}
	})
	b.add(t, topic, 100)
	testenv.WaitFor(t, 60*time.Second, "b's events", func() bool { return len(ids()) == 100 })

	r := run(t, "", append([]string{"outbox", "status"}, a.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "cdc slot:   "+slotA+", no relay streaming") || strings.Contains(r.stdout, slotB) {
		t.Fatalf("outbox status of a:\n%s", r.stdout)
	}
	r = run(t, "", append([]string{"outbox", "status"}, b.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "cdc slot:   "+slotB+", streaming") {
		t.Fatalf("outbox status of b:\n%s", r.stdout)
	}
	r = run(t, "", append([]string{"outbox", "status", "--slot", slotB}, a.flags...)...).mustOK(t)
	if strings.Contains(r.stdout, "cdc slot:") || !strings.Contains(r.stderr, "belongs to database") {
		t.Fatalf("outbox status of a with b's slot:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	r = run(t, "", append([]string{"outbox", "cdc", "drop", "--slot", slotB}, a.flags...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "belongs to database") {
		t.Fatalf("cdc drop of b's slot from a: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// b's walsender before and after a's drop: the drop must not terminate
	// it (the same backend keeps streaming) nor drop b's slot or
	// publication. The slot is briefly inactive when the relay reconnects
	// on its own, so wait for a streaming backend first.
	walsender := func() (pid int32, pub bool) {
		t.Helper()
		var active bool
		if err := b.pool.QueryRow(ctx, `SELECT s.active, COALESCE(s.active_pid, 0), EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)
FROM pg_replication_slots s WHERE s.slot_name = $1 AND s.database = current_database()`, slotB).Scan(&active, &pid, &pub); err != nil {
			t.Fatalf("b's slot: %v", err)
		}
		return pid, pub
	}
	var before int32
	testenv.WaitFor(t, 30*time.Second, "b's slot streaming", func() bool { before, _ = walsender(); return before != 0 })
	run(t, "", append([]string{"outbox", "cdc", "drop"}, a.flags...)...).mustOK(t)
	after, pub := walsender()
	if !pub {
		t.Fatalf("b's publication is gone after a's drop")
	}
	if after != before {
		// The relay also reconnects on its own (CI saw it once during the
		// drop); a backend ended by pg_terminate_backend tells the relay
		// so (SQLSTATE 57P01), which it logs when it reconnects.
		terminated := func() bool {
			l := relayLog.String()
			return strings.Contains(l, "57P01") || strings.Contains(l, "administrator command")
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !terminated(); {
			time.Sleep(50 * time.Millisecond)
		}
		if terminated() {
			t.Fatalf("a's drop terminated b's walsender (pid %d, now %d):\n%s", before, after, relayLog.String())
		}
		t.Logf("b's relay reconnected on its own during a's drop (pid %d, now %d):\n%s", before, after, relayLog.String())
	}
	b.add(t, topic, 50)
	testenv.WaitFor(t, 60*time.Second, "b's events after a's drop", func() bool { return len(ids()) == 150 })
	_ = relay.Process.Signal(syscall.SIGTERM)
	stopped = true
	if err := relay.Wait(); err != nil {
		t.Fatalf("b's relay: %v (it must have kept running until stopped)", err)
	}
	run(t, "", append([]string{"outbox", "cdc", "drop"}, b.flags...)...).mustOK(t)
}
