package main_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/eventkit/eventkit/asyncapi/asyncapitest"
)

// TestAsyncAPIDemoDocuments: the documents `eventkit asyncapi` prints for
// the demo services pass the official AsyncAPI parser, in YAML and JSON,
// and describe who sends and who receives each demo topic.
func TestAsyncAPIDemoDocuments(t *testing.T) {
	y := run(t, "", "asyncapi").mustOK(t, "asyncapi")
	docs := strings.Split(y.stdout, "\n---\n")
	if len(docs) != 3 {
		t.Fatalf("want 3 YAML documents, got %d:\n%s", len(docs), y.stdout)
	}
	var all [][]byte
	for _, d := range docs {
		all = append(all, []byte(d))
	}
	ops := map[string]map[string]bool{}
	for _, svc := range []string{"orders", "inventory", "notifications"} {
		j := run(t, "", "asyncapi", svc, "--format", "json", "--binding", "kafka").mustOK(t, "asyncapi", svc)
		all = append(all, []byte(j.stdout))
		var m struct {
			Operations map[string]struct{ Action string } `json:"operations"`
		}
		if err := json.NewDecoder(bytes.NewReader([]byte(j.stdout))).Decode(&m); err != nil {
			t.Fatal(err)
		}
		ops[svc] = map[string]bool{}
		for id := range m.Operations {
			ops[svc][id] = true
		}
	}
	want := map[string][]string{
		"orders":        {"send_demo.orders", "receive_demo.inventory"},
		"inventory":     {"send_demo.inventory", "receive_demo.orders"},
		"notifications": {"receive_demo.orders", "receive_demo.inventory"},
	}
	for svc, ids := range want {
		if len(ops[svc]) != len(ids) {
			t.Errorf("%s: operations %v, want %v", svc, ops[svc], ids)
		}
		for _, id := range ids {
			if !ops[svc][id] {
				t.Errorf("%s: no operation %s (has %v)", svc, id, ops[svc])
			}
		}
	}
	if r := run(t, "", "asyncapi", "billing"); r.code != 2 || !strings.Contains(r.stderr, "unknown service") {
		t.Errorf("unknown service: exit %d, stderr %q", r.code, r.stderr)
	}
	asyncapitest.Validate(t, all...)
}
