package consumer_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/benchkit/raw"
	"github.com/eventkit/eventkit/internal/testenv"
)

// Strict-order benchmark settings: concurrency 8 for both runtime modes,
// 100 subjects, at most 256 deliveries in flight for every contender.
const (
	strictConcurrency = 8
	strictSubjects    = 100
	strictInFlight    = 256
	// strictEvents per contender and run: at the strict mode's rate on a
	// loaded 2-core machine (~3-6k ev/s) a run lasts 8-15 s, so
	// the consumer's start-up (subscribe, group join) stays under 5 %.
	strictEvents  = 50_000
	strictTimeout = 5 * time.Minute
)

// BenchmarkStrictOrder compares consume throughput, on the shared fair
// harness (internal/benchkit: contenders one at a time, alternated ABC CBA
// over 5 rounds, fixed event counts, CPU per event of this process and of
// the local servers), of
//
//   - raw: the broker's own client (nats.go JetStream pull consumer with
//     explicit acks / a franz-go group consumer marking and committing),
//     no database;
//   - best-effort: the runtime with OrderedBySubject, and
//   - strict: the runtime with StrictOrder,
//
// both at Concurrency 8 with the PostgreSQL inbox (database/sql + pgx, a
// fresh inbox and positions table per run), over one topic pre-filled
// with events of 100 subjects that carry their subject sequence
// (eventkit.SubjectSeqExtension) in publish order, as the relay publishes
// them. Each run is a fresh group reading all of them. Besides the
// summary it prints strict/best-effort and strict/raw (medians of the
// per-round ratios) and each server's CPU µs per event.
//
//	go test -run '^$' -bench StrictOrder -benchtime 1x -timeout 60m ./consumer
func BenchmarkStrictOrder(b *testing.B) {
	b.Run("nats", func(b *testing.B) {
		url := testenv.NATS.URL(b)
		pg := testenv.Postgres.URL(b)
		ctx, cancel := dialCtx()
		defer cancel()
		br, err := natsbroker.Connect(ctx, url, natsbroker.Options{Name: "eventkit-strict-bench"})
		if err != nil {
			b.Fatal(err)
		}
		closeLater(b, br)
		n := benchtest.Events(strictEvents)
		topic := testenv.Name("ekstrict")
		b.Cleanup(func() {
			_ = br.DeleteTopic(context.Background(), topic)
			_ = br.DeleteTopic(context.Background(), topic+".dlq")
		})
		fillSeq(b, br, topic, n)
		rawRun := func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			// benchkit/raw: the nats.go pull consumer, explicit acks, 256 in
			// flight; the window is the whole call.
			ctx, cancel := context.WithTimeout(ctx, strictTimeout)
			defer cancel()
			_, err := raw.Consume(ctx, br, topic, testenv.Name("raw"), n, nil)
			return n, nil, err
		}
		drop := func(group string) {
			_ = br.JetStream().DeleteConsumer(context.Background(), br.StreamName(topic), group)
		}
		strictCompare(b, benchkit.NewMeter(url, pg), pg, br, topic, n, rawRun, drop)
	})
	// One strict consumer against three competing ones (one connection
	// each, concurrency 8 each, GroupMaxInFlight 3 × 256) on NATS, where
	// first deliveries split a subject across consumers and early arrivals
	// must wait.
	b.Run("nats-competing", func(b *testing.B) {
		url := testenv.NATS.URL(b)
		pg := testenv.Postgres.URL(b)
		conn := func() *natsbroker.Broker {
			ctx, cancel := dialCtx()
			defer cancel()
			br, err := natsbroker.Connect(ctx, url, natsbroker.Options{Name: "eventkit-strict-bench"})
			if err != nil {
				b.Fatal(err)
			}
			closeLater(b, br)
			return br
		}
		brs := []broker.Broker{conn(), conn(), conn()}
		admin := brs[0].(*natsbroker.Broker)
		n := benchtest.Events(strictEvents)
		topic := testenv.Name("ekstrict")
		b.Cleanup(func() {
			_ = admin.DeleteTopic(context.Background(), topic)
			_ = admin.DeleteTopic(context.Background(), topic+".dlq")
		})
		fillSeq(b, admin, topic, n)
		db := benchDB(b, pg)
		var early [2]atomic.Uint64
		strict := func(name string, k int) benchkit.Contender {
			return inboxContender(db, name, func(ctx context.Context, clock *benchkit.Clock, in *sqlinbox.Inbox) (int, error) {
				group := testenv.Name("g")
				defer func() { _ = admin.JetStream().DeleteConsumer(context.Background(), admin.StreamName(topic), group) }()
				got, e, err := competingConsume(ctx, clock, brs[:k], topic, group, n,
					consumer.Config{StrictOrder: true, Inbox: in, GroupMaxInFlight: k * strictInFlight})
				early[k/3].Add(e)
				return got, err
			})
		}
		rep := benchtest.Compare(b, benchkit.NewMeter(url, pg), strict("strict-1", 1), strict("strict-3", 3))
		if r, cpu, ok := rep.PairRatio("strict-3", "strict-1"); ok {
			fmt.Printf("strict-3/strict-1 %.2f ev/s (CPU/ev %.2f)\n", r, cpu)
		}
		if b.N == 1 {
			runs := float64(n * benchtest.Rounds())
			fmt.Printf("early arrivals per event: strict-1 %.3f, strict-3 %.3f\n", float64(early[0].Load())/runs, float64(early[1].Load())/runs)
		}
	})
	b.Run("kafka", func(b *testing.B) {
		pg := testenv.Postgres.URL(b)
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(c.Close)
		ctx, cancel := dialCtx()
		defer cancel()
		br, err := kafkabroker.New(ctx, kafkabroker.Options{
			Brokers: c.ListenAddrs(), Partitions: 6, Logger: quietLogger(),
			SessionTimeout: 10 * time.Second, HeartbeatInterval: 100 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
			CommitInterval: 100 * time.Millisecond, FetchMaxWait: 200 * time.Millisecond,
		})
		if err != nil {
			b.Fatal(err)
		}
		closeLater(b, br)
		n := benchtest.Events(strictEvents)
		topic := testenv.Name("ekstrict")
		fillSeq(b, br, topic, n)
		rawRun := func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			return rawKafkaConsume(ctx, clock, c, topic, testenv.Name("raw"), n)
		}
		// kfake runs in this process: its CPU is in the client's figure.
		strictCompare(b, benchkit.NewMeter(pg), pg, br, topic, n, rawRun, func(string) {})
	})
}

// strictCompare runs raw, best-effort and strict alternated and prints the
// strict ratios and the per-server CPU.
func strictCompare(b *testing.B, meter *benchkit.Meter, pgURL string, br broker.Broker, topic string, n int,
	raw func(context.Context, *benchkit.Clock) (int, []time.Duration, error), drop func(group string)) {
	db := benchDB(b, pgURL)
	var early atomic.Uint64
	mode := func(name string, cfg consumer.Config) benchkit.Contender {
		return inboxContender(db, name, func(ctx context.Context, clock *benchkit.Clock, in *sqlinbox.Inbox) (int, error) {
			cfg.Inbox = in
			group := testenv.Name("g")
			defer drop(group)
			got, e, err := runtimeConsume(ctx, clock, br, topic, group, n, cfg)
			if name == "strict" {
				early.Add(e)
			}
			return got, err
		})
	}
	rep := benchtest.Compare(b, meter,
		benchkit.Contender{Name: "raw", Run: raw},
		mode("best-effort", consumer.Config{OrderedBySubject: true}),
		mode("strict", consumer.Config{StrictOrder: true}),
	)
	sb, sbCPU, ok1 := rep.PairRatio("strict", "best-effort")
	sr, srCPU, ok2 := rep.PairRatio("strict", "raw")
	if ok1 && ok2 {
		fmt.Printf("strict/best-effort %.2f ev/s (CPU/ev %.2f); strict/raw %.3g ev/s (CPU/ev %.3g); target strict/best-effort >= 0.50\n", sb, sbCPU, sr, srCPU)
		b.ReportMetric(sb, "strict/best-effort")
		b.ReportMetric(sr, "strict/raw")
	}
	for i, s := range meter.Servers {
		fmt.Printf("%s CPU µs/event (medians):", s.Name)
		for _, c := range []string{"raw", "best-effort", "strict"} {
			fmt.Printf(" %s %.1f", c, rep.ServerPerEventOf(c, i))
		}
		fmt.Println()
	}
	if b.N == 1 {
		fmt.Printf("strict: %.3f early arrivals per event\n", float64(early.Load())/float64(n*max(1, benchtest.Rounds())))
	}
}

func benchDB(b *testing.B, pgURL string) *sql.DB {
	db, err := sql.Open("pgx", pgURL)
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(8 * strictConcurrency)
	db.SetMaxIdleConns(8 * strictConcurrency)
	b.Cleanup(func() { _ = db.Close() })
	return db
}

// inboxContender runs run with a fresh PostgreSQL inbox (and positions
// table) each run, dropped after it.
func inboxContender(db *sql.DB, name string, run func(ctx context.Context, clock *benchkit.Clock, in *sqlinbox.Inbox) (int, error)) benchkit.Contender {
	var in *sqlinbox.Inbox
	var table string
	return benchkit.Contender{Name: name,
		Prepare: func(ctx context.Context) (err error) {
			table = testenv.Name("bench_strict_inbox")
			if in, err = sqlinbox.New(db, sqlinbox.Postgres, sqlinbox.Options{Table: table}); err != nil {
				return err
			}
			if err = in.Migrate(ctx); err != nil {
				return err
			}
			// Open the pool's connections now, so that no run pays for them.
			conns := make([]*sql.Conn, 0, 4*strictConcurrency)
			for range 4 * strictConcurrency {
				c, err := db.Conn(ctx)
				if err != nil {
					return err
				}
				conns = append(conns, c)
			}
			for _, c := range conns {
				_ = c.Close()
			}
			return nil
		},
		Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			got, err := run(ctx, clock, in)
			return got, nil, err
		},
		Cleanup: func(ctx context.Context) error {
			_, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table+", "+table+"_positions")
			return err
		},
	}
}

// fillSeq publishes n events over strictSubjects subjects to topic, each
// carrying its subject sequence, in sequence order (a relay's order).
func fillSeq(b *testing.B, p broker.Publisher, topic string, n int) {
	b.Helper()
	const batch = 500
	evs := make([]eventkit.Event, 0, batch)
	for i := range n {
		evs = append(evs, eventkit.New("bench.event", "application/json", []byte(`{"n":1}`),
			eventkit.WithSubject(fmt.Sprint("s", i%strictSubjects)),
			eventkit.WithExtension(eventkit.SubjectSeqExtension, strconv.Itoa(i/strictSubjects+1))))
		if len(evs) == batch || i == n-1 {
			publish(b, p, topic, evs...)
			evs = evs[:0]
		}
	}
}

// runtimeConsume runs the runtime with cfg (concurrency 8, 256 in flight, a
// no-op handler) as group until it has handled n events (Stats().Handled
// counts after the ack and the inbox commit); the clock runs from
// consumer.New to that moment. It returns the strict mode's early
// arrivals.
func runtimeConsume(ctx context.Context, clock *benchkit.Clock, br broker.Broker, topic, group string, n int, cfg consumer.Config) (int, uint64, error) {
	return competingConsume(ctx, clock, []broker.Broker{br}, topic, group, n, cfg)
}

// competingConsume is runtimeConsume with one runtime per client in brs,
// competing in one group, until together they have handled n events.
func competingConsume(ctx context.Context, clock *benchkit.Clock, brs []broker.Broker, topic, group string, n int, cfg consumer.Config) (int, uint64, error) {
	cfg.Concurrency, cfg.MaxInFlight, cfg.Logger = strictConcurrency, strictInFlight, quietLogger()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, len(brs))
	clock.Start()
	cs := make([]*consumer.Consumer, len(brs))
	for i, br := range brs {
		c, err := consumer.New(br, cfg)
		if err != nil {
			return 0, 0, err
		}
		if err := c.HandleFunc(topic, group, func(context.Context, eventkit.Event) error { return nil }); err != nil {
			return 0, 0, err
		}
		cs[i] = c
		go func() { runDone <- c.Run(rctx) }()
	}
	stats := func() (s consumer.Stats) {
		for _, c := range cs {
			x := c.Stats()
			s.Handled += x.Handled
			s.Failed += x.Failed
			s.Retried += x.Retried
			s.DeadLettered += x.DeadLettered
			s.Duplicates += x.Duplicates
			s.Early += x.Early
			s.EarlyReturned += x.EarlyReturned
		}
		return s
	}
	deadline := time.Now().Add(strictTimeout)
	for stats().Handled < uint64(n) {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s: handled %d of %d (%+v)", group, stats().Handled, n, stats())
		}
		select {
		case err := <-runDone:
			return 0, 0, fmt.Errorf("%s: Run returned early: %v", group, err)
		case <-time.After(time.Millisecond):
		}
	}
	clock.Stop()
	cancel()
	for range brs {
		if err := <-runDone; err != nil {
			return 0, 0, err
		}
	}
	s := stats()
	if s.Failed+s.DeadLettered != 0 || (len(brs) == 1 && s.Retried+s.Duplicates != 0) {
		return 0, 0, fmt.Errorf("%s: unexpected stats %+v", group, s)
	}
	if os.Getenv("BENCH_DEBUG") != "" {
		fmt.Printf("%s: %+v\n", group, s)
	}
	return n, s.Early, nil
}

// rawKafkaConsume consumes n records of topic as a fresh franz-go group,
// marking each for commit, and commits at the end; the clock runs from
// creating the client to the last record.
func rawKafkaConsume(ctx context.Context, clock *benchkit.Clock, c *kfake.Cluster, topic, group string, n int) (int, []time.Duration, error) {
	clock.Start()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitMarks())
	if err != nil {
		return 0, nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, strictTimeout)
	defer cancel()
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return 0, nil, fmt.Errorf("raw: consumed %d of %d: %w", got, n, err)
		}
		fs.EachRecord(func(r *kgo.Record) { cl.MarkCommitRecords(r); got++ })
	}
	clock.Stop()
	return n, nil, cl.CommitMarkedOffsets(ctx)
}
