package main_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDemoDebeziumRelayFormat: `eventkit demo --relay-format debezium` (the
// relays publishing as Debezium's outbox event router, the consumers reading
// through debezium.Wrap, faults on) passes its verdict; a bad format is a
// usage error. internal/demo's TestRunDebeziumRelayFormat checks the
// messages at the broker are Debezium-shaped.
func TestDemoDebeziumRelayFormat(t *testing.T) {
	t.Parallel()
	r := run(t, "", "demo", "--orders", "100", "--relay-format", "debezium", "--json").mustOK(t)
	var s struct {
		Duplicates  int  `json:"duplicates_skipped"`
		PoisonInDLQ bool `json:"poison_in_dead_letters"`
		Verdict     struct {
			Confirmed, Cancelled int
			OK                   bool
		} `json:"verdict"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, r.stdout)
	}
	if !s.Verdict.OK || s.Verdict.Confirmed+s.Verdict.Cancelled != 100 || !s.PoisonInDLQ || s.Duplicates == 0 {
		t.Fatalf("summary %s", r.stdout)
	}
	bad := run(t, "", "demo", "--relay-format", "avro")
	if bad.code != 2 || !strings.Contains(bad.stderr, "--relay-format must be cloudevents or debezium") {
		t.Fatalf("--relay-format avro: exit %d, stderr %s", bad.code, bad.stderr)
	}
}
