package pgoutbox_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
)

// jsPublisher publishes to NATS JetStream with plain nats.go async publish
// (binary mode: data as the body, attributes as ce- headers), waiting for
// every ack. Both relays of the benchmark use it, so the ratio measures the
// relay alone.
type jsPublisher struct {
	js     jetstream.JetStream
	prefix string // subject prefix: topic -> prefix + "." + topic
	dedupe bool   // set Nats-Msg-Id (JetStream then drops re-published events)
}

func (p *jsPublisher) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	futs := make([]jetstream.PubAckFuture, len(events))
	for i, e := range events {
		m := nats.NewMsg(p.prefix + "." + topic)
		m.Header.Set("ce-id", e.ID)
		m.Header.Set("ce-type", e.Type)
		m.Header.Set("ce-source", e.Source)
		m.Header.Set("ce-subject", e.Subject)
		if p.dedupe {
			m.Header.Set("Nats-Msg-Id", e.ID)
		}
		m.Data = e.Data
		f, err := p.js.PublishMsgAsync(m)
		if err != nil {
			return adapterkit.FailAll(topic, events, err)
		}
		futs[i] = f
	}
	var pe *broker.PublishError
	for i, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if pe == nil {
				pe = &broker.PublishError{Topic: topic}
			}
			pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: events[i].ID, Err: err})
		case <-ctx.Done():
			return adapterkit.FailAll(topic, events, ctx.Err())
		}
	}
	if pe != nil {
		return pe
	}
	return nil
}

func newJS(b *testing.B) (*jsPublisher, func()) {
	nc, err := nats.Connect(testenv.NATS.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	name := strings.ToUpper(testenv.Name("OUTBOXBENCH"))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage,
		MaxMsgs: 300000, Discard: jetstream.DiscardOld, Duplicates: time.Minute,
	}); err != nil {
		b.Fatal(err)
	}
	return &jsPublisher{js: js, prefix: name, dedupe: true}, func() {
		_ = js.DeleteStream(context.Background(), name)
		nc.Close()
	}
}

// prefill writes n events of size bytes into the store's table with COPY.
func prefill(b *testing.B, pool *pgxpool.Pool, table string, n, size int) {
	ctx := context.Background()
	data := []byte(strings.Repeat("x", size))
	rows := make([][]any, n)
	for i := range rows {
		e := eventkit.New("bench.event", "application/octet-stream", data, eventkit.WithSubject(fmt.Sprint("s", i%100)))
		rows[i] = []any{"bench", e.ID, e.Type, e.Source, e.Subject, sqlutil.TimeText(e.Time), e.DataVersion, e.DataContentType, e.DataSchema, e.Data}
	}
	_, err := pool.CopyFrom(ctx, pgx.Identifier{table}, []string{"topic", "id", "type", "source", "subject", "event_time",
		"data_version", "data_content_type", "data_schema", "data"}, pgx.CopyFromRows(rows))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+table); err != nil {
		b.Fatal(err)
	}
}

// rawRelay is the baseline: a minimal relay written directly with pgx. Each
// round claims 1,000 rows with FOR UPDATE SKIP LOCKED, publishes them,
// deletes them and commits.
func rawRelay(ctx context.Context, pool *pgxpool.Pool, table string, pub broker.Publisher) (int, error) {
	total := 0
	for {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return total, err
		}
		rows, err := tx.Query(ctx, `SELECT seq, topic, id, type, source, subject, event_time, data_version, data_content_type, data_schema, data
FROM `+table+` ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED`)
		if err != nil {
			return total, err
		}
		var seqs []int64
		var events []eventkit.Event
		var topic string
		for rows.Next() {
			var seq int64
			var tm string
			var e eventkit.Event
			if err := rows.Scan(&seq, &topic, &e.ID, &e.Type, &e.Source, &e.Subject, &tm, &e.DataVersion, &e.DataContentType, &e.DataSchema, &e.Data); err != nil {
				return total, err
			}
			e.Time, _ = time.Parse(time.RFC3339Nano, tm)
			seqs = append(seqs, seq)
			events = append(events, e)
		}
		if err := rows.Err(); err != nil {
			return total, err
		}
		if len(events) == 0 {
			return total, tx.Rollback(ctx)
		}
		if err := pub.Publish(ctx, topic, events...); err != nil {
			return total, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE seq = ANY($1)`, seqs); err != nil {
			return total, err
		}
		if err := tx.Commit(ctx); err != nil {
			return total, err
		}
		total += len(events)
	}
}

// BenchmarkRelay drains an outbox pre-filled with 100,000 1 KB events into
// NATS JetStream with the eventkit relay, and, in the same run, with the raw
// pgx relay; it reports both rates and their ratio. Run:
//
//	go test -run '^$' -bench Relay -benchtime 1x ./outbox/pgoutbox
func BenchmarkRelay(b *testing.B) {
	const n, size = 100000, 1024
	pool := newPool(b)
	pub, done := newJS(b)
	defer done()
	b.Run("Drain", func(b *testing.B) {
		var ours, raw time.Duration
		for i := range b.N {
			// Alternate which relay goes first, so that neither always
			// meets a fresher stream or a warmer cache.
			if i%2 == 0 {
				ours += drainOurs(b, pool, pub, n, size)
				raw += drainRaw(b, pool, pub, n, size)
			} else {
				raw += drainRaw(b, pool, pub, n, size)
				ours += drainOurs(b, pool, pub, n, size)
			}
		}
		oursRate := float64(n*b.N) / ours.Seconds()
		rawRate := float64(n*b.N) / raw.Seconds()
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(oursRate, "events/s")
		b.ReportMetric(rawRate, "raw-events/s")
		b.ReportMetric(100*oursRate/rawRate, "%-of-raw")
	})
	b.Run("Latency", func(b *testing.B) { benchLatency(b, pool, pub) })
}

func drainOurs(b *testing.B, pool *pgxpool.Pool, pub broker.Publisher, n, size int) time.Duration {
	s := newStore(b, pool)
	b.StopTimer()
	prefill(b, pool, s.Table(), n, size)
	b.StartTimer()
	t0 := time.Now()
	relay := outbox.NewRelay(s, pub, outbox.RelayConfig{BatchSize: 1000, StatusInterval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- relay.Run(ctx) }()
	for relay.Stats().Delivered < int64(n) {
		time.Sleep(time.Millisecond)
	}
	d := time.Since(t0)
	cancel()
	if err := <-runDone; err != nil {
		b.Fatal(err)
	}
	return d
}

func drainRaw(b *testing.B, pool *pgxpool.Pool, pub broker.Publisher, n, size int) time.Duration {
	s := newStore(b, pool)
	b.StopTimer()
	prefill(b, pool, s.Table(), n, size)
	b.StartTimer()
	t0 := time.Now()
	got, err := rawRelay(context.Background(), pool, s.Table(), pub)
	if err != nil || got != n {
		b.Fatalf("raw relay: %d events, %v", got, err)
	}
	return time.Since(t0)
}

// benchLatency writes one event per transaction at a steady 1,000 events/s
// (10 writers at 100/s) for 5 s and measures commit-to-ack latency: from the
// return of Commit to the broker's ack of that event (the return of the
// relay's Publish call that carried it; 0 if the ack came first). It also
// reports the latency counted from just before Commit was called, which
// includes the commit itself.
func benchLatency(b *testing.B, pool *pgxpool.Pool, js *jsPublisher) { benchLatencyWith(b, pool, js) }

func benchLatencyWith(b *testing.B, pool *pgxpool.Pool, js broker.Publisher) {
	const rate, dur, writers = 1000, 5 * time.Second, 10
	// The writers get their own pool, big enough for all of them: sharing
	// the relay's pool (4 connections by default) makes the relay queue for
	// a connection behind the writers. Give the relay its own pool in
	// production too.
	pcfg, err := pgxpool.ParseConfig(testenv.Postgres.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	pcfg.MaxConns = writers + 2
	wpool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer wpool.Close()
	for range b.N {
		s := newStore(b, pool)
		var mu sync.Mutex
		before, after, acked := map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
		pub := publishFunc(func(ctx context.Context, topic string, events ...eventkit.Event) error {
			err := js.Publish(ctx, topic, events...)
			now := time.Now()
			mu.Lock()
			for _, e := range events {
				if _, ok := acked[e.ID]; !ok {
					acked[e.ID] = now
				}
			}
			mu.Unlock()
			return err
		})
		relay := outbox.NewRelay(s, pub, outbox.RelayConfig{StatusInterval: -1})
		ctx, cancel := context.WithCancel(context.Background())
		runDone := make(chan error, 1)
		go func() { runDone <- relay.Run(ctx) }()
		for !relay.IsLeader() {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		total := int(dur.Seconds()*rate) / writers * writers
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(time.Second * writers / rate)
				defer tick.Stop()
				for i := 0; i < total/writers; i++ {
					<-tick.C
					e := eventkit.New("bench.event", "application/json", []byte(`{"n":1}`), eventkit.WithSubject(fmt.Sprint("s", w)))
					tx, err := wpool.Begin(ctx)
					if err != nil {
						errs <- err
						return
					}
					if err := s.Add(ctx, tx, "latency", e); err != nil {
						errs <- err
						return
					}
					t0 := time.Now()
					if err := tx.Commit(ctx); err != nil {
						errs <- err
						return
					}
					t1 := time.Now()
					mu.Lock()
					before[e.ID], after[e.ID] = t0, t1
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		for relay.Stats().Delivered < int64(total) {
			time.Sleep(time.Millisecond)
		}
		cancel()
		if err := <-runDone; err != nil {
			b.Fatal(err)
		}
		var lat, latBefore []time.Duration
		for id, t1 := range after {
			lat = append(lat, max(acked[id].Sub(t1), 0))
			latBefore = append(latBefore, acked[id].Sub(before[id]))
		}
		slices.Sort(lat)
		slices.Sort(latBefore)
		pct := func(l []time.Duration, p int) float64 { return float64(l[len(l)*p/100].Microseconds()) / 1000 }
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
		b.ReportMetric(pct(lat, 50), "p50-ms")
		b.ReportMetric(pct(lat, 99), "p99-ms")
		b.ReportMetric(pct(latBefore, 50), "p50-incl-commit-ms")
		b.ReportMetric(pct(latBefore, 99), "p99-incl-commit-ms")
	}
}

type publishFunc func(ctx context.Context, topic string, events ...eventkit.Event) error

func (f publishFunc) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	return f(ctx, topic, events...)
}
