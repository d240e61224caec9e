package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/redact"
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
pgbench: events/s and latency percentiles, as a table or --json. It creates
its own topics (bench-<time>) and outbox table (eventkit_bench_outbox).

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
			prepare(ctx, b, topic)
			res, err := benchkit.Publish(ctx, b, topic, benchkit.Events(o.events, o.size), o.batch)
			if err != nil {
				return err
			}
			return o.print(g.stdout, fmt.Sprintf("broker %s, %d-byte events, batches of %d", redact.URL(c.broker), o.size, o.batch), res)
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
			var results []benchkit.Result
			for i := range o.concurrency {
				prepare(ctx, b, topic, fmt.Sprintf("g%d", i))
			}
			if _, err := benchkit.Publish(ctx, b, topic, benchkit.Events(o.events, o.size), 500); err != nil {
				return err
			}
			for i, conc := range o.concurrency {
				res, err := benchkit.Consume(ctx, b, topic, fmt.Sprintf("g%d", i), o.events, conc)
				if err != nil {
					return err
				}
				results = append(results, res)
			}
			return o.print(g.stdout, fmt.Sprintf("broker %s, %d-byte events", redact.URL(c.broker), o.size), results...)
		},
	}
	relay := &cobra.Command{
		Use:   "relay",
		Short: "Drain a pre-filled outbox, then measure commit-to-ack latency at a steady rate",
		Example: `  eventkit bench relay --store postgres://postgres@127.0.0.1:5432/test --broker nats://127.0.0.1:4222 --events 100000
  eventkit bench relay --store sqlite:///tmp/bench.db --broker nats://127.0.0.1:4222 --rate 1000 --duration 10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if c.outboxTable == "" {
				c.outboxTable = "eventkit_bench_outbox"
			}
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			b, err := c.openBroker(ctx)
			if err != nil {
				return err
			}
			defer b.Close(context.Background())
			if err := st.Outbox.Migrate(ctx); err != nil {
				return err
			}
			if _, err := st.SQL.ExecContext(ctx, "DELETE FROM "+c.outboxTable); err != nil {
				return err
			}
			topic := benchTopic()
			prepare(ctx, b, topic, "bench")
			drain, err := benchkit.RelayDrain(ctx, st.SQL, st.AddSQL, st.Outbox, b, topic, benchkit.Events(o.events, o.size), o.relayBatch)
			if err != nil {
				return err
			}
			lat, err := benchkit.RelayLatency(ctx, st.SQL, st.AddSQL, st.Outbox, b, topic, o.rate, o.duration, o.size)
			if err != nil {
				return err
			}
			return o.print(g.stdout, fmt.Sprintf("store %s, broker %s, %d-byte events", redact.URL(c.store), redact.URL(c.broker), o.size), drain, lat)
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
	c.storeFlags(relay)
	return cmd
}

// prepare creates groups where the broker needs them before publishing
// (RabbitMQ drops nothing silently: publishing to a topic with no queue
// fails).
func prepare(ctx context.Context, b broker.Broker, topic string, groups ...string) {
	if p, ok := b.(interface {
		Provision(ctx context.Context, topic string, groups ...string) error
	}); ok {
		if len(groups) == 0 {
			groups = []string{"bench"}
		}
		_ = p.Provision(ctx, topic, groups...)
	}
}

func (o *benchOpts) print(w io.Writer, title string, results ...benchkit.Result) error {
	if o.json {
		return writeJSON(w, results)
	}
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tEVENTS\tSECONDS\tEVENTS/S\tP50\tP99\tMAX\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%s\t%s\t%s\t\n", r.Name, r.Events, r.Duration.Seconds(), r.Rate, ms(r.P50), ms(r.P99), ms(r.Max))
	}
	return tw.Flush()
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

func benchTopic() string { return "bench-" + time.Now().UTC().Format("20060102-150405.000000") }
