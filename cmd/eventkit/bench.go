package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/benchkit"
)

func init() { commands = append(commands, newBenchCmd) }

type benchOpts struct {
	events, size, batch, relayBatch, rate int
	concurrency                           []int
	duration                              time.Duration
	json                                  bool
}

func newBenchCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	o := &benchOpts{}
	cmd := &cobra.Command{
		Use:   "bench publish|consume|relay",
		Short: "Measure your own broker and database: publish, consume and relay rates and latencies",
		Long: `bench measures eventkit on the servers you give it, like nats bench or
pgbench: events/s and latency percentiles, as a table or --json.

It never touches data it did not create: every run uses its own uniquely
named topic (eventkit-bench-<time>-<random>), groups and, for relay, outbox
table (eventkit_bench_<random>, whatever EVENTKIT_OUTBOX_TABLE says), and
deletes them when it ends, on SIGINT too. On a terminal it prints its
progress once a second; interrupted, it prints what it measured so far.

The comparisons with the raw client libraries and Watermill are Go
benchmarks: go test -run '^$' -bench . ./broker/... ./outbox/... ./consumer/...`,
	}
	publish := &cobra.Command{
		Use:     "publish",
		Short:   "Publish events in batches with confirms",
		Example: `  eventkit bench publish --broker nats://127.0.0.1:4222 --events 100000 --batch 100`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			b, err := c.openBroker(ctx)
			if err != nil {
				return err
			}
			defer b.Close(context.Background())
			topic := benchTopic()
			defer cleanupTopic(b, topic, "bench")
			prepare(ctx, b, topic, "bench")
			p := o.progress(g, "published", o.events)
			res, err := benchkit.Publish(ctx, b, topic, benchkit.Events(o.events, o.size), o.batch, p.p)
			p.stop()
			return o.finish(g.stdout, fmt.Sprintf("broker %s, %d-byte events, batches of %d", brokerScheme(c.broker), o.size, o.batch), err, res)
		},
	}
	consume := &cobra.Command{
		Use:     "consume",
		Short:   "Consume pre-published events with the consumer runtime (acks on)",
		Example: `  eventkit bench consume --broker nats://127.0.0.1:4222 --events 100000 --concurrency 1,8,64`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			b, err := c.openBroker(ctx)
			if err != nil {
				return err
			}
			defer b.Close(context.Background())
			topic := benchTopic()
			groups := make([]string, len(o.concurrency))
			for i := range groups {
				groups[i] = fmt.Sprintf("eventkit-bench-g%d", i)
			}
			defer cleanupTopic(b, topic, groups...)
			prepare(ctx, b, topic, groups...)
			title := fmt.Sprintf("broker %s, %d-byte events", brokerScheme(c.broker), o.size)
			p := o.progress(g, "published", o.events)
			_, err = benchkit.Publish(ctx, b, topic, benchkit.Events(o.events, o.size), 500, p.p)
			p.stop()
			if err != nil {
				return o.finish(g.stdout, title, err)
			}
			var results []benchkit.Result
			for i, conc := range o.concurrency {
				p := o.progress(g, fmt.Sprintf("consumed (concurrency %d)", conc), o.events)
				res, err := benchkit.Consume(ctx, b, topic, groups[i], o.events, conc, p.p)
				p.stop()
				results = append(results, res)
				if err != nil {
					return o.finish(g.stdout, title, err, results...)
				}
			}
			return o.finish(g.stdout, title, nil, results...)
		},
	}
	var store string
	relay := &cobra.Command{
		Use:   "relay",
		Short: "Drain a pre-filled outbox, then measure commit-to-ack latency at a steady rate",
		Long: `relay fills an outbox table of its own (eventkit_bench_<random>, created
for the run and dropped after it, never the table EVENTKIT_OUTBOX_TABLE or
--outbox-table names elsewhere) with --events events, measures how fast a
relay drains it to the broker, then commits events at --rate for --duration
and measures the time from each commit to the broker's confirm.`,
		Example: `  eventkit bench relay --store postgres://postgres@127.0.0.1:5432/test --broker nats://127.0.0.1:4222 --events 100000
  eventkit bench relay --store sqlite:///tmp/bench.db --broker nats://127.0.0.1:4222 --rate 1000 --duration 10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			// A table of the run's own, whatever the environment says:
			// the bench deletes and drains what it relays.
			bc := *c
			bc.store = store
			bc.outboxTable = "eventkit_bench_" + randomHex(4)
			bc.create = true
			st, err := bc.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			b, err := c.openBroker(ctx)
			if err != nil {
				return err
			}
			defer b.Close(context.Background())
			defer dropBenchTables(st.SQL, st.Dialect, bc.outboxTable)
			if err := st.Outbox.Migrate(ctx); err != nil {
				return err
			}
			topic := benchTopic()
			defer cleanupTopic(b, topic, "bench")
			prepare(ctx, b, topic, "bench")
			title := fmt.Sprintf("store %s, broker %s, %d-byte events", storeScheme(store), brokerScheme(c.broker), o.size)
			p := o.progress(g, "relayed", o.events)
			drain, err := benchkit.RelayDrain(ctx, st.SQL, st.AddSQL, st.Outbox, b, topic, benchkit.Events(o.events, o.size), o.relayBatch, p.p)
			p.stop()
			if err != nil {
				return o.finish(g.stdout, title, err, drain)
			}
			n := int(float64(o.rate) * o.duration.Seconds())
			p = o.progress(g, "confirmed", n)
			lat, err := benchkit.RelayLatency(ctx, st.SQL, st.AddSQL, st.Outbox, b, topic, o.rate, o.duration, o.size, p.p)
			p.stop()
			return o.finish(g.stdout, title, err, drain, lat)
		},
	}
	for _, s := range []*cobra.Command{publish, consume, relay} {
		c.brokerFlag(s)
		s.Flags().IntVar(&o.events, "events", 100000, "number of events")
		s.Flags().IntVar(&o.size, "size", 1024, "payload bytes per event")
		s.Flags().BoolVar(&o.json, "json", false, "print JSON")
		cmd.AddCommand(s)
	}
	publish.Flags().IntVar(&o.batch, "batch", 100, "events per Publish call")
	relay.Flags().IntVar(&o.relayBatch, "batch", 500, "relay batch size")
	consume.Flags().IntSliceVar(&o.concurrency, "concurrency", []int{1, 8, 64}, "worker counts to measure")
	relay.Flags().IntVar(&o.rate, "rate", 1000, "events/s committed in the latency phase")
	relay.Flags().DurationVar(&o.duration, "duration", 5*time.Second, "length of the latency phase")
	envFlag(relay.Flags(), &store, "store", "EVENTKIT_STORE", "", "database URL; the bench creates and drops its own table there")
	return cmd
}

// prepare creates groups where the broker needs them before publishing
// (RabbitMQ drops nothing silently: publishing to a topic with no queue
// fails).
func prepare(ctx context.Context, b broker.Broker, topic string, groups ...string) {
	if p, ok := b.(interface {
		Provision(ctx context.Context, topic string, groups ...string) error
	}); ok {
		_ = p.Provision(ctx, topic, groups...)
	}
}

// cleanupTopic deletes what a bench run created on the broker: its topic
// (stream, exchange, Kafka topic) and its groups, with the consumer
// runtime's dead-letter topic. It runs after the command's context ended,
// so it has its own deadline.
func cleanupTopic(b broker.Broker, topic string, groups ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, t := range []string{topic, topic + ".dlq"} {
		switch d := b.(type) {
		case interface {
			DeleteTopology(ctx context.Context, topic string, groups ...string) error
		}:
			_ = d.DeleteTopology(ctx, t, groups...)
		case interface {
			DeleteTopic(ctx context.Context, topic string, groups ...string) error
		}:
			_ = d.DeleteTopic(ctx, t, groups...)
		case interface {
			DeleteTopic(ctx context.Context, topic string) error
		}:
			_ = d.DeleteTopic(ctx, t)
		}
	}
}

// dropBenchTables drops every table, function and trigger whose name starts
// with prefix, a name unique to this run: the outbox table and whatever its
// migrations created beside it.
func dropBenchTables(db *sql.DB, d sqlinbox.Dialect, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	like := strings.ReplaceAll(prefix, "_", `\_`) + "%"
	var q string
	switch d {
	case sqlinbox.Postgres:
		q = `SELECT 'TABLE', quote_ident(relname) FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace = current_schema()::regnamespace AND relname LIKE $1 ESCAPE '\'
			UNION ALL SELECT 'FUNCTION', quote_ident(proname) || '()' FROM pg_proc WHERE pronamespace = current_schema()::regnamespace AND proname LIKE $1 ESCAPE '\' AND pronargs = 0`
	case sqlinbox.MySQL:
		q = `SELECT 'TABLE', CONCAT('` + "`" + `', table_name, '` + "`" + `') FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE ?`
	default:
		q = `SELECT 'TABLE', '"' || name || '"' FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\'`
	}
	rows, err := db.QueryContext(ctx, q, like)
	if err != nil {
		return
	}
	var drops []string
	for rows.Next() {
		var kind, name string
		if rows.Scan(&kind, &name) == nil {
			drops = append(drops, "DROP "+kind+" IF EXISTS "+name)
		}
	}
	rows.Close()
	for _, s := range drops {
		if d == sqlinbox.Postgres {
			s += " CASCADE"
		}
		_, _ = db.ExecContext(ctx, s)
	}
}

type progressLine struct {
	p    *benchkit.Progress
	once sync.Once
	done chan struct{}
	wg   sync.WaitGroup
}

// progress prints "<what> N of total" on stderr once a second while a
// measurement runs, when stderr is a terminal.
func (o *benchOpts) progress(g *globals, what string, total int) *progressLine {
	pl := &progressLine{p: &benchkit.Progress{}, done: make(chan struct{})}
	f, ok := g.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return pl
	}
	pl.wg.Add(1)
	go func() {
		defer pl.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-pl.done:
				fmt.Fprintf(f, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(f, "\r\033[K%s %d of %d", what, pl.p.Done(), total)
			}
		}
	}()
	return pl
}

func (pl *progressLine) stop() {
	pl.once.Do(func() { close(pl.done) })
	pl.wg.Wait()
}

// finish prints the results measured (also when err says the run was
// interrupted, with what was completed by then) and returns err.
func (o *benchOpts) finish(w io.Writer, title string, err error, results ...benchkit.Result) error {
	interrupted := errors.Is(err, context.Canceled)
	var keep []benchkit.Result
	for _, r := range results {
		if r.Duration > 0 && (err == nil || r.Interrupted || interrupted) {
			keep = append(keep, r)
		}
	}
	if len(keep) > 0 && (err == nil || interrupted) {
		if perr := o.print(w, title, keep...); perr != nil && err == nil {
			err = perr
		}
	}
	if interrupted {
		return errors.New("interrupted: the results above are what was measured before the signal")
	}
	return err
}

func (o *benchOpts) print(w io.Writer, title string, results ...benchkit.Result) error {
	if o.json {
		return writeJSON(w, benchOut(results))
	}
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tEVENTS\tSECONDS\tEVENTS/S\tP50\tP99\tMAX\t")
	for _, r := range results {
		name := r.Name
		if r.Interrupted {
			name += " (interrupted)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%s\t%s\t%s\t\n", name, r.Events, r.Duration.Seconds(), r.Rate, ms(r.P50), ms(r.P99), ms(r.Max))
	}
	return tw.Flush()
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

func benchTopic() string {
	return "eventkit-bench-" + time.Now().UTC().Format("20060102-150405") + "-" + randomHex(3)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// brokerScheme and storeScheme name a server by its kind only: a bench
// title has no need for hosts or credentials.
func brokerScheme(u string) string { return schemeOf(u) }
func storeScheme(u string) string  { return schemeOf(u) }

func schemeOf(u string) string {
	if i := strings.Index(u, "://"); i > 0 {
		return u[:i]
	}
	if strings.HasSuffix(u, ".db") || strings.HasSuffix(u, ".sqlite") {
		return "sqlite"
	}
	return "(unknown scheme)"
}
