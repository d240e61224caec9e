package main_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// TestMigrateDown: migrate down undoes the inbox's and the dead-letter
// table's last version, refuses (exit non-zero, nothing changed) while the
// table holds rows unless --force, and has no down for the outbox; up then
// applies everything again.
func TestMigrateDown(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "down.db")
	store := "sqlite://" + path
	run(t, "", "migrate", "up", "--store", store).mustOK(t)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO processed_events (consumer, event_id, event_type, processed_at) VALUES ('g', 'e1', 't', '2026-01-01T00:00:00.000000Z')`); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", "migrate", "down", "inbox", "--store", store).mustOK(t)
	if !strings.Contains(r.stdout, "undid version 2 (create_positions)") {
		t.Fatalf("down inbox: %s", r.stdout)
	}
	r = run(t, "", "migrate", "down", "inbox", "--store", store)
	if r.code == 0 || !strings.Contains(r.stderr, "down would lose data") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("down inbox holding a row: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM processed_events`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("refused down changed the inbox: %d %v", n, err)
	}
	run(t, "", "migrate", "down", "inbox", "--force", "--store", store).mustOK(t)
	run(t, "", "migrate", "down", "dead-letters", "--store", store).mustOK(t) // empty: no --force needed
	if r := run(t, "", "migrate", "down", "outbox", "--store", store); r.code == 0 || !strings.Contains(r.stderr, "no down migration") {
		t.Fatalf("down outbox: exit %d\n%s", r.code, r.stderr)
	}
	if r := run(t, "", "migrate", "down", "inbox", "--store", store).mustOK(t); !strings.Contains(r.stdout, "nothing to undo") {
		t.Fatalf("down with nothing applied: %s", r.stdout)
	}
	r = run(t, "", "migrate", "status", "--store", store).mustOK(t)
	if strings.Count(r.stdout, " no\n") != 3 {
		t.Fatalf("status after down: want inbox 1-2 and dead letters 1 not applied\n%s", r.stdout)
	}
	run(t, "", "migrate", "up", "--store", store).mustOK(t)
	checkAllApplied(t, store)
}
