package main_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
)

// TestAudit: a topic that does not exist is named as such (exit 1); an
// event at the broker that no group applied is a finding (exit 1, JSON in
// snake_case); with the inbox row in place the audit passes (exit 0).
func TestAudit(t *testing.T) {
	t.Parallel()
	store := testdb.Postgres(t)
	nats := testenv.NATS.URL(t)
	run(t, "", "migrate", "up", "--store", store).mustOK(t)
	topic := testenv.Name("audit")
	flags := []string{"--store", store, "--broker", nats, "--topic", topic, "--group", "billing"}

	r := run(t, "", append([]string{"audit"}, flags...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "does not exist at the broker") || !strings.Contains(r.stderr, "check the topic's name") {
		t.Fatalf("missing topic: exit %d\n%s", r.code, r.stderr)
	}

	b := natsTopic(t, nats, topic)
	ev := eventkit.New("thing.happened", "application/json", []byte(`{}`))
	if err := b.Publish(context.Background(), topic, ev); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", append([]string{"audit", "--json"}, flags...)...)
	var rep struct {
		AtBroker int `json:"at_broker"`
		Findings []struct {
			Kind    string `json:"kind"`
			EventID string `json:"event_id"`
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, r.stdout)
	}
	if r.code != 1 || rep.AtBroker != 1 || len(rep.Findings) != 1 || rep.Findings[0].Kind != "not_applied" || rep.Findings[0].EventID != ev.ID {
		t.Fatalf("exit %d, report %+v\n%s", r.code, rep, r.stderr)
	}
	pool, err := pgxpool.New(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(context.Background(), `INSERT INTO processed_events (consumer, event_id, event_type) VALUES ('billing', $1, 'thing.happened')`, ev.ID); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", append([]string{"audit"}, flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "no findings") {
		t.Fatalf("clean audit:\n%s", r.stdout)
	}
}

// TestConsoleOpenListen: the console refuses a non-loopback address without
// a token, before it touches the store.
func TestConsoleOpenListen(t *testing.T) {
	t.Parallel()
	r := run(t, "", "console", "--listen", "0.0.0.0:0", "--store", "postgres://nobody@127.0.0.1:1/x")
	if r.code != 2 || !strings.Contains(r.stderr, "not a loopback address") || !strings.Contains(r.stderr, "--token") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
}
