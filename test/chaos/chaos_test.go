package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventkit/eventkit/internal/testenv"
)

// brokers in the order the short run rotates through them.
var brokers = []string{"nats", "rabbitmq", "redis", "kafka"}

// TestFaultRun runs a short version of the fault run as CI does: one
// broker per day, rotating (EVENTKIT_CHAOS_BROKER=nats|rabbitmq|redis|kafka|all
// picks), 600 events over 20 subjects (EVENTKIT_CHAOS_EVENTS), with every
// fault of the long run while the producer runs and for 10 s after. It fails on any loss, double application or order
// violation, or when the events are not all applied within the drain time.
// The long run:
//
//	go run ./test/chaos -broker all -events 20000 -subjects 50
func TestFaultRun(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault run takes about a minute; skipped with -short")
	}
	kind := os.Getenv("EVENTKIT_CHAOS_BROKER")
	if kind == "" {
		kind = brokers[time.Now().UTC().YearDay()%len(brokers)]
	}
	events := 600
	if v := os.Getenv("EVENTKIT_CHAOS_EVENTS"); v != "" {
		events, _ = strconv.Atoi(v)
	}
	pg := testenv.Postgres.URL(t)
	checkLogical(t, pg)
	// Faults for at least 30 s: without -duration they stopped as soon as
	// 90% of the events were applied, which a fast run reaches in a few
	// seconds, before the first kill (every 1-3 s).
	args := []string{"-broker", kind, "-events", strconv.Itoa(events), "-subjects", "20", "-faults-after", "10s", "-duration", "30s", "-drain", "150s", "-pg", pg}
	kinds := []string{kind}
	if kind == "all" {
		kinds = brokers
	}
	for _, k := range kinds {
		switch k {
		case "nats":
			args = append(args, "-nats", testenv.NATS.URL(t))
		case "rabbitmq":
			args = append(args, "-rabbitmq", testenv.RabbitMQ.URL(t))
		case "redis":
			args = append(args, "-redis", testenv.Redis.URL(t))
		}
	}
	base := 0
	if v := os.Getenv("EVENTKIT_CHAOS_PORT_BASE"); v != "" {
		base, _ = strconv.Atoi(v) // a helper's own port range
	} else {
		base = freePortBase(t)
	}
	args = append(args, "-port-base", strconv.Itoa(base))

	dir := t.TempDir()
	for _, b := range [][]string{{"chaos", "."}, {"eventkit", "../../cmd/eventkit"}} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b[0]), b[1]).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	args = append(args, "-eventkit", filepath.Join(dir, "eventkit"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "chaos"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("fault run on %s: %v\n%s", kind, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(kinds) {
		t.Fatalf("want one line per broker (%v), got %q", kinds, out)
	}
	for _, line := range lines {
		if err := checkLine(line, events); err != nil {
			t.Errorf("%v: %s", err, line)
		}
	}
}

// checkLine checks one result line of a run of events events: all of them
// produced and applied, none lost, applied twice, out of order or
// dead-lettered, and faults injected (a run with no kill or no cut proves
// nothing).
func checkLine(line string, events int) error {
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			f[k] = v
		}
	}
	if strings.Contains(line, "FAILED") {
		return errors.New("the run failed")
	}
	for k, want := range map[string]string{"produced": strconv.Itoa(events), "applied": strconv.Itoa(events),
		"lost": "0", "applied_twice": "0", "order_violations": "0", "dead_lettered": "0"} {
		if f[k] != want {
			return fmt.Errorf("%s=%q, want %s", k, f[k], want)
		}
	}
	for _, k := range []string{"kills", "cuts"} {
		if n, err := strconv.Atoi(f[k]); err != nil || n == 0 {
			return fmt.Errorf("%s=%q: a fault run with no %s", k, f[k], k)
		}
	}
	return nil
}

// checkLogical skips (fails in CI) when PostgreSQL cannot run the CDC relay.
func checkLogical(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var wal string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&wal); err != nil {
		t.Fatal(err)
	}
	if wal != "logical" {
		msg := "the fault run's CDC relay needs wal_level=logical (have " + wal + "); scripts/test.sh starts a private PostgreSQL when 5432 lacks it"
		testenv.Unavailable(t, msg)
	}
}

// freePortBase finds a base in 31200-31299 whose ports base, base+1 and
// base+10 (the proxies and kfake) are free.
func freePortBase(t *testing.T) int {
	for base := 31200; base+10 < 31300; base += 20 {
		ok := true
		for _, off := range []int{0, 1, 10} {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				ok = false
				break
			}
			_ = ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range in 31200-31299 for the fault run")
	return 0
}

// TestCheckLine: TestFaultRun's check of the result line rejects every
// failure the run can report, and a run that injected no fault.
func TestCheckLine(t *testing.T) {
	good := result{broker: "nats", faulted: true, produced: 600, applied: 600, kills: 12, cuts: 40, stalls: 5, converged: true, duration: time.Minute}
	if err := checkLine(good.String(), 600); err != nil {
		t.Fatalf("%v: %s", err, good.String())
	}
	bad := map[string]func(r *result){
		"lost":           func(r *result) { r.lost, r.applied = 1, 599 },
		"applied twice":  func(r *result) { r.twice = 1 },
		"order":          func(r *result) { r.order = 3 },
		"dead-lettered":  func(r *result) { r.deadLettered = 1 },
		"not converged":  func(r *result) { r.converged = false },
		"fewer produced": func(r *result) { r.produced, r.applied = 599, 599 },
		"no kill":        func(r *result) { r.kills = 0 },
		"no cut":         func(r *result) { r.cuts = 0 },
	}
	for name, mutate := range bad {
		r := good
		mutate(&r)
		if err := checkLine(r.String(), 600); err == nil {
			t.Errorf("%s: accepted %s", name, r.String())
		}
	}
}
