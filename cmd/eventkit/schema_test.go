package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSchemaSnapshotCheck: snapshot then check on the demo registry exits
// 0; a lock file mutated as if the demo's types had changed in place makes
// check exit 1 with one line per finding naming the type, version, field
// and rule (and --json says the same in the JSON style); a malformed or
// missing lock file is one clear error line, exit 1.
func TestSchemaSnapshotCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	lock := filepath.Join(dir, "eventkit.schema.json")
	r := run(t, "", "schema", "snapshot", "--lock", lock).mustOK(t, "schema snapshot")
	if !strings.Contains(r.stdout, "4 registrations") {
		t.Errorf("snapshot: %q", r.stdout)
	}
	r = run(t, "", "schema", "check", "--lock", lock, "--require-upcaster").mustOK(t, "schema check")
	if !strings.Contains(r.stdout, "4 registrations compatible") {
		t.Errorf("check: %q", r.stdout)
	}
	orig, err := os.ReadFile(lock)
	if err != nil {
		t.Fatal(err)
	}
	if s := run(t, "", "schema", "snapshot", "--lock", "-").mustOK(t); s.stdout != string(orig) {
		t.Errorf("snapshot --lock - differs from the file")
	}

	// As if the committed lock came from a release in which order.created
	// had "quantity" as field 9 and order.cancelled had a "note" property:
	// now field 9 is gone unreserved and "note" is deleted.
	mutated := strings.Replace(string(orig), `"number": 5,`, `"number": 9,`, 1)
	mutated = strings.Replace(mutated, `"customer_id": {`, `"note": {
            "type": "string"
          },
          "customer_id": {`, 1)
	if mutated == string(orig) || strings.Count(mutated, `"note"`) != 1 {
		t.Fatal("mutation did not apply")
	}
	bad := filepath.Join(dir, "mutated.json")
	if err := os.WriteFile(bad, []byte(mutated), 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", "schema", "check", "--lock", bad)
	want := []string{
		"order.cancelled version 1: note: JSON_PROPERTY_NO_DELETE: property deleted",
		"order.created version 1: eventkit.example.v1.OrderCreated.quantity: FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED: field 9 deleted without reserving its number (renumbered 9 to 5)",
	}
	if r.code != 1 || strings.Count(r.stdout, "\n") != len(want) {
		t.Fatalf("mutated lock: exit %d, want 1 and %d lines\nstdout: %s\nstderr: %s", r.code, len(want), r.stdout, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "breaking schema changes: 2 against") {
		t.Errorf("stderr: %q", r.stderr)
	}
	r = run(t, "", "schema", "check", "--lock", bad, "--json")
	if r.code != 1 {
		t.Fatalf("--json: exit %d", r.code)
	}
	v := decodeJSON(t, "schema check --json", r.stdout)
	if ok, _ := field(v, "ok"); ok != false {
		t.Errorf("ok = %v", ok)
	}
	if rule, _ := field(v, "findings", "1", "rule"); rule != "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED" {
		t.Errorf("findings[1].rule = %v\n%s", rule, r.stdout)
	}

	broken := filepath.Join(dir, "broken.json")
	if err := os.WriteFile(broken, orig[:len(orig)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{broken, filepath.Join(dir, "missing.json")} {
		r = run(t, "", "schema", "check", "--lock", path)
		if r.code != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "bad lock file "+path) {
			t.Errorf("%s: exit %d\nstdout: %s\nstderr: %s", path, r.code, r.stdout, r.stderr)
		}
	}
	if r = run(t, "", "schema", "check", "extra"); r.code != 2 {
		t.Errorf("extra argument: exit %d", r.code)
	}
}
