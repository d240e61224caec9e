package outboxbench

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/benchkit/benchtest"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// cdcDrainEvents is the events per drain of BenchmarkCDCDrain.
const cdcDrainEvents = 50_000

// outboxRun is one contender's outbox for one run: a fresh table, for the
// CDC contenders with its own slot and publication created before the
// rows are written (so the rows come through the stream, not a backfill),
// and a fresh JetStream stream. Every run starts from the same state: n
// rows written by Store.Add in transactions of txSize.
type outboxRun struct {
	e           *env
	store       *pgoutbox.Store
	topic       string // eventkit topic
	stream      string // the raw relays' stream
	slot, pub   string // CDC only
	cdc         bool
	streaming   atomic.Bool // rawCDC: replication started
	cleanupOnce sync.Once
}

func (e *env) newRun(ctx context.Context, cdc bool) (*outboxRun, error) {
	r := &outboxRun{e: e, cdc: cdc, topic: testenv.Name("ekob"), stream: strings.ToUpper(testenv.Name("OBENCH_RAW"))}
	table := testenv.Name("obench")
	s, err := pgoutbox.New(e.pool, pgoutbox.Config{Table: table})
	if err != nil {
		return nil, err
	}
	r.store = s
	if err := s.Migrate(ctx); err != nil {
		return r, err
	}
	if cdc {
		r.slot, r.pub = table+"_slot", table+"_pub"
		if _, err := e.pool.Exec(ctx, `CREATE PUBLICATION `+r.pub+` FOR TABLE `+table+` WITH (publish = 'insert')`); err != nil {
			return r, err
		}
		if _, err := e.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, r.slot); err != nil {
			return r, err
		}
	}
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: r.stream, Subjects: []string{r.stream + ".>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		return r, err
	}
	return r, nil
}

// fill writes n events, txSize per transaction, as an application would.
func (r *outboxRun) fill(ctx context.Context, n int) error {
	for i := 0; i < n; i += txSize {
		evs := make([]eventkit.Event, min(txSize, n-i))
		for j := range evs {
			evs[j] = eventkit.New("bench.event", "application/octet-stream", payload, eventkit.WithSubject(fmt.Sprint("s", j%100)))
		}
		if err := pgx.BeginFunc(ctx, r.e.pool, func(tx pgx.Tx) error { return r.store.Add(ctx, tx, r.topic, evs...) }); err != nil {
			return err
		}
	}
	_, err := r.e.pool.Exec(ctx, "VACUUM ANALYZE "+r.store.Table())
	return err
}

// drop removes the run's slot (waiting for its walsender to let go),
// publication, tables and streams.
func (r *outboxRun) drop() {
	r.cleanupOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if r.slot != "" {
			for ctx.Err() == nil {
				_, err := r.e.pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, r.slot)
				if err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond) // still active: its walsender is exiting
			}
			_, _ = r.e.pool.Exec(ctx, `DROP PUBLICATION IF EXISTS `+r.pub)
		}
		t := r.store.Table()
		_, _ = r.e.pool.Exec(ctx, `DROP TABLE IF EXISTS `+t+`, `+t+`_migrations, `+t+`_leases, `+t+`_relays, `+t+`_subject_seq CASCADE; DROP FUNCTION IF EXISTS `+t+`_notify() CASCADE`)
		_ = r.e.js.DeleteStream(ctx, r.stream)
	})
}

// ekBroker connects the eventkit NATS adapter as the relays use it.
func (e *env) ekBroker(ctx context.Context) (*natsbroker.Broker, error) {
	return natsbroker.Connect(ctx, e.natsURL, natsbroker.Options{StreamPrefix: "OBENCH_", PublishWindow: claim})
}

// cdcContender builds a drain contender: prepare makes a fresh outbox of n
// rows, run drains it and returns when every row is relayed and deleted.
func (e *env) drainContender(name string, cdc bool, n int, run func(ctx context.Context, clock *benchkit.Clock, r *outboxRun) error) benchkit.Contender {
	var r *outboxRun
	return benchkit.Contender{
		Name: name,
		Prepare: func(ctx context.Context) (err error) {
			if r, err = e.newRun(ctx, cdc); err != nil {
				return err
			}
			return r.fill(ctx, n)
		},
		Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			if err := run(ctx, clock, r); err != nil {
				return 0, nil, err
			}
			var left int
			if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM `+r.store.Table()).Scan(&left); err != nil || left != 0 {
				return 0, nil, fmt.Errorf("%d rows left in the outbox (%v)", left, err)
			}
			return n, nil, nil
		},
		Cleanup: func(context.Context) error { r.drop(); return nil },
	}
}

// runEngine runs an eventkit relay (polling or CDC) until delivered()
// reaches n, publishing through br, and stops it.
func runEngine(ctx context.Context, clock *benchkit.Clock, relay interface{ Run(context.Context) error }, delivered func() int64, n int) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	clock.Start()
	go func() { errc <- relay.Run(rctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for delivered() < int64(n) {
		select {
		case err := <-errc:
			return fmt.Errorf("relay stopped after %d of %d: %v", delivered(), n, err)
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay: %d of %d delivered", delivered(), n)
		}
	}
	clock.Stop()
	cancel()
	return <-errc
}

func (e *env) ekPolling(ctx context.Context, clock *benchkit.Clock, r *outboxRun, n int, pub func(broker.Publisher) broker.Publisher) error {
	br, err := e.ekBroker(ctx)
	if err != nil {
		return err
	}
	defer br.Close(context.Background())                //nolint:errcheck
	defer br.DeleteTopic(context.Background(), r.topic) //nolint:errcheck
	relay := outbox.NewRelay(r.store, pub(br), outbox.RelayConfig{BatchSize: claim, StatusInterval: -1, Logger: quiet})
	return runEngine(ctx, clock, relay, func() int64 { return relay.Stats().Delivered }, n)
}

func (e *env) ekCDC(ctx context.Context, clock *benchkit.Clock, r *outboxRun, n int, pub func(broker.Publisher) broker.Publisher) error {
	br, err := e.ekBroker(ctx)
	if err != nil {
		return err
	}
	defer br.Close(context.Background())                //nolint:errcheck
	defer br.DeleteTopic(context.Background(), r.topic) //nolint:errcheck
	relay, err := pgcdc.New(e.pool, pub(br), pgcdc.Config{Table: r.store.Table(), Slot: r.slot, Publication: r.pub,
		RelayConfig: outbox.RelayConfig{BatchSize: claim, StatusInterval: -1, Logger: quiet}})
	if err != nil {
		return err
	}
	return runEngine(ctx, clock, relay, func() int64 { return relay.Stats().Delivered }, n)
}

func same(p broker.Publisher) broker.Publisher { return p }

// BenchmarkCDCDrain drains a fresh outbox of 50,000 1 KB events into
// JetStream with: a minimal raw CDC relay written with pglogrepl and
// nats.go (the baseline: rawCDC), eventkit's CDC relay (outbox/pgcdc),
// eventkit's polling relay and the raw polling relay (rawRelay), each from
// the same table state (rows written after the slot was created, for the
// CDC ones), alternated over rounds. Every relay deletes its own rows; a
// run ends when all are published, acked and deleted. Needs wal_level =
// logical (scripts/pgtemp.sh starts such a server).
func BenchmarkCDCDrain(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	var wal string
	if err := e.pool.QueryRow(ctx, `SHOW wal_level`).Scan(&wal); err != nil || wal != "logical" {
		testenv.Unavailable(b, fmt.Sprintf("wal_level is %q, not logical: start one with scripts/pgtemp.sh and set EVENTKIT_POSTGRES_URL", wal))
	}
	n := benchtest.Events(cdcDrainEvents)
	benchtest.Compare(b, benchkit.NewMeter(e.natsURL, e.pgURL),
		e.drainContender("raw-cdc", true, n, func(ctx context.Context, clock *benchkit.Clock, r *outboxRun) error {
			clock.Start()
			return rawCDC(ctx, e, r, n, clock.Stop, nil)
		}),
		e.drainContender("eventkit-cdc", true, n, func(ctx context.Context, clock *benchkit.Clock, r *outboxRun) error {
			return e.ekCDC(ctx, clock, r, n, same)
		}),
		e.drainContender("eventkit-polling", false, n, func(ctx context.Context, clock *benchkit.Clock, r *outboxRun) error {
			return e.ekPolling(ctx, clock, r, n, same)
		}),
		e.drainContender("raw-polling", false, n, func(ctx context.Context, clock *benchkit.Clock, r *outboxRun) error {
			clock.Start()
			got, err := rawRelay(ctx, e.pool, e.js, r.store.Table(), r.stream)
			clock.Stop()
			if err == nil && got != n {
				err = fmt.Errorf("raw relay: %d of %d", got, n)
			}
			return err
		}),
	)
}

// rawCDC is a minimal CDC relay with pglogrepl and nats.go: it streams the
// slot with pgoutput in binary mode, publishes each inserted row with
// PublishMsgAsync (the same ce- headers and Nats-Msg-Id as rawRelay),
// and at a transaction's commit, once 1,000 events are pending or no more
// data arrives within 1 ms, waits for the acks, deletes the rows by seq
// and confirms the last commit's LSN to the server. It returns after n rows, calling
// done first; acked, when set, gets the ids of every acked batch.
func rawCDC(ctx context.Context, e *env, r *outboxRun, n int, done func(), acked func(ids []string)) error {
	cfg, err := pgconn.ParseConfig(e.pgURL)
	if err != nil {
		return err
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background()) //nolint:errcheck
	if err := pglogrepl.StartReplication(ctx, conn, r.slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + r.pub + "'", "binary 'true'"},
	}); err != nil {
		return err
	}
	r.streaming.Store(true)
	var (
		cols      []string // the relation's column names
		seqs      []int64
		ids       []string
		futs      []jetstream.PubAckFuture
		confirmed pglogrepl.LSN
		pending   pglogrepl.LSN
		total     int
	)
	flush := func() error {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			}
		}
		if acked != nil {
			acked(ids)
		}
		if len(seqs) > 0 {
			if _, err := e.pool.Exec(ctx, `DELETE FROM `+r.store.Table()+` WHERE seq = ANY($1)`, seqs); err != nil {
				return err
			}
		}
		total += len(seqs)
		seqs, ids, futs = seqs[:0], ids[:0], futs[:0]
		confirmed = pending
		return pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: confirmed})
	}
	for total < n {
		// Between transactions, wait briefly for more before flushing a
		// part batch: the relay then batches when busy and flushes at
		// once when idle.
		wait := time.Second
		if pending > confirmed {
			wait = time.Millisecond
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				if err := flush(); err != nil {
					return err
				}
				continue
			}
			return err
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			if er, ok := msg.(*pgproto3.ErrorResponse); ok {
				return fmt.Errorf("replication: %s", er.Message)
			}
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			k, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err != nil {
				return err
			}
			if k.ReplyRequested {
				if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: confirmed}); err != nil {
					return err
				}
			}
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				return err
			}
			m, err := pglogrepl.Parse(x.WALData)
			if err != nil {
				return err
			}
			switch m := m.(type) {
			case *pglogrepl.RelationMessage:
				cols = cols[:0]
				for _, c := range m.Columns {
					cols = append(cols, c.Name)
				}
			case *pglogrepl.InsertMessage:
				nm, seq, id, err := rawRowMsg(r.stream, cols, m.Tuple)
				if err != nil {
					return err
				}
				f, err := e.js.PublishMsgAsync(nm)
				if err != nil {
					return err
				}
				seqs, ids, futs = append(seqs, seq), append(ids, id), append(futs, f)
			case *pglogrepl.CommitMessage:
				pending = m.TransactionEndLSN
				if len(seqs) >= claim {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
	}
	if done != nil {
		done()
	}
	return nil
}

// rawRowMsg makes the NATS message of one outbox row sent in binary
// format: text columns are their bytes, seq an 8-byte big-endian integer.
func rawRowMsg(stream string, cols []string, t *pglogrepl.TupleData) (*nats.Msg, int64, string, error) {
	if t == nil || len(t.Columns) != len(cols) {
		return nil, 0, "", fmt.Errorf("row of %d columns, relation of %d", len(t.Columns), len(cols))
	}
	var seq int64
	val := map[string]string{}
	var data []byte
	for i, c := range t.Columns {
		if c.DataType == pglogrepl.TupleDataTypeNull {
			continue
		}
		if c.DataType != pglogrepl.TupleDataTypeBinary {
			return nil, 0, "", fmt.Errorf("column %s in format %q, not binary", cols[i], c.DataType)
		}
		switch cols[i] {
		case "seq":
			if len(c.Data) != 8 {
				return nil, 0, "", fmt.Errorf("seq of %d bytes", len(c.Data))
			}
			seq = int64(binary.BigEndian.Uint64(c.Data))
		case "data":
			data = c.Data
		case "id", "type", "source", "subject", "event_time", "data_version", "data_content_type", "data_schema":
			val[cols[i]] = string(c.Data)
		}
	}
	m := nats.NewMsg(stream + "." + val["type"])
	h := m.Header
	h["ce-specversion"] = []string{"1.0"}
	h["ce-id"] = []string{val["id"]}
	h["ce-source"] = []string{val["source"]}
	h["ce-type"] = []string{val["type"]}
	h["ce-time"] = []string{val["event_time"]}
	for _, kv := range [][2]string{{"ce-subject", "subject"}, {"ce-dataversion", "data_version"}, {"ce-dataschema", "data_schema"}, {"content-type", "data_content_type"}} {
		if v := val[kv[1]]; v != "" {
			h[kv[0]] = []string{v}
		}
	}
	h["Nats-Msg-Id"] = []string{val["id"]}
	m.Data = data
	return m, seq, val["id"], nil
}

// latencyRate and latencySecs: BenchmarkCommitToAck commits one event per
// transaction at latencyRate events/s for latencySecs.
const latencyRate, latencySecs = 500, 10

// BenchmarkCommitToAck commits one 1 KB event per transaction at a steady
// 500 events/s for 10 s with a relay running, and measures each event's
// commit-to-ack latency: from its Commit returning to JetStream's ack of
// its publish (on the real broker, NATS), p50 and p99. Contenders: the raw
// CDC relay (rawCDC, the baseline), eventkit's CDC relay and eventkit's
// polling relay (NOTIFY wakes it on commit), alternated, each on a fresh
// table (with its own slot for CDC).
func BenchmarkCommitToAck(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	var wal string
	if err := e.pool.QueryRow(ctx, `SHOW wal_level`).Scan(&wal); err != nil || wal != "logical" {
		testenv.Unavailable(b, fmt.Sprintf("wal_level is %q, not logical: start one with scripts/pgtemp.sh and set EVENTKIT_POSTGRES_URL", wal))
	}
	n := benchtest.Events(latencyRate * latencySecs)
	contender := func(name string, cdc bool, start func(ctx context.Context, r *outboxRun, at *ackTimer) (ready func() bool, stop func() error)) benchkit.Contender {
		var r *outboxRun
		return benchkit.Contender{
			Name:    name,
			Prepare: func(ctx context.Context) (err error) { r, err = e.newRun(ctx, cdc); return err },
			Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
				at := &ackTimer{committed: map[string]time.Time{}}
				ready, stop := start(ctx, r, at)
				for deadline := time.Now().Add(30 * time.Second); !ready(); time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						_ = stop()
						return 0, nil, fmt.Errorf("%s: relay not ready", name)
					}
				}
				clock.Start()
				t0 := time.Now()
				for i := range n {
					if w := time.Until(t0.Add(time.Duration(i) * time.Second / latencyRate)); w > 0 {
						time.Sleep(w)
					}
					ev := eventkit.New("bench.event", "application/octet-stream", payload, eventkit.WithSubject(fmt.Sprint("s", i%100)))
					err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
						// A durable commit, whatever the server's default
						// (pgtemp.sh turns it off): CDC sees a transaction
						// only once its WAL is flushed.
						if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
							return err
						}
						if err := r.store.Add(ctx, tx, r.topic, ev); err != nil {
							return err
						}
						at.commit(ev.ID, time.Now(), false) // the ack cannot come earlier
						return nil
					})
					if err != nil {
						_ = stop()
						return 0, nil, err
					}
					at.commit(ev.ID, time.Now(), true) // unless already acked
				}
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
					at.mu.Lock()
					got := len(at.lat)
					at.mu.Unlock()
					if got >= n {
						break
					}
					if time.Now().After(deadline) {
						_ = stop()
						return 0, nil, fmt.Errorf("%s: %d of %d acked", name, got, n)
					}
				}
				clock.Stop()
				err := stop()
				at.mu.Lock()
				defer at.mu.Unlock()
				return n, at.lat, err
			},
			Cleanup: func(context.Context) error { r.drop(); return nil },
		}
	}
	engine := func(ctx context.Context, r *outboxRun, at *ackTimer, cdc bool) (func() bool, func() error) {
		br, err := e.ekBroker(ctx)
		if err != nil {
			return func() bool { return true }, func() error { return err }
		}
		// Create the stream before the clock starts.
		if err := br.Publish(ctx, r.topic, eventkit.New("bench.warm", "text/plain", []byte("w"))); err != nil {
			return func() bool { return true }, func() error { return err }
		}
		at.Publisher = br
		var relay interface{ Run(context.Context) error }
		var ready func() bool
		if cdc {
			rr, err := pgcdc.New(e.pool, at, pgcdc.Config{Table: r.store.Table(), Slot: r.slot, Publication: r.pub,
				RelayConfig: outbox.RelayConfig{StatusInterval: -1, Logger: quiet}})
			if err != nil {
				return func() bool { return true }, func() error { return err }
			}
			relay, ready = rr, func() bool { return rr.Stats().Streaming }
		} else {
			rr := outbox.NewRelay(r.store, at, outbox.RelayConfig{StatusInterval: -1, Logger: quiet})
			relay, ready = rr, rr.IsLeader
		}
		rctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- relay.Run(rctx) }()
		return ready, func() error {
			cancel()
			err := <-errc
			_ = br.DeleteTopic(context.Background(), r.topic)
			_ = br.Close(context.Background())
			return err
		}
	}
	benchtest.Compare(b, benchkit.NewMeter(e.natsURL, e.pgURL),
		contender("raw-cdc", true, func(ctx context.Context, r *outboxRun, at *ackTimer) (func() bool, func() error) {
			rctx, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() {
				errc <- rawCDC(rctx, e, r, n, nil, func(ids []string) { at.acked(ids, time.Now()) })
			}()
			return r.streaming.Load, func() error {
				cancel()
				if err := <-errc; err != nil && rctx.Err() == nil {
					return err
				}
				return nil
			}
		}),
		contender("eventkit-cdc", true, func(ctx context.Context, r *outboxRun, at *ackTimer) (func() bool, func() error) {
			return engine(ctx, r, at, true)
		}),
		contender("eventkit-polling", false, func(ctx context.Context, r *outboxRun, at *ackTimer) (func() bool, func() error) {
			return engine(ctx, r, at, false)
		}),
	)
}
