package pgcdc_test

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	natsbroker "github.com/eventkit/eventkit/broker/nats"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/outbox/postgres"
)

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
	if !reachable("127.0.0.1:4222") && os.Getenv(testenv.NATS.EnvVar) == "" {
		b.Skip("NATS not reachable")
	}
	const total = 100000
	rounds := 2
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	ctx := context.Background()
	cdcEnv := newEnv(b) // table with slot and publication
	pollEnv := newEnv(b)
	admin := pollEnv.relay(nil)
	if err := admin.Teardown(ctx); err != nil { // the polling table has no slot
		b.Fatal(err)
	}
	nb, err := natsbroker.Connect(ctx, testenv.NATS.URL(b), natsbroker.Options{Name: "pgcdc-compare"})
	if err != nil {
		b.Fatal(err)
	}
	defer nb.Close(ctx) //nolint:errcheck
	quiet := outbox.RelayConfig{BatchSize: 1000, StatusInterval: -1, Logger: cdcEnv.cfg.Logger}
	res := map[string][]float64{}
	cpu := map[string][]float64{}
	for round := range 2 * rounds {
		mode := "polling"
		e := pollEnv
		if round%2 == 1 {
			mode, e = "cdc", cdcEnv
		}
		topic := testenv.Name("cmpbench")
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
			s, err := postgres.New(pollEnv.pool, postgres.Config{Table: pollEnv.cfg.Table})
			if err != nil {
				b.Fatal(err)
			}
			r := outbox.NewRelay(s, nb, quiet)
			relay, delivered = r, func() int64 { return r.Stats().Delivered }
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		c0, t0 := cpuTime(), time.Now()
		go func() { defer close(done); _ = relay.Run(rctx) }()
		for delivered() < total {
			time.Sleep(2 * time.Millisecond)
		}
		el, c := time.Since(t0), cpuTime()-c0
		cancel()
		<-done
		_ = nb.DeleteTopic(ctx, topic)
		rate := float64(total) / el.Seconds()
		res[mode] = append(res[mode], rate)
		cpu[mode] = append(cpu[mode], float64(c.Microseconds())/total)
		b.Logf("round %d %-7s %8.0f events/s  %5.1f µs CPU/event", round/2+1, mode, rate, float64(c.Microseconds())/total)
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
	b.ReportMetric(100*mean(res["cdc"])/mean(res["polling"]), "cdc-%-of-polling")
}
