// Package outboxbench compares eventkit's transactional outbox relay
// (outbox/pgoutbox store + outbox.NewRelay + the broker/natsbroker adapter) with a
// minimal raw relay written directly with pgx and nats.go, and with
// Watermill's outbox path (watermill-sql v4 publisher in transactions + the
// watermill forwarder component draining to a watermill-nats JetStream
// publisher), all from PostgreSQL to NATS JetStream, with 1 KB events, in
// the same run. It is a separate module so that the main module never
// depends on Watermill.
//
//	cd bench/outbox && go test -run '^$' -bench . -benchtime 1x
package outboxbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const (
	relayEvents = 20000 // events per drain of BenchmarkRelay
	txSize      = 1000  // events per writing transaction
	claim       = 1000  // events per relay round (eventkit BatchSize, raw LIMIT)
	evBytes     = 1024
)

var payload = func() []byte {
	p := make([]byte, evBytes)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}()

type env struct {
	pool           *pgxpool.Pool
	nc             *nats.Conn
	js             jetstream.JetStream
	pgURL, natsURL string
}

func newEnv(b *testing.B) *env {
	pgURL, natsURL := testenv.Postgres.URL(b), testenv.NATS.URL(b)
	pool, err := pgxpool.New(context.Background(), pgURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	benchtest.PostgresDurability(func(name string) (v string, err error) {
		err = pool.QueryRow(context.Background(), "SHOW "+name).Scan(&v)
		return v, err
	})
	nc, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	return &env{pool: pool, nc: nc, js: js, pgURL: pgURL, natsURL: natsURL}
}

// newStore creates a migrated eventkit outbox table, dropped afterwards.
func (e *env) newStore(b *testing.B) *pgoutbox.Store {
	table := testenv.Name("obench")
	s, err := pgoutbox.New(e.pool, pgoutbox.Config{Table: table})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = e.pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table+`, `+table+`_migrations, `+table+`_leases, `+table+`_relays, `+table+`_subject_seq CASCADE; DROP FUNCTION IF EXISTS `+table+`_notify() CASCADE`)
	})
	return s
}

// fill writes n events into s with Store.Add, txSize per transaction, as an
// application would.
func (e *env) fill(b *testing.B, s *pgoutbox.Store, topic string, n int) {
	ctx := context.Background()
	for i := 0; i < n; i += txSize {
		evs := make([]eventkit.Event, min(txSize, n-i))
		for j := range evs {
			evs[j] = eventkit.New("bench.event", "application/octet-stream", payload, eventkit.WithSubject(fmt.Sprint("s", j%100)))
		}
		if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return s.Add(ctx, tx, topic, evs...) }); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := e.pool.Exec(ctx, "VACUUM ANALYZE "+s.Table()); err != nil {
		b.Fatal(err)
	}
}

// drainEventkit: outbox.NewRelay over the postgres store, publishing with
// the eventkit NATS adapter (Connect with default options, stream created
// on first publish with dedupe by event id).
func (e *env) drainEventkit(b *testing.B, clock *benchkit.Clock, n int) {
	e.drainRelay(b, clock, n, false)
}

// drainPipelined is drainEventkit with RelayConfig.PipelineSubjects: the
// raw relay's publishing (every event of a batch in flight at once, no
// order kept on partial failure), to show what the order guarantee costs.
func (e *env) drainPipelined(b *testing.B, clock *benchkit.Clock, n int) {
	e.drainRelay(b, clock, n, true)
}

func (e *env) drainRelay(b *testing.B, clock *benchkit.Clock, n int, pipeline bool) {
	ctx := context.Background()
	s := e.newStore(b)
	topic := testenv.Name("ekob")
	e.fill(b, s, topic, n)
	br, err := natsbroker.Connect(ctx, e.natsURL, natsbroker.Options{StreamPrefix: "OBENCH_", PublishWindow: claim})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = br.DeleteTopic(context.Background(), topic)
		_ = br.Close(context.Background())
	}()
	clock.Start()
	relay := outbox.NewRelay(s, br, outbox.RelayConfig{BatchSize: claim, StatusInterval: -1, Logger: quiet, PipelineSubjects: pipeline})
	rctx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- relay.Run(rctx) }()
	deadline := time.Now().Add(2 * time.Minute)
	for relay.Stats().Delivered < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("eventkit relay: %d of %d delivered", relay.Stats().Delivered, n)
		}
		time.Sleep(time.Millisecond)
	}
	clock.Stop()
	cancel()
	if err := <-runDone; err != nil {
		b.Fatal(err)
	}
	e.checkStream(b, br.StreamName(topic), uint64(n))
}

// drainRaw: a minimal relay with pgx + nats.go on the same table layout:
// claim 1,000 rows FOR UPDATE SKIP LOCKED, PublishMsgAsync each (binary
// mode: the same ce- headers and Nats-Msg-Id = id as the adapter, all 1,000
// in flight at once), wait for all acks, DELETE, COMMIT.
func (e *env) drainRaw(b *testing.B, clock *benchkit.Clock, n int) {
	ctx := context.Background()
	s := e.newStore(b)
	topic := testenv.Name("rawob")
	e.fill(b, s, topic, n)
	stream := strings.ToUpper(testenv.Name("OBENCH_RAW"))
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{stream + ".>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = e.js.DeleteStream(context.Background(), stream) }()
	clock.Start()
	got, err := rawRelay(ctx, e.pool, e.js, s.Table(), stream)
	if err != nil || got != n {
		b.Fatalf("raw relay: %d events, %v", got, err)
	}
	clock.Stop()
	e.checkStream(b, stream, uint64(n))
}

func rawRelay(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, table, stream string) (int, error) {
	total := 0
	for {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return total, err
		}
		rows, err := tx.Query(ctx, `SELECT seq, id, type, source, subject, event_time, data_version, data_content_type, data_schema, data FROM `+table+
			` ORDER BY seq LIMIT `+fmt.Sprint(claim)+` FOR UPDATE SKIP LOCKED`)
		if err != nil {
			_ = tx.Rollback(ctx)
			return total, err
		}
		var seqs []int64
		var futs []jetstream.PubAckFuture
		for rows.Next() {
			var seq int64
			var id, typ, source, subject, tm, dv, ct, ds string
			var data []byte
			if err := rows.Scan(&seq, &id, &typ, &source, &subject, &tm, &dv, &ct, &ds, &data); err != nil {
				rows.Close()
				_ = tx.Rollback(ctx)
				return total, err
			}
			m := nats.NewMsg(stream + "." + typ)
			// The same headers the adapter writes (binary CloudEvents),
			// optional ones only when set; the stored time text is used
			// as it is.
			h := m.Header
			h["ce-specversion"] = []string{"1.0"}
			h["ce-id"] = []string{id}
			h["ce-source"] = []string{source}
			h["ce-type"] = []string{typ}
			h["ce-time"] = []string{tm}
			for _, kv := range [][2]string{{"ce-subject", subject}, {"ce-dataversion", dv}, {"ce-dataschema", ds}, {"content-type", ct}} {
				if kv[1] != "" {
					h[kv[0]] = []string{kv[1]}
				}
			}
			h["Nats-Msg-Id"] = []string{id}
			m.Data = data
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				rows.Close()
				_ = tx.Rollback(ctx)
				return total, err
			}
			seqs = append(seqs, seq)
			futs = append(futs, f)
		}
		if err := rows.Err(); err != nil {
			_ = tx.Rollback(ctx)
			return total, err
		}
		if len(seqs) == 0 {
			return total, tx.Rollback(ctx)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				_ = tx.Rollback(ctx)
				return total, err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE seq = ANY($1)`, seqs); err != nil {
			_ = tx.Rollback(ctx)
			return total, err
		}
		if err := tx.Commit(ctx); err != nil {
			return total, err
		}
		total += len(seqs)
	}
}

// drainWatermill: watermill-sql v4 Publisher (DefaultPostgreSQLSchema,
// pgx adapter) wrapped in forwarder.Publisher writes n messages in
// transactions of txSize; then forwarder.Forwarder, subscribing with a
// watermill-sql Subscriber (DefaultPostgreSQLOffsetsAdapter) and publishing
// with a watermill-nats v2 JetStream Publisher, drains them. Changed from
// the defaults: ForwarderTopic (unique per run so the tables are unique),
// InitializeSchema on the subscriber (the publisher may not create tables
// inside a transaction), TrackMsgId on the NATS publisher (dedupe by id,
// as eventkit and raw do), and the logger (NopLogger).
func (e *env) drainWatermill(b *testing.B, clock *benchkit.Clock, n int) {
	ctx := context.Background()
	logger := watermill.NopLogger{}
	fwdTopic := testenv.Name("wmob")
	dest := strings.ToUpper(testenv.Name("OBENCH_WM"))
	schema := wsql.DefaultPostgreSQLSchema{}
	offsets := wsql.DefaultPostgreSQLOffsetsAdapter{}
	defer func() {
		_, _ = e.pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+schema.MessagesTable(fwdTopic)+`; DROP TABLE IF EXISTS `+offsets.MessagesOffsetsTable(fwdTopic))
	}()
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(e.pool), wsql.SubscriberConfig{
		SchemaAdapter: schema, OffsetsAdapter: offsets, InitializeSchema: true,
	}, logger)
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.SubscribeInitialize(fwdTopic); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += txSize {
		msgs := make([]*message.Message, min(txSize, n-i))
		for j := range msgs {
			msgs[j] = message.NewMessage(watermill.NewUUID(), payload)
		}
		err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
			p, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: schema}, logger)
			if err != nil {
				return err
			}
			return forwarder.NewPublisher(p, forwarder.PublisherConfig{ForwarderTopic: fwdTopic}).Publish(dest, msgs...)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, err := e.pool.Exec(ctx, "VACUUM ANALYZE "+schema.MessagesTable(fwdTopic)); err != nil {
		b.Fatal(err)
	}
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: dest, Subjects: []string{dest}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = e.js.DeleteStream(context.Background(), dest) }()
	pub, err := wnats.NewPublisher(wnats.PublisherConfig{
		URL:       e.natsURL,
		Marshaler: &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{TrackMsgId: true},
	}, logger)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	fwd, err := forwarder.NewForwarder(sub, pub, logger, forwarder.Config{ForwarderTopic: fwdTopic, CloseTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	clock.Start()
	runDone := make(chan error, 1)
	go func() { runDone <- fwd.Run(ctx) }()
	deadline := time.Now().Add(2 * time.Minute)
	for e.streamMsgs(b, dest) < uint64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("watermill forwarder: %d of %d in stream", e.streamMsgs(b, dest), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	clock.Stop()
	if err := fwd.Close(); err != nil {
		b.Fatal(err)
	}
	if err := <-runDone; err != nil {
		b.Fatal(err)
	}
	_ = sub.Close()
	e.checkStream(b, dest, uint64(n))
}

func (e *env) streamMsgs(b *testing.B, name string) uint64 {
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		b.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func (e *env) checkStream(b *testing.B, name string, want uint64) {
	if got := e.streamMsgs(b, name); got != want {
		b.Fatalf("stream %s holds %d messages, want %d", name, got, want)
	}
}

// BenchmarkRelay drains a pre-filled outbox of 20,000 events into
// JetStream with the raw pgx + nats.go relay (the baseline), eventkit's
// polling relay (default, and with PipelineSubjects) and Watermill's
// forwarder, one at a time, alternated over
// rounds, each from a fresh table filled the same way (outside the clock).
func BenchmarkRelay(b *testing.B) {
	e := newEnv(b)
	n := benchtest.Events(relayEvents)
	c := func(name string, drain func(*testing.B, *benchkit.Clock, int)) benchkit.Contender {
		return benchkit.Contender{Name: name, Run: func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			drain(b, clock, n)
			return n, nil, nil
		}}
	}
	meter := benchkit.NewMeter(e.natsURL, e.pgURL)
	rep := benchtest.Compare(b, meter,
		c("raw", e.drainRaw), c("eventkit", e.drainEventkit), c("eventkit-pipelined", e.drainPipelined), c("watermill", e.drainWatermill))
	printTargets(b, rep, meter)
}

// printTargets prints the targets from one report: eventkit's
// events/s against raw's (>= 0.95) and Watermill's (>= 12x) in the same
// rounds, and each metered server's CPU per event (PostgreSQL's at most
// 1.2x raw's).
func printTargets(b *testing.B, rep benchkit.Report, meter *benchkit.Meter) {
	if r, cpu, ok := rep.PairRatio("eventkit", "raw"); ok {
		fmt.Printf("eventkit/raw %.2f ev/s (CPU/ev %.2f), target >= 0.95\n", r, cpu)
	}
	if r, cpu, ok := rep.PairRatio("eventkit-pipelined", "raw"); ok {
		fmt.Printf("eventkit-pipelined/raw %.2f ev/s (CPU/ev %.2f): the same publishing as raw, no order kept on partial failure\n", r, cpu)
	}
	if r, cpu, ok := rep.PairRatio("eventkit", "watermill"); ok {
		fmt.Printf("eventkit/watermill %.1f ev/s (CPU/ev %.2f), target >= 12\n", r, cpu)
		b.ReportMetric(r, "eventkit/watermill")
	}
	for i, s := range meter.Servers {
		fmt.Printf("%s CPU µs/event (medians):", s.Name)
		var ek, raw float64
		for _, c := range rep.Summary {
			v := rep.ServerPerEventOf(c.Contender, i)
			fmt.Printf(" %s %.1f", c.Contender, v)
			switch c.Contender {
			case "eventkit":
				ek = v
			case "raw":
				raw = v
			}
		}
		if ek > 0 && raw > 0 {
			fmt.Printf("; eventkit/raw %.2f", ek/raw)
			b.ReportMetric(ek/raw, "eventkit/raw-"+s.Name+"-cpu/ev")
		}
		fmt.Println()
	}
}
