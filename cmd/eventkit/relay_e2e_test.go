package main_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eventkit/eventkit/internal/testenv"
)

// TestRelayBadTables: a missing outbox table, a table of another shape, and
// (CDC) a publication without the outbox table each stop `eventkit relay`
// at start-up with one clear error and exit 1, instead of a retry loop.
func TestRelayBadTables(t *testing.T) {
	t.Parallel()
	f := newPG(t)
	ctx := context.Background()
	url := testenv.Postgres.URL(t)
	natsURL := testenv.NATS.URL(t)
	missing := testenv.Name("e2e_missing")
	foreign := testenv.Name("e2e_foreign")
	other := testenv.Name("e2e_other")
	slot := strings.ReplaceAll(testenv.Name("ek_e2e_bad"), "-", "_")
	if _, err := f.pool.Exec(ctx, `CREATE TABLE `+foreign+` (id int PRIMARY KEY, payload text); CREATE TABLE `+other+` (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `CREATE PUBLICATION `+slot+` FOR TABLE `+other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = f.pool.Exec(context.Background(), `DROP PUBLICATION IF EXISTS `+slot+`; DROP TABLE IF EXISTS `+foreign+`, `+other)
	})
	cdcTable := f.flags[3] // the fixture's migrated outbox table
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing table", []string{"--outbox-table", missing}, "table does not exist"},
		{"wrong shape", []string{"--outbox-table", foreign}, "not an eventkit outbox table"},
		{"missing table cdc", []string{"--outbox-table", missing, "--mode", "cdc", "--slot", slot}, "does not exist"},
		{"publication without the table", []string{"--outbox-table", cdcTable, "--mode", "cdc", "--slot", slot}, "does not include table"},
	}
	for _, c := range cases {
		args := append([]string{"relay", "--store", url, "--broker", natsURL, "--listen", ""}, c.args...)
		t0 := time.Now()
		r := run(t, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d after %v, stderr %q; want exit 1 and %q", c.name, r.code, time.Since(t0), r.stderr, c.want)
		}
		if n := strings.Count(r.stderr, c.want); n != 1 {
			t.Errorf("%s: the error appears %d times (a retry loop?): %s", c.name, n, r.stderr)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRelayReadiness: of two relays on one outbox, /readyz says "leader"
// for one and "standby" for the other, and the leader gauge says which;
// when the leader stops, the standby takes over and says so.
func TestRelayReadiness(t *testing.T) {
	t.Parallel()
	f := newPG(t)
	a1, a2 := freeAddr(t), freeAddr(t)
	start := func(addr string) *exec.Cmd {
		cmd := exec.Command(bin, append([]string{"relay", "--broker", f.nats, "--listen", addr}, f.flags...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	c1 := start(a1)
	testenv.WaitFor(t, 30*time.Second, "relay 1 leads", func() bool { code, body := get(a1, "/readyz"); return code == 200 && body == "leader\n" })
	start(a2)
	testenv.WaitFor(t, 30*time.Second, "relay 2 stands by", func() bool { code, body := get(a2, "/readyz"); return code == 200 && body == "standby\n" })
	gauge := func(addr string) string {
		_, m := get(addr, "/metrics")
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "eventkit_outbox_leader") {
				return l[strings.LastIndex(l, " ")+1:]
			}
		}
		return "missing"
	}
	if g1, g2 := gauge(a1), gauge(a2); g1 != "1" || g2 != "0" {
		t.Fatalf("leader gauge: relay 1 %s, relay 2 %s; want 1 and 0", g1, g2)
	}
	_ = c1.Process.Signal(syscall.SIGTERM)
	_ = c1.Wait()
	testenv.WaitFor(t, 30*time.Second, "relay 2 takes over", func() bool { code, body := get(a2, "/readyz"); return code == 200 && body == "leader\n" })
	if g := gauge(a2); g != "1" {
		t.Fatalf("leader gauge after takeover: %s", g)
	}
}
