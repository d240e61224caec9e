// Package consumerbench compares the eventkit consumer runtime with
// Watermill's router, in the same `go test -bench` run, so that the ratios
// hold on a noisy machine. It is a separate module so that the main module
// never depends on Watermill.
//
//	cd bench/consumer && go test -run '^$' -bench . -benchtime 1x
//
// Every benchmark fills a stream (and, for watermill-sql, a table) with a
// fixed number of 1 KB events before it times anything, then runs its
// contenders one at a time, alternated over rounds (internal/benchkit),
// each consuming all of them as a fresh group from the same state, timed
// and CPU-metered from its start to its last event settled. See README.md.
package consumerbench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
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
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/lruinbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/testenv"
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

var (
	natsURL = testenv.NATS.Lookup
	pgURL   = testenv.Postgres.Lookup
	// name returns a unique lower-case name (a valid stream, subject and
	// SQL identifier, for the lower-case prefixes used here).
	name    = testenv.Name
	payload = benchkit.Payload(1024)
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// ---- eventkit ----

func ekBroker(b *testing.B) *natsbroker.Broker {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := natsbroker.Connect(ctx, natsURL(), natsbroker.Options{Name: "eventkit-consumer-bench"})
	if err != nil {
		testenv.Unavailable(b, fmt.Sprintf("no NATS at %s: %v", natsURL(), err))
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	return br
}

// ekTopic returns a new topic holding n 1 KB events over 256 subjects,
// deleted at the end; with seq each carries its subjectseq extension (for
// the strict contenders; without it the events are those the README's
// NoInbox figures were measured with).
// Every consumer group reads all of them (the stream retains by limits).
func ekTopic(b *testing.B, br *natsbroker.Broker, n int, seq bool) string {
	b.Helper()
	ctx := context.Background()
	topic := name("ekcons")
	b.Cleanup(func() {
		_ = br.DeleteTopic(context.Background(), topic)
		_ = br.DeleteTopic(context.Background(), topic+".dlq")
	})
	evs := make([]eventkit.Event, 0, pubBatch)
	for i := range n {
		opts := []eventkit.Option{eventkit.WithSubject(fmt.Sprint("s", i%256))}
		if seq { // for the strict contenders
			opts = append(opts, eventkit.WithExtension(eventkit.SubjectSeqExtension, strconv.Itoa(i/256+1)))
		}
		evs = append(evs, eventkit.New("bench.event", "application/octet-stream", payload, opts...))
		if len(evs) == pubBatch || i == n-1 {
			if err := br.Publish(ctx, topic, evs...); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	return topic
}

// rawConsume consumes n messages of topic's stream as group with the raw
// nats.go jetstream pull consumer, acking each explicitly; the clock runs
// from creating the consumer to the last ack.
func rawConsume(ctx context.Context, clock *benchkit.Clock, br *natsbroker.Broker, topic, group string, n int) (int, []time.Duration, error) {
	clock.Start()
	cons, err := br.JetStream().CreateOrUpdateConsumer(ctx, br.StreamName(topic), jetstream.ConsumerConfig{
		Durable: group, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: inFlight})
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = br.JetStream().DeleteConsumer(context.Background(), br.StreamName(topic), group) }()
	got := benchtest.NewCounter(clock, n)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		got.Add()
	}, jetstream.PullMaxMessages(inFlight))
	if err != nil {
		return 0, nil, err
	}
	defer cc.Stop()
	if err := got.Wait("raw", timeout); err != nil {
		return 0, nil, err
	}
	return n, nil, nil
}

// ekConsume runs the eventkit runtime with cfg as group on topic until it
// has handled (and acked) n events; the clock runs from consumer.New to the
// last ack (Stats().Handled counts after the ack).
func ekConsume(ctx context.Context, clock *benchkit.Clock, br *natsbroker.Broker, topic, group string, n int, cfg consumer.Config, work func(ctx context.Context, ev eventkit.Event) error) (int, []time.Duration, error) {
	cfg.Logger = quiet
	cfg.Concurrency = concurrency
	cfg.MaxInFlight = inFlight
	clock.Start()
	c, err := consumer.New(br, cfg)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = br.DeleteTopic(context.Background(), topic+".dlq") }()
	if err := c.HandleFunc(topic, group, func(ctx context.Context, ev eventkit.Event) error {
		if work != nil {
			return work(ctx, ev)
		}
		return nil
	}); err != nil {
		return 0, nil, err
	}
	if err := benchtest.RunConsumer(ctx, clock, c, "eventkit "+group, n, timeout); err != nil {
		return 0, nil, err
	}
	_ = br.JetStream().DeleteConsumer(context.Background(), br.StreamName(topic), group)
	if s := c.Stats(); s.Failed+s.Retried+s.DeadLettered+s.Duplicates != 0 {
		return 0, nil, fmt.Errorf("eventkit %s: unexpected stats %+v", group, s)
	}
	return n, nil, nil
}

// ---- Watermill over NATS ----

func wmNATSTopic(b *testing.B, n int) (jetstream.JetStream, string) {
	b.Helper()
	nc, err := nats.Connect(natsURL())
	if err != nil {
		testenv.Unavailable(b, fmt.Sprintf("no NATS at %s: %v", natsURL(), err))
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
	wmFill(b, pub, topic, n)
	return js, topic
}

// wmFill publishes n 1 KB messages to topic in calls of pubBatch.
func wmFill(b *testing.B, pub message.Publisher, topic string, n int) {
	b.Helper()
	for i := 0; i < n; i += pubBatch {
		msgs := make([]*message.Message, 0, pubBatch)
		for range min(pubBatch, n-i) {
			msgs = append(msgs, message.NewMessage(watermill.NewUUID(), payload))
		}
		if err := pub.Publish(topic, msgs...); err != nil {
			b.Fatal(err)
		}
	}
}

// wmRouterConsume runs a Watermill router over a watermill-nats JetStream
// subscriber (concurrency subscriber goroutines sharing one durable queue
// group named after group, explicit async acks, at most inFlight unacked)
// with middlewares, until its handler has seen n messages and the durable
// shows them all acked. The clock runs from creating the subscriber.
func wmRouterConsume(ctx context.Context, clock *benchkit.Clock, js jetstream.JetStream, topic, group string, n int, mw ...message.HandlerMiddleware) (int, []time.Duration, error) {
	clock.Start()
	sub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
		URL:              natsURL(),
		QueueGroupPrefix: group,
		SubscribersCount: concurrency,
		AckWaitTimeout:   30 * time.Second,
		CloseTimeout:     5 * time.Second,
		Unmarshaler:      &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{
			SubscribeOptions: []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit(), nats.MaxAckPending(inFlight)},
			DurablePrefix:    group,
			AckAsync:         true,
		},
	}, watermill.NopLogger{})
	if err != nil {
		return 0, nil, err
	}
	defer sub.Close()
	defer deleteConsumers(js, topic, group)
	settled := func() (bool, error) { // every message acked
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, topic)
		if err != nil {
			return false, err
		}
		ok := false
		for info := range st.ListConsumers(ctx).Info() {
			if strings.HasPrefix(info.Name, group) {
				ok = info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream >= uint64(n)
			}
		}
		return ok, nil
	}
	return runRouter(ctx, clock, "watermill-nats", topic, sub, n, settled, nil, mw...)
}

// deleteConsumers deletes the durables of topic's stream named group*.
func deleteConsumers(js jetstream.JetStream, topic, group string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, topic)
	if err != nil {
		return
	}
	var names []string
	for n := range st.ListConsumers(ctx).Info() {
		if strings.HasPrefix(n.Name, group) {
			names = append(names, n.Name)
		}
	}
	for _, n := range names {
		_ = st.DeleteConsumer(ctx, n)
	}
}

// runRouter runs a router with one consumer handler on sub until the handler
// has returned nil for n messages (each is acked by the router right after)
// and settled, polled each millisecond after the last handler call,
// reports true (the last ack or commit done); then it stops the clock.
func runRouter(ctx context.Context, clock *benchkit.Clock, what, topic string, sub message.Subscriber, n int, settled func() (bool, error), work func(*message.Message) error, mw ...message.HandlerMiddleware) (int, []time.Duration, error) {
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return 0, nil, err
	}
	r.AddMiddleware(mw...)
	var got atomic.Int64
	done := make(chan struct{})
	var workErr atomic.Value
	r.AddConsumerHandler("bench", topic, sub, func(m *message.Message) error {
		if work != nil {
			if err := work(m); err != nil {
				workErr.Store(err)
				return err
			}
		}
		if got.Add(1) == int64(n) {
			close(done)
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
		for deadline := time.Now().Add(timeout); ; time.Sleep(time.Millisecond) {
			ok, err := settled()
			if err != nil {
				return 0, nil, err
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return 0, nil, fmt.Errorf("%s: handled %d of %d but not settled", what, got.Load(), n)
			}
		}
		clock.Stop()
		return n, nil, nil
	case err := <-runDone:
		return 0, nil, fmt.Errorf("%s: router stopped after %d of %d: %v", what, got.Load(), n, err)
	case <-time.After(timeout):
		return 0, nil, fmt.Errorf("%s: consumed %d of %d (last handler error: %v)", what, got.Load(), n, workErr.Load())
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a loaded machine
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		testenv.Unavailable(b, fmt.Sprintf("no Postgres at %s: %v", pgURL(), err))
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
	benchtest.PostgresDurability(func(name string) (v string, err error) {
		err = db.QueryRowContext(ctx, "SHOW "+name).Scan(&v)
		return v, err
	})
	return db
}

// counters is a counter table (id, n) of one run, and the UPSERT that
// bumps one counter ($1 = id).
type counters struct {
	db            *sql.DB
	table, upsert string
}

func newCounters(ctx context.Context, db *sql.DB) (*counters, error) {
	t := name("bench_counter")
	if _, err := db.ExecContext(ctx, "CREATE TABLE "+t+" (id TEXT PRIMARY KEY, n BIGINT NOT NULL)"); err != nil {
		return nil, err
	}
	return &counters{db: db, table: t, upsert: "INSERT INTO " + t + " (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = " + t + ".n + 1"}, nil
}

// checkAndDrop fails unless the table holds n counters that are all 1
// (every event's business write happened, exactly once), then drops it.
func (c *counters) checkAndDrop(ctx context.Context, what string, n int) error {
	defer func() { _, _ = c.db.Exec("DROP TABLE IF EXISTS " + c.table) }()
	var rows, sum, maxN int64
	if err := c.db.QueryRowContext(ctx, "SELECT count(*), coalesce(sum(n), 0), coalesce(max(n), 0) FROM "+c.table).Scan(&rows, &sum, &maxN); err != nil {
		return err
	}
	if rows != int64(n) || sum != int64(n) || maxN > 1 {
		return fmt.Errorf("%s: %d counters, sum %d, max %d; want %d counters all 1", what, rows, sum, maxN, n)
	}
	return nil
}

func ekSQLInbox(ctx context.Context, db *sql.DB) (*sqlinbox.Inbox, string, error) {
	table := name("bench_inbox")
	in, err := sqlinbox.New(db, sqlinbox.Postgres, sqlinbox.Options{Table: table})
	if err != nil {
		return nil, "", err
	}
	return in, table, in.Migrate(ctx)
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
	wmFill(b, pub, topic, n)
	return topic
}

// wmSQLConsume runs a router over a watermill-sql subscriber (Postgres
// schema, offsets adapter, a consumer group of its own, so it reads every
// message of topic) whose handler does the UPSERT in the subscriber's
// transaction (wsql.TxFromContext), until n counters are committed.
func wmSQLConsume(ctx context.Context, clock *benchkit.Clock, db *sql.DB, topic, group string, c *counters, n, batch int) (int, []time.Duration, error) {
	clock.Start()
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(db), wsql.SubscriberConfig{
		ConsumerGroup:    group,
		SchemaAdapter:    wmSchema(batch),
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
		PollInterval:     10 * time.Millisecond,
	}, watermill.NopLogger{})
	if err != nil {
		return 0, nil, err
	}
	defer sub.Close()
	settled := func() (bool, error) { // every handler transaction committed
		var rows int64
		err := db.QueryRowContext(ctx, "SELECT count(*) FROM "+c.table).Scan(&rows)
		return rows == int64(n), err
	}
	return runRouter(ctx, clock, "watermill-sql", topic, sub, n, settled, func(m *message.Message) error {
		tx, ok := wsql.TxFromContext(m.Context())
		if !ok {
			return errors.New("watermill-sql gave the handler no transaction")
		}
		_, err := tx.ExecContext(m.Context(), c.upsert, m.UUID)
		return err
	})
}

// ---- benchmarks ----

// Events per contender and run (benchtest.Events scales them under
// -short): large enough that start-up is well under 5 % of a run.
const (
	noInboxEvents = 100_000
	dedupeEvents  = 100_000
	eoEvents      = 10_000
)

// meter meters this process, nats-server and PostgreSQL where they run on
// this machine.
func meter() *benchkit.Meter { return benchkit.NewMeter(natsURL(), pgURL()) }

// natsContender consumes topic as a fresh group each run.
func natsContender(label string, run func(ctx context.Context, clock *benchkit.Clock, group string) (int, []time.Duration, error)) benchkit.Contender {
	return benchkit.Contender{Name: label, Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
		return run(ctx, clock, name("g"))
	}}
}

// BenchmarkNoInbox: the raw nats.go pull consumer with explicit acks (the
// baseline) against the eventkit runtime (concurrency 8, no inbox) over the
// eventkit NATS adapter, on the same stream, each run a fresh durable.
func BenchmarkNoInbox(b *testing.B) {
	br := ekBroker(b)
	n := benchtest.Events(noInboxEvents)
	topic := ekTopic(b, br, n, false)
	benchtest.Compare(b, meter(),
		natsContender("raw", func(ctx context.Context, clock *benchkit.Clock, g string) (int, []time.Duration, error) {
			return rawConsume(ctx, clock, br, topic, g, n)
		}),
		natsContender("eventkit", func(ctx context.Context, clock *benchkit.Clock, g string) (int, []time.Duration, error) {
			return ekConsume(ctx, clock, br, topic, g, n, consumer.Config{}, nil)
		}),
	)
}

// BenchmarkInProcessDedupe: Watermill's router over watermill-nats with its
// Deduplicator middleware (in-memory expiring key repository, keyed by
// message UUID) against the eventkit runtime with the in-process LRU inbox
// (keyed by group and event id), concurrency 8 each; each run a fresh
// durable and a fresh key repository or inbox.
func BenchmarkInProcessDedupe(b *testing.B) {
	br := ekBroker(b)
	n := benchtest.Events(dedupeEvents)
	topic := ekTopic(b, br, n, false)
	js, wmTopic := wmNATSTopic(b, n)
	benchtest.Compare(b, meter(),
		natsContender("watermill", func(ctx context.Context, clock *benchkit.Clock, g string) (int, []time.Duration, error) {
			repo, err := middleware.NewMapExpiringKeyRepository(time.Hour)
			if err != nil {
				return 0, nil, err
			}
			dedup := &middleware.Deduplicator{
				KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil },
				Repository: repo,
			}
			return wmRouterConsume(ctx, clock, js, wmTopic, g, n, dedup.Middleware)
		}),
		natsContender("eventkit-lru", func(ctx context.Context, clock *benchkit.Clock, g string) (int, []time.Duration, error) {
			return ekConsume(ctx, clock, br, topic, g, n, consumer.Config{Inbox: lruinbox.New(lruinbox.Options{TTL: time.Hour})}, nil)
		}),
	)
}

// BenchmarkExactlyOnce: Watermill's SQL subscriber consuming from its
// Postgres table with an UPSERT into a counter table in the subscriber's
// transaction (watermill-sql's default of 100 messages per SELECT and
// transaction: the baseline, and 1), against the eventkit runtime
// (concurrency 8) over NATS with the Postgres SQL inbox and the same
// UPSERT in the inbox transaction, one transaction per event and in
// batches of 64 (InboxBatch). Each run gets a fresh counter table, inbox
// table and group, so all start from the same state; after each, every
// counter must be exactly 1.
func BenchmarkExactlyOnce(b *testing.B) {
	br := ekBroker(b)
	db := pgDB(b)
	n := benchtest.Events(eoEvents)
	topic := ekTopic(b, br, n, true)
	wmTopic := wmSQLTopic(b, db, n)
	var c *counters
	prepare := func(ctx context.Context) (err error) {
		c, err = newCounters(ctx, db)
		return err
	}
	wm := func(label string, batch int) benchkit.Contender {
		return benchkit.Contender{Name: label, Prepare: prepare,
			Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
				return wmSQLConsume(ctx, clock, db, wmTopic, name("g"), c, n, batch)
			},
			Cleanup: func(ctx context.Context) error { return c.checkAndDrop(ctx, label, n) },
		}
	}
	ek := func(label string, mode consumer.Mode) benchkit.Contender {
		var in *sqlinbox.Inbox
		var inTable string
		return benchkit.Contender{Name: label,
			Prepare: func(ctx context.Context) (err error) {
				if err = prepare(ctx); err != nil {
					return err
				}
				in, inTable, err = ekSQLInbox(ctx, db)
				return err
			},
			Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
				return ekConsume(ctx, clock, br, topic, name("g"), n, consumer.Config{Inbox: in, Mode: mode},
					func(ctx context.Context, ev eventkit.Event) error {
						tx, err := sqlinbox.Tx(ctx)
						if err == nil {
							_, err = tx.ExecContext(ctx, c.upsert, ev.ID)
						}
						return err
					})
			},
			Cleanup: func(ctx context.Context) error {
				defer func() { _, _ = db.Exec("DROP TABLE IF EXISTS " + inTable) }()
				return c.checkAndDrop(ctx, label, n)
			},
		}
	}
	// EVENTKIT_BENCH_ONLY picks among them (see benchtest); leave out
	// watermill-sql-batch1, which takes minutes per run, when it is not the
	// figure wanted.
	benchtest.Compare(b, meter(),
		wm("watermill-sql", 100),
		ek("eventkit-batch64", consumer.Batched(64, 0)),
		ek("eventkit", consumer.Unordered()),
		ek("eventkit-ordered", consumer.PerSubject()),
		ek("eventkit-ordered-batch64", consumer.PerSubjectBatched(64, 0)),
		ek("eventkit-strict", consumer.Strict()),
		ek("eventkit-strict-batch64", consumer.StrictBatched(64, 0)),
		wm("watermill-sql-batch1", 1),
	)
}
