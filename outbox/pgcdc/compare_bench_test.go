package pgcdc_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// benchRounds is BENCH_ROUNDS, or def.
func benchRounds(def int) int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return def
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDrainCDCvsPolling drains 100,000 pre-inserted 1 KB events (64
// subjects) from Postgres to NATS JetStream with the same relay engine over
// its two sources, alternating polling and CDC rounds (PCPC...) on two
// tables of the same database: polling over a table without a slot, CDC
// over a table with one. A round ends when the relay has completed every
// row (Stats.Delivered), not when the broker has accepted them. It reports
// events/s and the relay process's CPU per event (this process only; the
// database and NATS are not counted).
//
//	BENCH_ROUNDS=3 go test -run '^$' -bench DrainCDCvsPolling -benchtime 1x ./outbox/pgcdc
func BenchmarkDrainCDCvsPolling(b *testing.B) {
	natsURL := testenv.NATS.URL(b) // skipped without NATS, failed in CI
	const total = 100000
	rounds := benchRounds(2)
	ctx := context.Background()
	cdcEnv := newEnv(b) // table with slot and publication
	pollEnv := newEnv(b)
	admin := pollEnv.relay(nil)
	if err := admin.Teardown(ctx); err != nil { // the polling table has no slot
		b.Fatal(err)
	}
	nb, err := natsbroker.Connect(ctx, natsURL, natsbroker.Options{Name: "pgcdc-compare"})
	if err != nil {
		b.Fatal(err)
	}
	defer nb.Close(ctx) //nolint:errcheck
	quiet := outbox.RelayConfig{BatchSize: 1000, StatusInterval: -1, Logger: cdcEnv.cfg.Logger}
	res := map[string][]float64{}
	cpu := map[string][]float64{}
	srv := map[string][]float64{}
	for round := range 2 * rounds {
		mode := "polling"
		e := pollEnv
		if round%2 == 1 {
			mode, e = "cdc", cdcEnv
		}
		topic := testenv.Name("cmpbench")
		if mode == "cdc" {
			// The slot decodes every change of the database, so without
			// this the CDC round would also decode the 100,000 inserts and
			// deletes of the polling round before on the other table
			// (work no outbox relay of this table has in a deployment:
			// it is the benchmark's other relay). Advance it past them,
			// before the timer, so each round drains its own events.
			if _, err := e.pool.Exec(ctx, `SELECT pg_replication_slot_advance($1, pg_current_wal_insert_lsn())`, e.slot); err != nil {
				b.Fatal(err)
			}
		}
		e.preinsert(topic, total, 1024)
		var relay interface {
			Run(context.Context) error
		}
		var delivered func() int64
		if mode == "cdc" {
			cfg := cdcEnv.cfg
			cfg.RelayConfig = quiet
			rr, err := pgcdc.New(cdcEnv.pool, nb, cfg)
			if err != nil {
				b.Fatal(err)
			}
			relay, delivered = rr, func() int64 { return rr.Stats().Delivered }
		} else {
			s, err := pgoutbox.New(pollEnv.pool, pgoutbox.Config{Table: pollEnv.cfg.Table})
			if err != nil {
				b.Fatal(err)
			}
			r := outbox.NewRelay(s, nb, quiet)
			relay, delivered = r, func() int64 { return r.Stats().Delivered }
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		s0, _ := serverCPU(ctx, e.pool)
		c0, t0 := cpuTime(), time.Now()
		// Labelled so that a -cpuprofile can be split by mode
		// (go tool pprof -tagfocus mode=cdc).
		pprof.Do(rctx, pprof.Labels("mode", mode), func(rctx context.Context) {
			go func() { defer close(done); _ = relay.Run(rctx) }()
		})
		for delivered() < total {
			time.Sleep(2 * time.Millisecond)
		}
		el, c := time.Since(t0), cpuTime()-c0
		s1, ws, sok := serverCPUSplit(ctx, e.pool) // the round's walsender is still live
		cancel()
		<-done
		_ = nb.DeleteTopic(ctx, topic)
		rate := float64(total) / el.Seconds()
		res[mode] = append(res[mode], rate)
		cpu[mode] = append(cpu[mode], float64(c.Microseconds())/total)
		server := "n/a"
		if sok {
			sc := float64((s1 - s0).Microseconds()) / total
			srv[mode] = append(srv[mode], sc)
			server = fmt.Sprintf("%5.1f (walsender %.1f)", sc, float64(ws.Microseconds())/total)
		}
		b.Logf("round %d %-7s %8.0f events/s  %5.1f µs CPU/event (relay)  %s µs CPU/event (PostgreSQL)", round/2+1, mode, rate, float64(c.Microseconds())/total, server)
	}
	mean := func(x []float64) float64 {
		s := 0.0
		for _, v := range x {
			s += v
		}
		return s / float64(len(x))
	}
	b.ReportMetric(mean(res["polling"]), "polling-events/s")
	b.ReportMetric(mean(res["cdc"]), "cdc-events/s")
	b.ReportMetric(mean(cpu["polling"]), "polling-µsCPU/event")
	b.ReportMetric(mean(cpu["cdc"]), "cdc-µsCPU/event")
	if len(srv["cdc"]) > 0 && len(srv["polling"]) > 0 {
		b.ReportMetric(mean(srv["polling"]), "polling-pg-µsCPU/event")
		b.ReportMetric(mean(srv["cdc"]), "cdc-pg-µsCPU/event")
	}
	b.ReportMetric(100*mean(res["cdc"])/mean(res["polling"]), "cdc-%-of-polling")
}

// serverCPU returns the CPU time the PostgreSQL server of pool has used so
// far, if it runs on this machine (false otherwise): its postmaster, the
// postmaster's live children (backends, walsenders, background workers:
// every process of the instance, whoever it serves) and its exited ones.
func serverCPU(ctx context.Context, pool *pgxpool.Pool) (time.Duration, bool) {
	all, _, ok := serverCPUSplit(ctx, pool)
	return all, ok
}

// serverCPUSplit is serverCPU with the part of the walsenders (processes
// titled "postgres: walsender", live at the call) besides.
func serverCPUSplit(ctx context.Context, pool *pgxpool.Pool) (all, walsender time.Duration, ok bool) {
	var backend int
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return 0, 0, false
	}
	stat := func(pid int) []string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			return strings.Fields(s[i+1:]) // fields from 3 (state) on
		}
		return nil
	}
	num := func(f []string, field int) int64 { // field as numbered in proc(5)
		v, _ := strconv.ParseInt(f[field-3], 10, 64)
		return v
	}
	f := stat(backend)
	if f == nil {
		return 0, 0, false
	}
	pm := int(num(f, 4))
	pf := stat(pm)
	if pf == nil {
		return 0, 0, false
	}
	var ws int64
	ticks := num(pf, 14) + num(pf, 15) + num(pf, 16) + num(pf, 17)
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if cf := stat(pid); cf != nil && int(num(cf, 4)) == pm {
			t := num(cf, 14) + num(cf, 15)
			ticks += t
			if title, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(title), "postgres: walsender") {
				ws += t
			}
		}
	}
	tick := time.Second / 100 // USER_HZ is 100 on Linux
	return time.Duration(ticks) * tick, time.Duration(ws) * tick, true
}
