package main_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
var looksLikeTime = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T`)

// dataKeys hold user data (event types, instance names, headers, the
// CloudEvents envelope), whose keys are not ours to style.
var dataKeys = map[string]bool{"by_type": true, "leaders": true, "headers": true, "event": true}

// jsonStyle walks a decoded --json output and returns every breach of the
// style: a key that is not snake_case or ends in _ns, a time that is not
// RFC 3339 or is the zero time (absent must be null), a *_seconds value
// that is not a number or null.
func jsonStyle(v any, path string) []string {
	var bad []string
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			p := path + "." + k
			if !snakeKey.MatchString(k) {
				bad = append(bad, p+": key is not snake_case")
			}
			if strings.HasSuffix(k, "_ns") {
				bad = append(bad, p+": nanoseconds (want *_seconds)")
			}
			if strings.HasSuffix(k, "_at") || k == "oldest" || k == "since" || k == "until" {
				if s, ok := val.(string); val != nil && !ok || ok && !looksLikeTime.MatchString(s) {
					bad = append(bad, fmt.Sprintf("%s: time %v is neither null nor an RFC 3339 string", p, val))
				}
			}
			if strings.HasSuffix(k, "_seconds") {
				if _, ok := val.(float64); val != nil && !ok {
					bad = append(bad, fmt.Sprintf("%s: %v is not a number of seconds", p, val))
				}
			}
			if dataKeys[k] {
				continue
			}
			bad = append(bad, jsonStyle(val, p)...)
		}
	case []any:
		for i, e := range x {
			bad = append(bad, jsonStyle(e, fmt.Sprintf("%s[%d]", path, i))...)
		}
	case string:
		if looksLikeTime.MatchString(x) {
			t, err := time.Parse(time.RFC3339, x)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %q is not RFC 3339: %v", path, x, err))
			} else if t.Year() <= 1 {
				bad = append(bad, fmt.Sprintf("%s: zero time %q (absent must be null)", path, x))
			}
		}
	}
	return bad
}

// TestJSONStyleChecker: the checker catches the old outbox status output.
func TestJSONStyleChecker(t *testing.T) {
	var old any
	_ = json.Unmarshal([]byte(`{"Backlog":0,"Oldest":"0001-01-01T00:00:00Z","OldestAge":0,"elapsed_ns":12,"by_type":{"Order.Placed":1}}`), &old)
	// Backlog, Oldest, OldestAge (keys), the zero time, elapsed_ns; not the
	// user's event type under by_type.
	if bad := jsonStyle(old, ""); len(bad) != 5 {
		t.Fatalf("want 5 breaches, got %d: %v", len(bad), bad)
	}
}

// decodeJSON parses a command's stdout and fails on every style breach.
func decodeJSON(t *testing.T, what, out string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", what, err, out)
	}
	for _, b := range jsonStyle(v, what) {
		t.Errorf("%s", b)
	}
	return v
}

// field reads a dotted path of object keys (and [i] as "0").
func field(v any, path ...string) (any, bool) {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[p]; !ok {
				return nil, false
			}
		case []any:
			var i int
			fmt.Sscan(p, &i)
			if i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func mustNull(t *testing.T, what string, v any, path ...string) {
	t.Helper()
	got, ok := field(v, path...)
	if !ok || got != nil {
		t.Errorf("%s: %s = %v (present %v), want null", what, strings.Join(path, "."), got, ok)
	}
}

// TestJSONStyle runs every command that has --json, with data that leaves
// some values absent, and checks one style: snake_case keys, no _ns keys,
// RFC 3339 times, seconds for durations, null for absent values.
func TestJSONStyle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := testdb.Postgres(t)
	nats := testenv.NATS.URL(t)
	flags := []string{"--store", store}
	run(t, "", append([]string{"migrate", "up"}, flags...)...).mustOK(t)

	r := run(t, "", append([]string{"migrate", "status", "--json"}, flags...)...).mustOK(t)
	v := decodeJSON(t, "migrate status", r.stdout)
	if rows, _ := v.([]any); len(rows) < 6 { // outbox 1-3, inbox 1-2, dead letters 1
		t.Errorf("migrate status --json: %d rows\n%s", len(rows), r.stdout)
	}

	r = run(t, "", append([]string{"outbox", "status", "--json"}, flags...)...).mustOK(t)
	v = decodeJSON(t, "outbox status (empty)", r.stdout)
	mustNull(t, "outbox status (empty)", v, "oldest")
	mustNull(t, "outbox status (empty)", v, "oldest_age_seconds")
	mustNull(t, "outbox status (empty)", v, "cdc")
	mustNull(t, "outbox status (empty)", v, "partitions")

	pool, err := pgxpool.New(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ob, err := pgoutbox.New(pool, pgoutbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.Name("jsonstyle")
	ev := eventkit.New("order.placed", "application/json", []byte(`{"n":1}`))
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return ob.Add(ctx, tx, topic, ev) }); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO eventkit_outbox (topic, id, type, source, event_time, data, created_at, parked_at, last_error)
		SELECT topic, id || '-p', type, source, event_time, data, created_at, now(), 'rejected' FROM eventkit_outbox LIMIT 1`); err != nil {
		t.Logf("no parked row (%v): parked_at not checked", err)
	}
	r = run(t, "", append([]string{"outbox", "status", "--json"}, flags...)...).mustOK(t)
	v = decodeJSON(t, "outbox status", r.stdout)
	if o, _ := field(v, "oldest"); o == nil {
		t.Errorf("outbox status: oldest is null with a backlog\n%s", r.stdout)
	}
	if a, _ := field(v, "oldest_age_seconds"); a == nil {
		t.Errorf("outbox status: oldest_age_seconds is null with a backlog\n%s", r.stdout)
	}

	dl := eventkit.New("payment.failed", "application/json", []byte(`{"amount_cents":1}`))
	env, _ := dl.MarshalJSON()
	if _, err := pool.Exec(ctx, `INSERT INTO eventkit_dead_letters (topic, grp, event_id, event_type, reason, error, attempts, dead_at, envelope)
		VALUES ($1, 'billing', $2, $3, 'max-attempts', 'declined', 5, $4, $5)`, topic, dl.ID, dl.Type, time.Now().UnixNano(), env); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", append([]string{"dlq", "list", "--json"}, flags...)...).mustOK(t)
	v = decodeJSON(t, "dlq list", r.stdout)
	mustNull(t, "dlq list (never replayed)", v, "0", "replayed_at")
	r = run(t, "", append([]string{"dlq", "show", dl.ID}, flags...)...).mustOK(t)
	decodeJSON(t, "dlq show", r.stdout)

	b := natsTopic(t, nats, topic)
	if err := b.Publish(ctx, topic, ev); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", append([]string{"audit", "--json", "--broker", nats, "--topic", topic, "--group", "billing"}, flags...)...)
	v = decodeJSON(t, "audit", r.stdout)
	mustNull(t, "audit (no --since)", v, "since")
	mustNull(t, "audit (no --until)", v, "until")

	r = run(t, "", "bench", "publish", "--json", "--broker", nats, "--events", "200", "--size", "64").mustOK(t)
	v = decodeJSON(t, "bench publish", r.stdout)
	if s, _ := field(v, "0", "seconds"); s == nil {
		t.Errorf("bench publish: no seconds\n%s", r.stdout)
	}

	r = run(t, "", "demo", "--orders", "30", "--json").mustOK(t)
	v = decodeJSON(t, "demo", r.stdout)
	if s, _ := field(v, "elapsed_seconds"); s == nil {
		t.Errorf("demo: no elapsed_seconds\n%s", r.stdout)
	}
}

// TestReadOnlyNeverCreates: a SQLite path with a typo makes every command
// that only reads (or changes existing rows) fail with one clear error, and
// leaves no file behind; migrate sql prints its SQL without creating one.
func TestReadOnlyNeverCreates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	free := freeAddr(t)
	for _, path := range []string{filepath.Join(dir, "typo.db"), filepath.Join(dir, "no", "such", "dir.db")} {
		store := "sqlite://" + path
		cmds := [][]string{
			{"outbox", "status"}, {"outbox", "status", "--json"}, {"outbox", "requeue", "--seq", "1"},
			{"dlq", "list"}, {"dlq", "show", "x"}, {"dlq", "purge", "--all"},
			{"migrate", "status"}, {"audit", "--broker", "nats://127.0.0.1:1", "--topic", "t"},
			{"console", "--listen", free},
			{"relay", "--broker", "nats://127.0.0.1:1", "--listen", ""},
		}
		for _, c := range cmds {
			r := run(t, "yes\n", append(c, "--store", store)...)
			if r.code != 1 || !strings.Contains(r.stderr, "no SQLite database there") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%v on a missing file: exit %d, stderr %q; want exit 1 and one line saying there is no database", c, r.code, r.stderr)
			}
			if _, err := os.Stat(path); err == nil {
				t.Fatalf("%v created %s", c, path)
			}
		}
		r := run(t, "", "migrate", "sql", "--store", store).mustOK(t)
		if !strings.Contains(r.stdout, "CREATE TABLE IF NOT EXISTS eventkit_outbox") {
			t.Errorf("migrate sql: %s", r.stdout)
		}
		if _, err := os.Stat(path); err == nil {
			t.Fatalf("migrate sql created %s", path)
		}
	}
}

// TestMigrateSQL: the SQL migrate sql prints, run by hand on a fresh
// database, creates the same tables, indexes and triggers as migrate up, and
// records the versions so that migrate status says all is applied.
func TestMigrateSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		byHand, byUp := filepath.Join(dir, "hand.db"), filepath.Join(dir, "up.db")
		script := run(t, "", "migrate", "sql", "--store", "sqlite://"+byHand).mustOK(t).stdout
		db, err := sql.Open("sqlite", byHand)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, script); err != nil {
			t.Fatalf("running the printed SQL: %v\n%s", err, script)
		}
		run(t, "", "migrate", "up", "--store", "sqlite://"+byUp).mustOK(t)
		schema := func(path string) string {
			d, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			return sqliteSchema(t, d)
		}
		want := schema(byUp)
		if got := schema(byHand); got != want {
			t.Errorf("schema by hand:\n%s\nby migrate up:\n%s", got, want)
		}
		checkAllApplied(t, "sqlite://"+byHand)
		run(t, "", "migrate", "up", "--store", "sqlite://"+byHand).mustOK(t) // nothing left to do
		if got := schema(byHand); got != want {
			t.Errorf("migrate up after the script changed the schema:\n%s", got)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		byHand, byUp := testdb.Postgres(t), testdb.Postgres(t)
		script := run(t, "", "migrate", "sql", "--store", byHand).mustOK(t).stdout
		conn, err := pgx.Connect(ctx, byHand)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, script); err != nil { // simple protocol: the whole script
			t.Fatalf("running the printed SQL: %v\n%s", err, script)
		}
		run(t, "", "migrate", "up", "--store", byUp).mustOK(t)
		schema := func(url string) string {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			return pgSchema(t, c)
		}
		want := schema(byUp)
		if got := schema(byHand); got != want {
			t.Errorf("schema by hand:\n%s\nby migrate up:\n%s", got, want)
		}
		checkAllApplied(t, byHand)
	})
}

func checkAllApplied(t *testing.T, store string) {
	t.Helper()
	var rows []struct {
		Kind    string `json:"kind"`
		Version int    `json:"version"`
		Applied bool   `json:"applied"`
	}
	out := run(t, "", "migrate", "status", "--json", "--store", store).mustOK(t).stdout
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) < 3 {
		t.Fatalf("migrate status --json: %v\n%s", err, out)
	}
	for _, r := range rows {
		if !r.Applied {
			t.Errorf("after the printed SQL, %s %d is not applied", r.Kind, r.Version)
		}
	}
}

func sqliteSchema(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var typ, name, tbl, def string
		if err := rows.Scan(&typ, &name, &tbl, &def); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s on %s: %s\n", typ, name, tbl, def)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM eventkit_outbox_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "%d versions recorded\n", n)
	return b.String()
}

func pgSchema(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for _, q := range []string{
		`SELECT table_name || '.' || column_name || ' ' || data_type || ' null=' || is_nullable || ' default=' || coalesce(column_default, '')
		   FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1`,
		`SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`,
		`SELECT tgrelid::regclass::text || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`,
		`SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1`,
		`SELECT conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1`,
		`SELECT version || ' ' || name FROM eventkit_outbox_migrations ORDER BY version`,
	} {
		rows, err := c.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(s + "\n")
		}
		rows.Close()
	}
	return b.String()
}

// TestRelayListenTaken: a --listen address another process holds stops the
// relay at once with one error naming the address, before it connects.
func TestRelayListenTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	store := "sqlite://" + filepath.Join(t.TempDir(), "relay.db")
	r := run(t, "", "relay", "--store", store, "--broker", "nats://127.0.0.1:1", "--listen", addr)
	want := "--listen " + addr + ": address already in use; pick another with --listen"
	if r.code != 1 || strings.Count(r.stderr, want) != 1 || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q; want exit 1 and one line %q", r.code, r.stderr, want)
	}
	if _, err := os.Stat(strings.TrimPrefix(store, "sqlite://")); err == nil {
		t.Fatal("the relay created its SQLite file before failing")
	}
	run(t, "", "migrate", "up", "--store", store).mustOK(t)
	r = run(t, "", "console", "--store", store, "--listen", addr)
	if r.code != 1 || strings.Count(r.stderr, want) != 1 {
		t.Fatalf("console: exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
}
