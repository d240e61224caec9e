package main

import (
	"context"
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
	args := []string{"-broker", kind, "-events", strconv.Itoa(events), "-subjects", "20", "-faults-after", "10s", "-drain", "150s", "-pg", pg}
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
	args = append(args, "-port-base", strconv.Itoa(freePortBase(t)))

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
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		for _, want := range []string{"lost=0 ", "applied_twice=0 ", "order_violations=0 ", "produced=" + strconv.Itoa(events) + " "} {
			if !strings.Contains(line, want) {
				t.Errorf("want %q in %s", want, line)
			}
		}
	}
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
		if testenv.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// freePortBase finds a base in 56200-56299 whose ports base, base+1 and
// base+10 (the proxies and kfake) are free.
func freePortBase(t *testing.T) int {
	for base := 56200; base+10 < 56300; base += 20 {
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
	t.Fatal("no free port range in 56200-56299 for the fault run")
	return 0
}
