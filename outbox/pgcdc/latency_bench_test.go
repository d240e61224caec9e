package pgcdc_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

// ackClock stamps, per event, the time from its commit's return to the
// broker's confirmation of the Publish call that carried it.
type ackClock struct {
	broker.Publisher
	mu        sync.Mutex
	committed map[string]time.Time
	lat       []time.Duration
}

func (a *ackClock) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	err := a.Publisher.Publish(ctx, topic, events...)
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range events {
		if t, ok := a.committed[e.ID]; ok {
			a.lat = append(a.lat, now.Sub(t))
			delete(a.committed, e.ID)
		}
	}
	return err
}

// BenchmarkCommitToAckCDCvsPolling writes one 100-byte event per
// transaction (synchronous_commit on, the server's default; pgtemp.sh runs
// it off) at a steady 500 events/s over 100 subjects while the relay runs,
// and reports the commit latency and the commit-to-ack latency (commit
// returned -> NATS JetStream confirmed the event), p50 and p99, for the
// polling relay and the CDC relay, rounds alternated (PCPC...) on two
// tables of one database, 5 s per round.
//
//	BENCH_ROUNDS=2 go test -run '^$' -bench CommitToAckCDCvsPolling -benchtime 1x ./outbox/pgcdc
func BenchmarkCommitToAckCDCvsPolling(b *testing.B) {
	natsURL := testenv.NATS.URL(b) // skipped without NATS, failed in CI
	const rate, secs = 500, 5
	rounds := benchRounds(2)
	ctx := context.Background()
	cdcEnv, pollEnv := newEnv(b), newEnv(b)
	if err := pollEnv.relay(nil).Teardown(ctx); err != nil { // the polling table has no slot
		b.Fatal(err)
	}
	nb, err := natsbroker.Connect(ctx, natsURL, natsbroker.Options{Name: "pgcdc-latency"})
	if err != nil {
		b.Fatal(err)
	}
	defer nb.Close(ctx) //nolint:errcheck
	payload := []byte(`"` + strings.Repeat("x", 98) + `"`)
	commits, acks := map[string][]time.Duration{}, map[string][]time.Duration{}
	for round := range 2 * rounds {
		mode, e := "polling", pollEnv
		if round%2 == 1 {
			mode, e = "cdc", cdcEnv
		}
		topic := testenv.Name("latbench")
		if err := nb.Publish(ctx, topic, eventkit.New("bench.warm", "text/plain", []byte("w"))); err != nil {
			b.Fatal(err)
		}
		at := &ackClock{Publisher: nb, committed: map[string]time.Time{}}
		cfg := outbox.RelayConfig{StatusInterval: -1, Logger: cdcEnv.cfg.Logger}
		var relay interface{ Run(context.Context) error }
		var ready func() bool
		var delivered func() int64
		if mode == "cdc" {
			c := cdcEnv.cfg
			c.RelayConfig = cfg
			rr, err := pgcdc.New(cdcEnv.pool, at, c)
			if err != nil {
				b.Fatal(err)
			}
			relay, ready, delivered = rr, func() bool { return rr.Stats().Streaming }, func() int64 { return rr.Stats().Delivered }
		} else {
			rr := outbox.NewRelay(pollEnv.store, at, cfg)
			relay, ready, delivered = rr, rr.IsLeader, func() int64 { return rr.Stats().Delivered }
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = relay.Run(rctx) }()
		for !ready() {
			time.Sleep(5 * time.Millisecond)
		}
		n := rate * secs
		start := time.Now()
		for i := range n {
			if w := time.Until(start.Add(time.Duration(i) * time.Second / rate)); w > 0 {
				time.Sleep(w)
			}
			ev := eventkit.New("bench.event", "application/json", payload, eventkit.WithSubject(fmt.Sprint("s", i%100)))
			t0 := time.Now()
			err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
					return err
				}
				if err := e.store.Add(ctx, tx, topic, ev); err != nil {
					return err
				}
				at.mu.Lock()
				at.committed[ev.ID] = time.Now() // replaced by the commit's return below
				at.mu.Unlock()
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			commits[mode] = append(commits[mode], t1.Sub(t0))
			at.mu.Lock()
			if _, ok := at.committed[ev.ID]; ok {
				at.committed[ev.ID] = t1
			}
			at.mu.Unlock()
		}
		for deadline := time.Now().Add(30 * time.Second); delivered() < int64(n) && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		<-done
		at.mu.Lock()
		acks[mode] = append(acks[mode], at.lat...)
		at.mu.Unlock()
		_ = nb.DeleteTopic(ctx, topic)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pc := func(x []time.Duration, q float64) time.Duration {
		if len(x) == 0 {
			return 0
		}
		s := slices.Clone(x)
		slices.Sort(s)
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}
	out := fmt.Sprintf("at %d events/s (one event per transaction), %d rounds of %d s per mode:\n%-22s %8s %8s", rate, rounds, secs, "ms", "p50", "p99")
	for _, mode := range []string{"polling", "cdc"} {
		out += fmt.Sprintf("\n%-22s %8.2f %8.2f\n%-22s %8.2f %8.2f", mode+" commit", ms(pc(commits[mode], .5)), ms(pc(commits[mode], .99)),
			mode+" commit-to-ack", ms(pc(acks[mode], .5)), ms(pc(acks[mode], .99)))
		b.ReportMetric(ms(pc(commits[mode], .5)), mode+"-commit-p50-ms")
		b.ReportMetric(ms(pc(acks[mode], .5)), mode+"-ack-p50-ms")
		b.ReportMetric(ms(pc(acks[mode], .99)), mode+"-ack-p99-ms")
	}
	b.Log("\n" + out)
}
