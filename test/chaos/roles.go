package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// payload is the data of every event: its subject and its number in the
// subject's sequence, as the producer wrote it into the business row.
type payload struct {
	Subject string `json:"subject"`
	Seq     int64  `json:"seq"`
}

// names are the per-run names every process derives from the run id.
type names struct {
	id string
}

func (n names) prefix() string           { return "chaos_" + n.id }
func (n names) orders() string           { return n.prefix() + "_orders" }
func (n names) applied() string          { return n.prefix() + "_applied" }
func (n names) state() string            { return n.prefix() + "_state" }
func (n names) violations() string       { return n.prefix() + "_violations" }
func (n names) inbox() string            { return n.prefix() + "_inbox" }
func (n names) outbox(i int) string      { return n.prefix() + "_outbox" + strconv.Itoa(i) }
func (n names) topic(i int) string       { return "chaos-" + n.id + "-t" + strconv.Itoa(i) }
func (n names) slot() string             { return n.prefix() + "_slot" }
func (n names) group() string            { return "chaos-" + n.id }
func (n names) subject(i int) string     { return fmt.Sprintf("s%03d", i) }
func (n names) outboxOf(subject int) int { return subject % 2 }

// roleFlags are the flags every child process gets from the orchestrator.
type roleFlags struct {
	id, pg, brokerKind, brokerURL string
	events, subjects              int
	listen, advertise             string
}

func runRole(role string, args []string) error {
	fs := flag.NewFlagSet(role, flag.ExitOnError)
	var f roleFlags
	fs.StringVar(&f.id, "id", "", "run id")
	fs.StringVar(&f.pg, "pg", "", "PostgreSQL URL (through the proxy)")
	fs.StringVar(&f.brokerKind, "broker", "", "nats, rabbitmq, redis or kafka")
	fs.StringVar(&f.brokerURL, "broker-url", "", "broker URL (through the proxy)")
	fs.IntVar(&f.events, "events", 0, "events to produce")
	fs.IntVar(&f.subjects, "subjects", 0, "subjects")
	fs.StringVar(&f.listen, "listen", "", "kfake: real listen address")
	fs.StringVar(&f.advertise, "advertise", "", "kfake: address told to clients (the proxy)")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	switch role {
	case "producer":
		return produce(ctx, f)
	case "consumer":
		return consume(ctx, f)
	case "kfake":
		return runKfake(ctx, f)
	}
	return fmt.Errorf("unknown role %q", role)
}

// produce writes f.events business rows, each with its outbox event in the
// same transaction, over f.subjects subjects (subject i goes to outbox
// i%2), numbering each subject's events from 1. A worker owns a set of
// subjects and writes each subject's events one after the other, so the
// outbox's subject sequence and the payload's agree. A transaction whose
// commit is ambiguous (connection cut) is written again: the business
// row's primary key makes a second commit impossible.
func produce(ctx context.Context, f roleFlags) error {
	n := names{f.id}
	var stores [2]*connect.Store
	for i := range stores {
		st, err := openStoreRetry(ctx, f.pg, n.outbox(i))
		if err != nil {
			return err
		}
		defer st.Close()
		stores[i] = st
	}
	const workers = 8
	per := make([][]int, workers)
	for s := range f.subjects {
		per[s%workers] = append(per[s%workers], s)
	}
	// Spread the events over the subjects: subject s gets events/subjects,
	// the first events%subjects one more.
	quota := func(s int) int64 {
		q := f.events / f.subjects
		if s < f.events%f.subjects {
			q++
		}
		return int64(q)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := map[int]int64{}
			for _, s := range per[w] {
				next[s] = 1
			}
			for {
				progressed := false
				for _, s := range per[w] {
					if next[s] > quota(s) {
						continue
					}
					progressed = true
					if err := writeOne(ctx, stores[n.outboxOf(s)], n, n.subject(s), next[s]); err != nil {
						errs <- err
						return
					}
					next[s]++
				}
				if !progressed {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func writeOne(ctx context.Context, st *connect.Store, n names, subject string, seq int64) error {
	data, _ := json.Marshal(payload{Subject: subject, Seq: seq})
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err := func() error {
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			tx, err := st.SQL.BeginTx(tctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback() //nolint:errcheck
			if _, err := tx.ExecContext(tctx, "INSERT INTO "+n.orders()+" (subject, seq) VALUES ($1, $2)", subject, seq); err != nil {
				return err
			}
			ev := eventkit.New("chaos.step", "application/json", data, eventkit.WithSubject(subject))
			topic := n.topic(n.outboxOf(subjectIndex(subject)))
			if err := st.AddSQL(tctx, tx, topic, ev); err != nil {
				return err
			}
			return tx.Commit()
		}()
		if err == nil {
			return nil
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return nil // an earlier, ambiguous attempt committed
		}
		if attempt > 2000 {
			return fmt.Errorf("producer: %s#%d: %w", subject, seq, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func subjectIndex(s string) int {
	i, _ := strconv.Atoi(s[1:])
	return i
}

func openStoreRetry(ctx context.Context, url, table string) (*connect.Store, error) {
	var err error
	for range 200 {
		var st *connect.Store
		if st, err = connect.OpenStore(ctx, url, connect.WithOutboxTable(table)); err == nil {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, err
}

// consume runs one consumer process: strict order, the SQL inbox on
// PostgreSQL, concurrency 8, both topics in one group. The handler checks,
// in the inbox's transaction, that the event is its subject's next one
// (recording a violation row otherwise) and records the application.
func consume(ctx context.Context, f roleFlags) error {
	n := names{f.id}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := openStoreRetry(ctx, f.pg, n.outbox(0))
	if err != nil {
		return err
	}
	defer st.Close()
	in, err := sqlinbox.New(st.SQL, sqlinbox.Postgres, sqlinbox.Options{Table: n.inbox()})
	if err != nil {
		return err
	}
	b, err := openBroker(ctx, f.brokerKind, f.brokerURL, log)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(cctx)
	}()
	c, err := consumer.New(b, consumer.Config{
		Concurrency:      8,
		MaxInFlight:      64,
		GroupMaxInFlight: 3 * 64,
		Mode:             consumer.Strict(),
		Inbox:            in,
		HandlerTimeout:   5 * time.Second,
		AckWait:          8 * time.Second,
		// Failures here are only the faults' (cut or stalled database
		// connections): retry them for minutes, not into the dead-letter
		// topic. A dead letter would park its subject and show as lost.
		Retry:  consumer.RetryPolicy{MaxAttempts: 1000, Initial: 50 * time.Millisecond, Max: time.Second},
		Logger: log,
	})
	if err != nil {
		return err
	}
	pid := os.Getpid()
	h := func(ctx context.Context, ev eventkit.Event) error {
		var p payload
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			return eventkit.Permanent(err)
		}
		tx, err := sqlinbox.Tx(ctx)
		if err != nil {
			return err
		}
		var last int64
		if err := tx.QueryRowContext(ctx, "SELECT last FROM "+n.state()+" WHERE subject = $1 FOR UPDATE", p.Subject).Scan(&last); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+n.applied()+" (subject, seq, pid) VALUES ($1, $2, $3)", p.Subject, p.Seq, pid); err != nil {
			return err
		}
		if p.Seq != last+1 {
			if _, err := tx.ExecContext(ctx, "INSERT INTO "+n.violations()+" (subject, seq, last, pid) VALUES ($1, $2, $3, $4)", p.Subject, p.Seq, last, pid); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, "UPDATE "+n.state()+" SET last = greatest(last, $2) WHERE subject = $1", p.Subject, p.Seq)
		return err
	}
	for i := range 2 {
		if err := c.HandleFunc(n.topic(i), n.group(), h); err != nil {
			return err
		}
	}
	return c.Run(ctx)
}

// openBroker opens the adapter with settings fit for a run where processes
// die every few seconds: short sessions (Kafka), a group window for three
// consumers (NATS).
func openBroker(ctx context.Context, kind, url string, log *slog.Logger) (broker.Broker, error) {
	var err error
	for range 200 {
		var b broker.Broker
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		switch kind {
		case "nats":
			b, err = natsbroker.Connect(cctx, url, natsbroker.Options{Name: "chaos", Logger: log,
				NATSOptions: []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}})
		case "rabbitmq":
			b, err = rabbitmqbroker.New(cctx, rabbitmqbroker.Options{URL: url, Logger: log})
		case "redis":
			b, err = redisbroker.New(cctx, redisbroker.Options{URL: url})
		case "kafka":
			b, err = kafkabroker.New(cctx, kafkabroker.Options{Brokers: []string{url}, Logger: log,
				SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
				RevokeWait: 2 * time.Second})
		default:
			cancel()
			return nil, fmt.Errorf("unknown broker %q", kind)
		}
		cancel()
		if err == nil {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, err
}

// runKfake runs a kfake cluster of one broker that listens on f.listen and
// tells clients to connect to f.advertise (the fault proxy), so every
// Kafka connection of the run goes through the proxy.
func runKfake(ctx context.Context, f roleFlags) error {
	_, p, err := net.SplitHostPort(f.listen)
	if err != nil {
		return err
	}
	port, _ := strconv.Atoi(p)
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			return advertised{ln, f.advertise}, nil
		}),
		kfake.GroupMinSessionTimeout(time.Second),
	)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("kfake listening on", f.listen, "advertising", f.advertise)
	<-ctx.Done()
	return nil
}

type advertised struct {
	net.Listener
	addr string
}

func (a advertised) Addr() net.Addr {
	ta, err := net.ResolveTCPAddr("tcp", a.addr)
	if err != nil {
		return a.Listener.Addr()
	}
	return ta
}

var _ = sql.ErrNoRows
