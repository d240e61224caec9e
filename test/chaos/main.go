// Command chaos is eventkit's cross-process fault run: a producer, three
// outbox relays and three strict-order consumers, each its own OS process,
// every database and broker connection through a TCP fault proxy, while
// relays and consumers are SIGKILLed every 1-3 s and connections are cut
// and stalled. At the end it checks the databases and prints one line:
//
//	chaos broker=nats produced=20000 applied=20000 lost=0 applied_twice=0 order_violations=0 dead_lettered=0 kills=31 cuts=52 stalls=17 duration=1m2s
//
// and exits 1 on any loss, double application or order violation (or when
// the run does not converge, or injected no kill or no cut although faults
// were asked for), 2 when it could not run.
//
// Run it from the module root (it builds cmd/eventkit for the relays):
//
//	go run ./test/chaos -broker nats -events 20000 -subjects 50
//	go run ./test/chaos -broker all -events 20000 -subjects 50
//
// The processes:
//   - producer: one business row and one outbox event per transaction, per
//     subject numbered from 1 in the payload; subject i goes to outbox
//     table i%2 (topic t0 or t1). Not killed (its connections are cut).
//   - relays: two `eventkit relay` (polling) competing on outbox 0 (one
//     leads, the other takes over when it dies), one `eventkit relay
//     --mode cdc` on outbox 1 (its own slot). Killed.
//   - consumers: three processes, consumer.Config{Mode: consumer.Strict(),
//     Concurrency: 8} with the SQL inbox on PostgreSQL, one group on both
//     topics. The handler, in the inbox transaction, records the event in
//     an "applied" table (no unique key, so a double application shows)
//     and, if the event is not its subject's next (last applied + 1), a
//     row in a "violations" table. Killed.
//   - kfake (with -broker kafka): a one-broker kfake cluster in its own
//     process, which advertises the proxy's address so that every Kafka
//     connection goes through the proxy. Not killed.
//
// Faults run while the producer runs and after it until 90% of the events
// are applied (at most -faults-after), then the run waits up to -drain for
// the rest. See docs/faultrun.md for the design and the figures.
//
// Every table, stream, queue, topic, group and slot has the run's id in its
// name and is removed at the end (-keep leaves them).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-role" {
		if err := runRole(os.Args[2], os.Args[3:]); err != nil && err != context.Canceled {
			fmt.Fprintln(os.Stderr, os.Args[2]+":", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	flag.StringVar(&cfg.brokers, "broker", "nats", "nats, rabbitmq, redis, kafka, or all (one run after the other)")
	flag.IntVar(&cfg.events, "events", 20000, "events to produce")
	flag.IntVar(&cfg.subjects, "subjects", 50, "subjects")
	flag.DurationVar(&cfg.minFaults, "duration", 0, "keep injecting faults at least this long (default: while the producer runs)")
	flag.DurationVar(&cfg.faultsAfter, "faults-after", 4*time.Minute, "after the producer is done, keep injecting faults until 90% of the events are applied, at most this long")
	flag.DurationVar(&cfg.drain, "drain", 3*time.Minute, "after the faults stop, how long to wait for every event to be applied")
	flag.StringVar(&cfg.pg, "pg", envOr("EVENTKIT_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL (wal_level=logical)")
	flag.StringVar(&cfg.natsURL, "nats", envOr("EVENTKIT_NATS_URL", "nats://127.0.0.1:4222"), "NATS URL")
	flag.StringVar(&cfg.rabbitURL, "rabbitmq", envOr("EVENTKIT_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL")
	flag.StringVar(&cfg.redisURL, "redis", envOr("EVENTKIT_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL")
	flag.IntVar(&cfg.portBase, "port-base", 31200, "first of the loopback ports the run listens on (proxies, kfake): base..base+19")
	flag.StringVar(&cfg.eventkitBin, "eventkit", "", "eventkit binary for the relays (default: go build ./cmd/eventkit)")
	flag.BoolVar(&cfg.noFaults, "no-faults", false, "run without kills, cuts and stalls (a baseline)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the tables, streams and logs")
	flag.BoolVar(&cfg.verbose, "v", false, "print what happens")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	kinds := strings.Split(cfg.brokers, ",")
	if cfg.brokers == "all" {
		kinds = []string{"nats", "rabbitmq", "redis", "kafka"}
	}
	defer func() {
		if buildOnce.path != "" {
			_ = os.RemoveAll(filepath.Dir(buildOnce.path))
		}
	}()
	failed := false
	for _, k := range kinds {
		res, err := run(ctx, cfg, k)
		if err != nil {
			fmt.Fprintf(os.Stderr, "chaos broker=%s: cannot run: %v\n", k, err)
			exit(2)
		}
		fmt.Println(res.String())
		if !res.ok() {
			failed = true
		}
	}
	if failed {
		exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// exit removes the built eventkit binary and exits.
func exit(code int) {
	if buildOnce.path != "" {
		_ = os.RemoveAll(filepath.Dir(buildOnce.path))
	}
	os.Exit(code)
}
