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
	"github.com/eventkit/eventkit/internal/benchkit/raw"
	"github.com/eventkit/eventkit/internal/sqldialect"
)

func init() { commands = append(commands, newBenchCmd) }

type benchOpts struct {
	events, size, batch, relayBatch, rate int
	concurrency                           []int
	duration                              time.Duration
	json                                  bool
	plot, compare                         string
	rounds                                int
	meter                                 *benchkit.Meter
}

func newBenchCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	o := &benchOpts{}
	cmd := &cobra.Command{
		Use:   "bench publish|consume|relay",
		Short: "Measure your own broker and database: publish, consume and relay rates and latencies",
		Long: `bench measures eventkit on the servers you give it, like nats bench or
pgbench: events/s and latency percentiles, as a table or --json.

Beside events/s it prints the CPU time per event (µs): of this process
(getrusage), and of the servers where they run on this machine (the
process listening on the URL's port and its children, from /proc; "-"
when they are remote or cannot be read). On a terminal it also prints a
latency histogram; --plot out.svg writes a chart of throughput over time
and latency percentiles. publish and consume --compare raw run the
broker's own client library (nats.go, go-redis, franz-go for publish)
beside eventkit on your servers, one at a time, alternated for --rounds
rounds, and print one line per run and a summary with the ratios.

It never touches data it did not create: every run uses its own uniquely
named topic (eventkit-bench-<time>-<random>), groups and, for relay, outbox
table (eventkit_bench_<random>, whatever EVENTKIT_OUTBOX_TABLE says), and
deletes them when it ends, on SIGINT too. On a terminal it prints its
progress once a second; interrupted, it prints what it measured so far.

The comparisons with Watermill are Go benchmarks in the bench/ modules
(cd bench/consumer && go test -run '^$' -bench . -benchtime 1x).`,
	}
	// onBroker is the RunE of publish and consume: it checks --compare,
	// opens the broker and runs fn on it with a fresh topic name.
	onBroker := func(fn func(ctx context.Context, b broker.Broker, topic string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if o.compare != "" && o.compare != "raw" {
				return fmt.Errorf("--compare %q: the only baseline is raw", o.compare)
			}
			ctx := cmd.Context()
			b, err := c.openBroker(ctx)
			if err != nil {
				return err
			}
			defer b.Close(context.Background())
			return fn(ctx, b, benchTopic())
		}
	}
	publish := &cobra.Command{
		Use:     "publish",
		Short:   "Publish events in batches with confirms",
		Example: `  eventkit bench publish --broker nats://127.0.0.1:4222 --events 100000 --batch 100`,
		Args:    cobra.NoArgs,
		RunE: onBroker(func(ctx context.Context, b broker.Broker, topic string) error {
			defer cleanupTopic(b, topic, "bench")
			prepare(ctx, b, topic, "bench")
			o.meter = benchkit.NewMeter(c.broker)
			title := fmt.Sprintf("broker %s, %d-byte events, batches of %d", brokerScheme(c.broker), o.size, o.batch)
			if o.compare != "" {
				rawTopic := topic + "-raw"
				defer cleanupTopic(b, rawTopic, "bench")
				prepare(ctx, b, rawTopic, "bench")
				return o.compareRaw(ctx, g, title, "published",
					func(ctx context.Context, p *benchkit.Progress) (benchkit.Result, error) {
						return raw.Publish(ctx, b, rawTopic, benchkit.Events(o.events, o.size), o.batch, p)
					},
					func(ctx context.Context, p *benchkit.Progress) (benchkit.Result, error) {
						return benchkit.Publish(ctx, b, topic, benchkit.Events(o.events, o.size), o.batch, p)
					})
			}
			res, err := o.measure(g, "published", o.events, func(p *benchkit.Progress) (benchkit.Result, error) {
				return benchkit.Publish(ctx, b, topic, benchkit.Events(o.events, o.size), o.batch, p)
			})
			return o.finish(g.stdout, title, err, res)
		}),
	}
	consume := &cobra.Command{
		Use:     "consume",
		Short:   "Consume pre-published events with the consumer runtime (acks on)",
		Example: `  eventkit bench consume --broker nats://127.0.0.1:4222 --events 100000 --concurrency 1,8,64`,
		Args:    cobra.NoArgs,
		RunE: onBroker(func(ctx context.Context, b broker.Broker, topic string) error {
			groups := make([]string, len(o.concurrency))
			for i := range groups {
				groups[i] = fmt.Sprintf("eventkit-bench-g%d", i)
			}
			if o.compare != "" {
				groups = nil
				for r := range max(o.rounds, 1) {
					groups = append(groups, fmt.Sprintf("eventkit-bench-raw-%d", r), fmt.Sprintf("eventkit-bench-ek-%d", r))
				}
			}
			defer cleanupTopic(b, topic, groups...)
			prepare(ctx, b, topic, groups...)
			o.meter = benchkit.NewMeter(c.broker)
			title := fmt.Sprintf("broker %s, %d-byte events", brokerScheme(c.broker), o.size)
			p := o.progress(g, "published", o.events)
			_, err := benchkit.Publish(ctx, b, topic, benchkit.Events(o.events, o.size), 500, p.p)
			p.stop()
			if err != nil {
				return o.finish(g.stdout, title, err)
			}
			if o.compare != "" {
				conc := o.concurrency[0]
				var rr, er int
				return o.compareRaw(ctx, g, fmt.Sprintf("%s, eventkit concurrency %d", title, conc), "consumed",
					func(ctx context.Context, p *benchkit.Progress) (benchkit.Result, error) {
						rr++
						return raw.Consume(ctx, b, topic, fmt.Sprintf("eventkit-bench-raw-%d", rr-1), o.events, p)
					},
					func(ctx context.Context, p *benchkit.Progress) (benchkit.Result, error) {
						er++
						return benchkit.Consume(ctx, b, topic, fmt.Sprintf("eventkit-bench-ek-%d", er-1), o.events, conc, p)
					})
			}
			var results []benchkit.Result
			for i, conc := range o.concurrency {
				res, err := o.measure(g, fmt.Sprintf("consumed (concurrency %d)", conc), o.events, func(p *benchkit.Progress) (benchkit.Result, error) {
					return benchkit.Consume(ctx, b, topic, groups[i], o.events, conc, p)
				})
				results = append(results, res)
				if err != nil {
					return o.finish(g.stdout, title, err, results...)
				}
			}
			return o.finish(g.stdout, title, nil, results...)
		}),
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
			o.meter = benchkit.NewMeter(c.broker, store)
			drain, err := o.measure(g, "relayed", o.events, func(p *benchkit.Progress) (benchkit.Result, error) {
				return benchkit.RelayDrain(ctx, st.SQL, st.AddSQL, st.Outbox, b, topic, benchkit.Events(o.events, o.size), o.relayBatch, p)
			})
			if err != nil {
				return o.finish(g.stdout, title, err, drain)
			}
			n := int(float64(o.rate) * o.duration.Seconds())
			lat, err := o.measure(g, "confirmed", n, func(p *benchkit.Progress) (benchkit.Result, error) {
				return benchkit.RelayLatency(ctx, st.SQL, st.AddSQL, st.Outbox, b, topic, o.rate, o.duration, o.size, p)
			})
			return o.finish(g.stdout, title, err, drain, lat)
		},
	}
	for _, s := range []*cobra.Command{publish, consume, relay} {
		c.brokerFlag(s)
		s.Flags().IntVar(&o.events, "events", 100000, "number of events")
		s.Flags().IntVar(&o.size, "size", 1024, "payload bytes per event")
		s.Flags().BoolVar(&o.json, "json", false, "print JSON")
		s.Flags().StringVar(&o.plot, "plot", "", "write an SVG chart of throughput over time and latency percentiles to this file")
		cmd.AddCommand(s)
	}
	for _, s := range []*cobra.Command{publish, consume} {
		s.Flags().StringVar(&o.compare, "compare", "", `"raw": run the broker's own client library beside eventkit, alternated (NATS, Redis; Kafka for publish)`)
		s.Flags().IntVar(&o.rounds, "rounds", 3, "rounds of --compare (each runs raw and eventkit once)")
	}
	publish.Flags().IntVar(&o.batch, "batch", 100, "events per Publish call")
	relay.Flags().IntVar(&o.relayBatch, "batch", 500, "relay batch size")
	consume.Flags().IntSliceVar(&o.concurrency, "concurrency", []int{1, 8, 64}, "worker counts to measure (--compare: the first)")
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
	_ = d.DropPrefixed(ctx, sqldialect.SQLConn{Q: db}, prefix)
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
		if perr := o.writePlot(title, keep); perr != nil && err == nil {
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
	fmt.Fprintln(tw, "\tEVENTS\tSECONDS\tEVENTS/S\tP50\tP99\tMAX\tCLIENT µS/EV\tSERVER µS/EV\t")
	for _, r := range results {
		name := r.Name
		if r.Interrupted {
			name += " (interrupted)"
		}
		srv := "-"
		if us, ok := r.ServerCPUPerEvent(); ok {
			srv = fmt.Sprintf("%.1f", us)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%s\t%s\t%s\t%.1f\t%s\t\n", name, r.Events, r.Duration.Seconds(), r.Rate, ms(r.P50), ms(r.P99), ms(r.Max), r.ClientCPUPerEvent(), srv)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if srv := o.meter.ServerNames(); srv != "" {
		fmt.Fprintf(w, "server CPU: %s on this machine\n", srv)
	}
	if isTerminal(w) {
		for _, r := range results {
			benchkit.WriteHistogram(w, r.Name, r.Latencies, 40)
		}
	}
	return nil
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

// measure runs one measurement with its progress line, metering the CPU
// of this process and of the local servers, and sampling its progress
// for --plot.
func (o *benchOpts) measure(g *globals, what string, total int, fn func(p *benchkit.Progress) (benchkit.Result, error)) (benchkit.Result, error) {
	p := o.progress(g, what, total)
	defer p.stop()
	interval := time.Duration(0)
	if o.plot != "" {
		interval = 100 * time.Millisecond
	}
	return benchkit.Measure(o.meter, p.p, interval, func() (benchkit.Result, error) { return fn(p.p) })
}

// writePlot writes --plot's chart of results.
func (o *benchOpts) writePlot(title string, results []benchkit.Result) error {
	if o.plot == "" {
		return nil
	}
	if !strings.HasSuffix(strings.ToLower(o.plot), ".svg") {
		return fmt.Errorf("--plot %s: only .svg is written", o.plot)
	}
	f, err := os.Create(o.plot)
	if err != nil {
		return err
	}
	if err := benchkit.WritePlotSVG(f, title, results); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// isTerminal reports whether w is a terminal; the command's stdout is a
// scrubbing writer around os.Stdout, so any other writer is judged by
// os.Stdout.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		f = os.Stdout
	}
	return term.IsTerminal(int(f.Fd()))
}

// compareRaw runs the raw-client measurement (the baseline) and eventkit's
// one at a time, alternated for --rounds rounds (raw, eventkit, eventkit,
// raw, ...), and prints a line per run and the summary (or --json). When
// interrupted it prints what was measured and returns the interrupted
// error.
func (o *benchOpts) compareRaw(ctx context.Context, g *globals, title, what string, rawFn, ekFn func(context.Context, *benchkit.Progress) (benchkit.Result, error)) error {
	var last []benchkit.Result // each contender's last run, for --plot
	contender := func(name string, fn func(context.Context, *benchkit.Progress) (benchkit.Result, error)) benchkit.Contender {
		return benchkit.Contender{Name: name, Run: func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
			res, err := o.measure(g, name+" "+what, o.events, func(p *benchkit.Progress) (benchkit.Result, error) {
				clock.Start()
				defer clock.Stop()
				return fn(ctx, p)
			})
			res.Name = name
			last = append(last, res)
			if len(last) > 2 {
				last = last[1:]
			}
			return res.Events, res.Latencies, err
		}}
	}
	var out io.Writer
	if !o.json {
		out = g.stdout
		fmt.Fprintln(out, title)
	}
	rep, err := benchkit.Compare(ctx, benchkit.Options{Rounds: o.rounds, Meter: o.meter, Out: out},
		contender("raw", rawFn), contender("eventkit", ekFn))
	if errors.Is(err, raw.ErrNoBaseline) {
		return fmt.Errorf("--compare raw: %w", err)
	}
	interrupted := err != nil && ctx.Err() != nil
	if err == nil || interrupted {
		if o.json {
			if jerr := writeJSON(g.stdout, compareOut(rep)); jerr != nil && err == nil {
				err = jerr
			}
		} else if interrupted {
			rep.WriteSummary(g.stdout)
		}
		if perr := o.writePlot(title, last); perr != nil && err == nil {
			err = perr
		}
	}
	if interrupted {
		return errors.New("interrupted: the results above are what was measured before the signal")
	}
	return err
}

// compareJSON is `bench ... --compare raw --json`: every run and the
// summary (medians over the rounds; ratios to raw).
type compareJSON struct {
	Runs    []compareRunJSON     `json:"runs"`
	Summary []compareSummaryJSON `json:"summary"`
}

type compareRunJSON struct {
	Contender         string   `json:"contender"`
	Round             int      `json:"round"`
	Events            int      `json:"events"`
	Seconds           float64  `json:"seconds"`
	EventsPerSecond   float64  `json:"events_per_second"`
	P50Seconds        *float64 `json:"p50_seconds"`
	P99Seconds        *float64 `json:"p99_seconds"`
	ClientCPUPerEvent float64  `json:"client_cpu_us_per_event"`
	ServerCPUPerEvent *float64 `json:"server_cpu_us_per_event"`
}

type compareSummaryJSON struct {
	Contender         string   `json:"contender"`
	EventsPerSecond   float64  `json:"events_per_second"`
	RateVsRaw         float64  `json:"events_per_second_vs_raw"`
	ClientCPUPerEvent float64  `json:"client_cpu_us_per_event"`
	ClientCPUVsRaw    float64  `json:"client_cpu_vs_raw"`
	ServerCPUPerEvent *float64 `json:"server_cpu_us_per_event"`
	CPUVsRaw          float64  `json:"cpu_per_event_vs_raw"`
}

func compareOut(r benchkit.Report) compareJSON {
	out := compareJSON{Runs: []compareRunJSON{}, Summary: []compareSummaryJSON{}}
	for _, s := range r.Samples {
		j := compareRunJSON{Contender: s.Contender, Round: s.Round, Events: s.Events, Seconds: s.Duration.Seconds(), EventsPerSecond: s.Rate(),
			P50Seconds: secondsJSON(s.P50, s.P99 == 0), P99Seconds: secondsJSON(s.P99, s.P99 == 0), ClientCPUPerEvent: s.ClientPerEvent()}
		if s.CPU.HasServer {
			us := s.ServerPerEvent()
			j.ServerCPUPerEvent = &us
		}
		out.Runs = append(out.Runs, j)
	}
	for _, s := range r.Summary {
		j := compareSummaryJSON{Contender: s.Contender, EventsPerSecond: s.Rate, RateVsRaw: s.RateRatio, ClientCPUPerEvent: s.ClientUS, ClientCPUVsRaw: s.ClientRatio, CPUVsRaw: s.Ratio}
		if s.HasServer {
			us := s.ServerUS
			j.ServerCPUPerEvent = &us
		}
		out.Summary = append(out.Summary, j)
	}
	return out
}
