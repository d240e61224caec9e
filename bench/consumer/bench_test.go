// Package consumerbench compares the eventkit consumer runtime with
// Watermill's router, in the same `go test -bench` run, so that the ratios
// hold on a noisy machine. It is a separate module so that the main module
// never depends on Watermill.
//
//	cd bench/consumer && go test -run '^$' -bench . -count 3
//
// Every benchmark publishes b.N 1 KB events before it times anything, then
// lets each contender consume all b.N of them, one contender after the other,
// timing each from its start to its last event handled. See README.md.
package consumerbench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	natsbroker "github.com/eventkit/eventkit/broker/nats"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/lruinbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

const (
	// concurrency is the number of workers (eventkit) or subscriber
	// goroutines (Watermill NATS) of every contender that has the choice.
	concurrency = 8
	// inFlight bounds the unacked messages of every NATS contender.
	inFlight = 256
	// pubBatch is the publish call size used to fill the streams and tables.
	pubBatch = 500
	// timeout bounds the consumption of one contender.
	timeout = 5 * time.Minute
)

func natsURL() string {
	if u := os.Getenv("EVENTKIT_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

func pgURL() string {
	if u := os.Getenv("EVENTKIT_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// name returns a unique lower-case name (a valid stream, subject and SQL
// identifier).
func name(prefix string) string {
	var x [6]byte
	_, _ = rand.Read(x[:])
	return prefix + "_" + hex.EncodeToString(x[:])
}

var payload = func() []byte {
	p := make([]byte, 1024)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}()

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// ---- eventkit ----

func ekBroker(b *testing.B) *natsbroker.Broker {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := natsbroker.Connect(ctx, natsURL(), natsbroker.Options{Name: "eventkit-consumer-bench"})
	if err != nil {
		b.Skipf("no NATS at %s: %v", natsURL(), err)
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	return br
}

// ekTopic returns a new topic holding n 1 KB events, deleted at the end.
// Every consumer group reads all of them (the stream retains by limits).
func ekTopic(b *testing.B, br *natsbroker.Broker, n int) string {
	b.Helper()
	ctx := context.Background()
	topic := name("ekcons")
	b.Cleanup(func() {
		_ = br.DeleteTopic(context.Background(), topic)
		_ = br.DeleteTopic(context.Background(), topic+".dlq")
	})
	evs := make([]eventkit.Event, 0, pubBatch)
	for i := range n {
		evs = append(evs, eventkit.New("bench.event", "application/octet-stream", payload, eventkit.WithSubject(fmt.Sprint("s", i%256))))
		if len(evs) == pubBatch || i == n-1 {
			if err := br.Publish(ctx, topic, evs...); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	return topic
}

// rawConsume consumes n messages of topic's stream with the raw nats.go
// jetstream pull consumer, acking each explicitly, and returns the time taken.
func rawConsume(b *testing.B, br *natsbroker.Broker, topic string, n int) time.Duration {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	cons, err := br.JetStream().CreateOrUpdateConsumer(ctx, br.StreamName(topic), jetstream.ConsumerConfig{
		Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: inFlight})
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan time.Time, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if got.Add(1) == int64(n) {
			done <- time.Now()
		}
	}, jetstream.PullMaxMessages(inFlight))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	select {
	case end := <-done:
		return end.Sub(start)
	case <-time.After(timeout):
		b.Fatalf("raw: consumed %d of %d", got.Load(), n)
	}
	return 0
}

// ekConsume runs the eventkit runtime with cfg as group on topic until it
// has handled (and acked) n events, and returns the time taken.
func ekConsume(b *testing.B, br *natsbroker.Broker, topic, group string, n int, cfg consumer.Config, work func(ctx context.Context, ev eventkit.Event) error) time.Duration {
	b.Helper()
	cfg.Logger = quiet
	cfg.Concurrency = concurrency
	cfg.MaxInFlight = inFlight
	c, err := consumer.New(br, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.HandleFunc(topic, group, func(ctx context.Context, ev eventkit.Event) error {
		if work != nil {
			return work(ctx, ev)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	start := time.Now()
	go func() { runDone <- c.Run(ctx) }()
	deadline := start.Add(timeout)
	var last uint64
	lastT := start
	for c.Stats().Handled < uint64(n) { // the last ack
		if h := c.Stats().Handled; h != last {
			last, lastT = h, time.Now()
		} else if stall := time.Since(lastT); stall > time.Second && os.Getenv("BENCH_DEBUG") != "" {
			b.Logf("eventkit %s: no progress for %v at %d of %d: %+v", group, stall, h, n, c.Stats())
			lastT = time.Now()
		}
		if time.Now().After(deadline) {
			cancel()
			b.Fatalf("eventkit %s: handled %d of %d (%+v)", group, c.Stats().Handled, n, c.Stats())
		}
		select {
		case err := <-runDone:
			b.Fatalf("eventkit %s: Run returned early: %v", group, err)
		default:
		}
		time.Sleep(time.Millisecond)
	}
	d := time.Since(start)
	cancel()
	if err := <-runDone; err != nil {
		b.Fatal(err)
	}
	if s := c.Stats(); s.Failed+s.Retried+s.DeadLettered+s.Duplicates != 0 {
		b.Errorf("eventkit %s: unexpected stats %+v", group, s)
	}
	return d
}

// ---- Watermill over NATS ----

func wmNATSTopic(b *testing.B, n int) (jetstream.JetStream, string) {
	b.Helper()
	nc, err := nats.Connect(natsURL())
	if err != nil {
		b.Skipf("no NATS at %s: %v", natsURL(), err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	topic := name("wmcons")
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: topic, Subjects: []string{topic}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = js.DeleteStream(context.Background(), topic) })
	pub, err := wnats.NewPublisher(wnats.PublisherConfig{
		URL:       natsURL(),
		Marshaler: &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{TrackMsgId: true},
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	for i := 0; i < n; i += pubBatch {
		msgs := make([]*message.Message, 0, pubBatch)
		for range min(pubBatch, n-i) {
			msgs = append(msgs, message.NewMessage(watermill.NewUUID(), payload))
		}
		if err := pub.Publish(topic, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	return js, topic
}

// wmRouterConsume runs a Watermill router over a watermill-nats JetStream
// subscriber (concurrency subscriber goroutines sharing one durable queue
// group, explicit async acks, at most inFlight unacked) with middlewares,
// until its handler has seen n messages, and returns the time taken.
func wmRouterConsume(b *testing.B, js jetstream.JetStream, topic string, n int, mw ...message.HandlerMiddleware) time.Duration {
	b.Helper()
	start := time.Now()
	sub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
		URL:              natsURL(),
		QueueGroupPrefix: "wm",
		SubscribersCount: concurrency,
		AckWaitTimeout:   30 * time.Second,
		CloseTimeout:     5 * time.Second,
		Unmarshaler:      &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{
			SubscribeOptions: []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit(), nats.MaxAckPending(inFlight)},
			DurablePrefix:    "wm",
			AckAsync:         true,
		},
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	settled := func() bool { // every message acked
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		ok := false
		for info := range st.ListConsumers(ctx).Info() {
			ok = info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream >= uint64(n)
		}
		return ok
	}
	return runRouter(b, "watermill-nats", topic, sub, start, n, settled, nil, mw...)
}

// runRouter runs a router with one consumer handler on sub until the handler
// has returned nil for n messages (each is acked by the router right after).
// The time is measured from start (before the subscriber was created) to
// when settled, polled after the last handler call, reports true (the last
// ack or commit done).
func runRouter(b *testing.B, what, topic string, sub message.Subscriber, start time.Time, n int, settled func() bool, work func(*message.Message) error, mw ...message.HandlerMiddleware) time.Duration {
	b.Helper()
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	r.AddMiddleware(mw...)
	var got atomic.Int64
	done := make(chan time.Time, 1)
	var workErr atomic.Value
	r.AddConsumerHandler("bench", topic, sub, func(m *message.Message) error {
		if work != nil {
			if err := work(m); err != nil {
				workErr.Store(err)
				return err
			}
		}
		if got.Add(1) == int64(n) {
			done <- time.Now()
		}
		return nil
	})
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(context.Background()) }()
	defer func() {
		_ = r.Close()
		<-runDone
	}()
	select {
	case <-done:
		for deadline := time.Now().Add(timeout); !settled(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%s: handled %d of %d but not settled", what, got.Load(), n)
			}
		}
		return time.Since(start)
	case err := <-runDone:
		b.Fatalf("%s: router stopped after %d of %d: %v", what, got.Load(), n, err)
	case <-time.After(timeout):
		b.Fatalf("%s: consumed %d of %d (last handler error: %v)", what, got.Load(), n, workErr.Load())
	}
	return 0
}

// ---- Postgres ----

func pgDB(b *testing.B) *sql.DB {
	b.Helper()
	db, err := sql.Open("pgx", pgURL())
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(4 * concurrency)
	db.SetMaxIdleConns(4 * concurrency)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		b.Skipf("no Postgres at %s: %v", pgURL(), err)
	}
	b.Cleanup(func() { _ = db.Close() })
	// Open the pool's connections now, so that no contender pays for them.
	conns := make([]*sql.Conn, 0, 4*concurrency)
	for range 4 * concurrency {
		c, err := db.Conn(ctx)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		_ = c.Close()
	}
	return db
}

// counterTable creates a counter table (id, n) dropped at the end, and
// returns its name and the UPSERT that bumps one counter ($1 = id).
func counterTable(b *testing.B, db *sql.DB) (table, upsert string) {
	b.Helper()
	table = name("bench_counter")
	if _, err := db.Exec("CREATE TABLE " + table + " (id TEXT PRIMARY KEY, n BIGINT NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = db.Exec("DROP TABLE IF EXISTS " + table) })
	return table, "INSERT INTO " + table + " (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = " + table + ".n + 1"
}

// checkCounters fails unless table holds n counters that are all 1: every
// event's business write happened, exactly once.
func checkCounters(b *testing.B, db *sql.DB, what, table string, n int) {
	b.Helper()
	var rows, sum, maxN int64
	if err := db.QueryRow("SELECT count(*), coalesce(sum(n), 0), coalesce(max(n), 0) FROM "+table).Scan(&rows, &sum, &maxN); err != nil {
		b.Fatal(err)
	}
	if rows != int64(n) || sum != int64(n) || maxN > 1 {
		b.Errorf("%s: %d counters, sum %d, max %d; want %d counters all 1", what, rows, sum, maxN, n)
	}
}

func ekSQLInbox(b *testing.B, db *sql.DB) *sqlinbox.Inbox {
	b.Helper()
	table := name("bench_inbox")
	in, err := sqlinbox.New(db, sqlinbox.Postgres, sqlinbox.Options{Table: table})
	if err != nil {
		b.Fatal(err)
	}
	if err := in.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = db.Exec("DROP TABLE IF EXISTS " + table) })
	return in
}

// wmSchema is watermill-sql's Postgres schema adapter, reading batch rows
// per SELECT. The subscriber handles the rows of one SELECT in one
// transaction (committed after the last of them is acked), so batch is also
// the number of messages per commit: 100 is watermill-sql's default, 1 is
// one transaction per message.
func wmSchema(batch int) wsql.DefaultPostgreSQLSchema {
	return wsql.DefaultPostgreSQLSchema{
		GeneratePayloadType: func(string) string { return "BYTEA" }, // the payload is not JSON
		SubscribeBatchSize:  batch,
	}
}

// wmSQLTopic creates a watermill-sql topic (messages table) holding n 1 KB
// messages; its tables are dropped at the end.
func wmSQLTopic(b *testing.B, db *sql.DB, n int) string {
	b.Helper()
	topic := name("wmsql")
	b.Cleanup(func() {
		_, _ = db.Exec(`DROP TABLE IF EXISTS "watermill_offsets_` + topic + `"`)
		_, _ = db.Exec(`DROP TABLE IF EXISTS "watermill_` + topic + `"`)
	})
	pub, err := wsql.NewPublisher(wsql.BeginnerFromStdSQL(db), wsql.PublisherConfig{
		SchemaAdapter: wmSchema(1), AutoInitializeSchema: true}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	for i := 0; i < n; i += pubBatch {
		msgs := make([]*message.Message, 0, pubBatch)
		for range min(pubBatch, n-i) {
			msgs = append(msgs, message.NewMessage(watermill.NewUUID(), payload))
		}
		if err := pub.Publish(topic, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	return topic
}

// wmSQLConsume runs a router over a watermill-sql subscriber (Postgres
// schema, offsets adapter) whose handler does the UPSERT in the
// subscriber's transaction (wsql.TxFromContext), until n messages are
// handled; it returns the time taken.
func wmSQLConsume(b *testing.B, db *sql.DB, topic, table, upsert string, n, batch int) time.Duration {
	b.Helper()
	start := time.Now()
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(db), wsql.SubscriberConfig{
		ConsumerGroup:    fmt.Sprint("bench", batch),
		SchemaAdapter:    wmSchema(batch),
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
		PollInterval:     10 * time.Millisecond,
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	settled := func() bool { // every handler transaction committed
		var rows int64
		if err := db.QueryRow("SELECT count(*) FROM " + table).Scan(&rows); err != nil {
			b.Fatal(err)
		}
		return rows == int64(n)
	}
	return runRouter(b, "watermill-sql", topic, sub, start, n, settled, func(m *message.Message) error {
		tx, ok := wsql.TxFromContext(m.Context())
		if !ok {
			return errors.New("watermill-sql gave the handler no transaction")
		}
		_, err := tx.ExecContext(m.Context(), upsert, m.UUID)
		return err
	})
}

// ---- benchmarks ----

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// runs counts the calls of each benchmark; every other call runs the
// contenders in reverse order, so that not always the same one goes first.
var runs sync.Map // benchmark name -> *atomic.Int64

// inTurn runs fns in order, or in reverse order on every other call of b's
// benchmark.
func inTurn(b *testing.B, fns ...func()) {
	v, _ := runs.LoadOrStore(b.Name(), new(atomic.Int64))
	if v.(*atomic.Int64).Add(1)%2 == 0 {
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
		return
	}
	for _, fn := range fns {
		fn()
	}
}

// eoPerOp is the number of events per benchmark op in BenchmarkExactlyOnce:
// one op takes seconds, so b.N stays 1 with the default -benchtime, and the
// contenders' start-up costs must not dominate.
const eoPerOp = 1000

// BenchmarkNoInbox: the raw nats.go pull consumer with explicit acks (the
// baseline) against the eventkit runtime (concurrency 8, no inbox) over the
// eventkit NATS adapter, on the same stream.
func BenchmarkNoInbox(b *testing.B) {
	br := ekBroker(b)
	b.StopTimer()
	topic := ekTopic(b, br, b.N)
	b.StartTimer()
	var dRaw, dEK time.Duration
	inTurn(b,
		func() { dRaw = rawConsume(b, br, topic, b.N) },
		func() { dEK = ekConsume(b, br, topic, "ek", b.N, consumer.Config{}, nil) },
	)
	b.StopTimer()
	b.ReportMetric(rate(b.N, dRaw), "raw-events/s")
	b.ReportMetric(rate(b.N, dEK), "eventkit-events/s")
	b.ReportMetric(dRaw.Seconds()/dEK.Seconds(), "eventkit/raw")
}

// BenchmarkInProcessDedupe: Watermill's router over watermill-nats with its
// Deduplicator middleware (in-memory expiring key repository, keyed by
// message UUID) against the eventkit runtime with the in-process LRU inbox
// (keyed by group and event id), concurrency 8 each.
func BenchmarkInProcessDedupe(b *testing.B) {
	br := ekBroker(b)
	b.StopTimer()
	topic := ekTopic(b, br, b.N)
	js, wmTopic := wmNATSTopic(b, b.N)
	repo, err := middleware.NewMapExpiringKeyRepository(time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	dedup := &middleware.Deduplicator{
		KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil },
		Repository: repo,
	}
	b.StartTimer()
	var dWM, dEK time.Duration
	inTurn(b,
		func() { dWM = wmRouterConsume(b, js, wmTopic, b.N, dedup.Middleware) },
		func() {
			dEK = ekConsume(b, br, topic, "eklru", b.N, consumer.Config{Inbox: lruinbox.New(lruinbox.Options{TTL: time.Hour})}, nil)
		},
	)
	b.StopTimer()
	b.ReportMetric(rate(b.N, dWM), "watermill-events/s")
	b.ReportMetric(rate(b.N, dEK), "eventkit-events/s")
	b.ReportMetric(dWM.Seconds()/dEK.Seconds(), "eventkit/watermill")
}

// BenchmarkExactlyOnce: the eventkit runtime (concurrency 8) over NATS with
// the Postgres SQL inbox and an UPSERT into a counter table in the inbox
// transaction, one transaction per event and in batches of 64 (InboxBatch),
// against Watermill's SQL subscriber consuming from its Postgres table with
// the same UPSERT in the subscriber's transaction (watermill-sql's default
// of 100 messages per SELECT and transaction, and 1). After each, every
// counter must be exactly 1. One op is eoPerOp events.
func BenchmarkExactlyOnce(b *testing.B) {
	br := ekBroker(b)
	db := pgDB(b)
	n := b.N * eoPerOp
	b.StopTimer()
	topic := ekTopic(b, br, n)
	wmTopic := wmSQLTopic(b, db, n)
	tEK, upEK := counterTable(b, db)
	tEK64, upEK64 := counterTable(b, db)
	tWM, upWM := counterTable(b, db)
	tWM1, upWM1 := counterTable(b, db)
	inEK, inEK64 := ekSQLInbox(b, db), ekSQLInbox(b, db)
	bump := func(upsert string) func(ctx context.Context, ev eventkit.Event) error {
		return func(ctx context.Context, ev eventkit.Event) error {
			tx, err := sqlinbox.Tx(ctx)
			if err == nil {
				_, err = tx.ExecContext(ctx, upsert, ev.ID)
			}
			return err
		}
	}
	b.StartTimer()
	var dEK, dEK64, dWM, dWM1 time.Duration
	inTurn(b,
		func() { dEK = ekConsume(b, br, topic, "eksql", n, consumer.Config{Inbox: inEK}, bump(upEK)) },
		func() {
			dEK64 = ekConsume(b, br, topic, "eksql64", n, consumer.Config{Inbox: inEK64, InboxBatch: 64}, bump(upEK64))
		},
		func() { dWM = wmSQLConsume(b, db, wmTopic, tWM, upWM, n, 100) },
		func() { dWM1 = wmSQLConsume(b, db, wmTopic, tWM1, upWM1, n, 1) },
	)
	b.StopTimer()
	checkCounters(b, db, "eventkit sqlinbox", tEK, n)
	checkCounters(b, db, "eventkit sqlinbox batch 64", tEK64, n)
	checkCounters(b, db, "watermill-sql", tWM, n)
	checkCounters(b, db, "watermill-sql batch 1", tWM1, n)
	b.ReportMetric(rate(n, dWM), "watermill-sql-events/s")
	b.ReportMetric(rate(n, dEK), "eventkit-events/s")
	b.ReportMetric(rate(n, dEK64), "eventkit-batch64-events/s")
	b.ReportMetric(dWM.Seconds()/dEK.Seconds(), "eventkit/watermill")
	b.ReportMetric(dWM.Seconds()/dEK64.Seconds(), "eventkit-batch64/watermill")
	b.ReportMetric(rate(n, dWM1), "watermill-sql-batch1-events/s")
	b.ReportMetric(dWM1.Seconds()/dEK.Seconds(), "eventkit/watermill-batch1")
}
