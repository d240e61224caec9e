package natsbroker_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLightImport keeps nats-server out of the adapter's dependencies: a
// producer that imports broker/natsbroker must not link a whole NATS server (the
// embedded server is package natsembed).
func TestLightImport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/eventkit/eventkit/broker/natsbroker").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/nats-io/nats-server") {
			t.Fatalf("broker/natsbroker depends on %s; keep the embedded server in broker/natsbroker/natsembed", dep)
		}
	}
}
