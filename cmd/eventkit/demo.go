package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/natsbroker/natsembed"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/internal/demo"
	"github.com/eventkit/eventkit/internal/redact"
)

func init() { commands = append(commands, newDemoCmd) }

type demoOpts struct {
	orders   int
	json     bool
	broker   string
	store    string
	dir      string
	noFaults bool
	timeout  time.Duration
	relayFmt string
}

func newDemoCmd(g *globals) *cobra.Command {
	o := &demoOpts{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run three services (orders, inventory, notifications) through faults and check the result",
		Long: `demo runs three example services in one process, each with its own database,
outbox and inbox, talking only through events:

  orders         places orders; writes order.created (Protobuf) to its outbox in
                 the same transaction; cancels an order when inventory rejects it
                 (order.cancelled, a compensating event)
  inventory      reserves stock with compare-and-swap (never below zero) and
                 emits inventory.reserved or inventory.rejected
  notifications  records exactly one notification per order

By default it needs no servers: NATS JetStream runs embedded in the process
and each service has a SQLite database in a temporary directory.

While it runs it injects faults: the orders relay is killed and restarted
mid-stream, one ack in ten is lost (so the broker delivers the event again),
a poison event is published, and the inventory consumer is restarted with
work in flight. At the end it checks the databases: every order is either
confirmed, reserved once and notified once, or cancelled and notified once;
stock never goes negative; the poison event is in the dead letters.
The exit status is 0 if the verdict passes, 3 if it fails, 1 on errors.

With --relay-format debezium the relays stand in for Debezium: they publish
each outbox row as Debezium's outbox event router would under the
configuration of docs/debezium.md (Kafka Connect's record on Kafka, Debezium
Server's NATS JetStream sink message on NATS), and the consumers read them
through debezium.Wrap; the verdict is the same.`,
		Example: `  eventkit demo
  eventkit demo --orders 2000 --json
  eventkit demo --relay-format debezium
  eventkit demo --broker nats://127.0.0.1:4222 --store postgres://postgres@127.0.0.1:5432/test
  eventkit demo --broker amqp://guest:guest@127.0.0.1:5672/ --store mysql://root@127.0.0.1:3306/test`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.Context(), g, o) },
	}
	f := cmd.Flags()
	f.IntVar(&o.orders, "orders", 500, "number of orders to place")
	f.BoolVar(&o.json, "json", false, "print the summary as JSON (no progress display)")
	f.StringVar(&o.broker, "broker", "", "broker URL instead of the embedded NATS server: "+connect.BrokerSchemes)
	f.StringVar(&o.store, "store", "", "one database URL for all three services instead of SQLite files: "+connect.StoreSchemes)
	f.StringVar(&o.dir, "dir", "", "directory for the embedded server's and SQLite's files (default: a temporary directory, removed afterwards)")
	f.BoolVar(&o.noFaults, "no-faults", false, "do not inject faults")
	f.DurationVar(&o.timeout, "timeout", 3*time.Minute, "give up if the services have not settled by then")
	f.StringVar(&o.relayFmt, "relay-format", demo.RelayCloudEvents, "how the relays publish: cloudevents (eventkit's encoding) or debezium (as Debezium's outbox event router; NATS or Kafka)")
	return cmd
}

func runDemo(ctx context.Context, g *globals, o *demoOpts) error {
	if o.orders < 1 || o.orders > 1_000_000 {
		return usageError{fmt.Errorf("--orders must be between 1 and 1000000, not %d", o.orders), "eventkit demo"}
	}
	if o.relayFmt != demo.RelayCloudEvents && o.relayFmt != demo.RelayDebezium {
		return usageError{fmt.Errorf("--relay-format must be %s or %s, not %q", demo.RelayCloudEvents, demo.RelayDebezium, o.relayFmt), "eventkit demo"}
	}
	dir := o.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "eventkit-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	log := g.logger()
	if !o.json && g.logLevel == "info" {
		log = nil // the progress display and summary say what matters
	}

	// The broker: embedded NATS JetStream unless a URL is given.
	var b broker.Broker
	where := ""
	topicSuffix := ""
	blog := log
	if blog == nil {
		blog = slog.New(slog.DiscardHandler)
	}
	if o.broker == "" {
		emb, err := natsembed.Start(ctx, filepath.Join(dir, "nats"), natsembed.Options{InProcessOnly: true, Broker: natsbroker.Options{Logger: blog}})
		if err != nil {
			return fmt.Errorf("start embedded NATS: %w", err)
		}
		defer emb.Close(context.Background())
		b = emb.Broker
		where = "embedded NATS JetStream"
	} else {
		var err error
		if b, err = connect.Broker(ctx, o.broker, connect.WithLogger(blog)); err != nil {
			return err
		}
		defer b.Close(context.Background())
		where = redact.URL(o.broker)
		// A real broker keeps earlier runs' events: use fresh topics.
		topicSuffix = "-" + time.Now().UTC().Format("20060102-150405")
	}

	// The databases: one SQLite file per service unless a URL is given.
	stores := map[string]*connect.Store{}
	defer func() {
		for _, s := range stores {
			s.Close()
		}
	}()
	dbWhere := "SQLite files in " + dir
	for _, svc := range []string{demo.SvcOrders, demo.SvcInventory, demo.SvcNotifications, demo.SvcOps} {
		url := "sqlite://" + filepath.Join(dir, svc+".db")
		if o.store != "" {
			url = o.store
			dbWhere = redact.URL(o.store)
		}
		st, err := connect.OpenStore(ctx, url, connect.WithOutboxTable(shop.OutboxTable(svc)))
		if err != nil {
			return err
		}
		stores[svc] = st
	}

	cfg := demo.Config{
		Orders: o.orders, Broker: b, Stores: stores, Faults: !o.noFaults, Timeout: o.timeout, RelayFormat: o.relayFmt,
		Topics: shop.Topics{Orders: "demo.orders" + topicSuffix, Inventory: "demo.inventory" + topicSuffix},
	}
	if log != nil {
		cfg.Logger = log
	}
	var bar *progressbar.ProgressBar
	if !o.json {
		fmt.Fprintf(g.stdout, "eventkit demo: %d orders through orders -> inventory -> notifications\n  broker: %s\n  relays: %s\n  stores: %s\n  faults: %s\n\n",
			o.orders, where, o.relayFmt, dbWhere, map[bool]string{true: "relay kill, lost acks, poison event, consumer restart", false: "none"}[cfg.Faults])
		if f, ok := g.terminal.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			bar = progressbar.NewOptions(o.orders*2,
				progressbar.OptionSetWriter(g.stderr),
				progressbar.OptionSetDescription("placing and settling orders"),
				progressbar.OptionShowCount(),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish())
			cfg.Progress = func(p demo.Progress) {
				_ = bar.Set(p.Placed + p.Notified)
				bar.Describe(fmt.Sprintf("placed %d, published %d, decided %d, notified %d", p.Placed, p.Published, p.Decided, p.Notified))
			}
		}
	}
	sum, err := demo.Run(ctx, cfg)
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return err
	}
	if o.json {
		if err := writeJSON(g.stdout, demoOut(sum)); err != nil {
			return err
		}
	} else {
		printSummary(g.stdout, sum)
	}
	if sum.Interrupted {
		return errors.New("interrupted: the figures above are what happened before the signal; no verdict was computed")
	}
	if !sum.OK() {
		return verdictError{"the consistency verdict failed: " + strings.Join(sum.Verdict.Problems, "; ")}
	}
	return nil
}

func printSummary(w io.Writer, s demo.Summary) {
	v := s.Verdict
	fmt.Fprintf(w, "orders placed        %6d   (%d confirmed, %d cancelled by compensation)\n", s.Orders, v.Confirmed, v.Cancelled)
	fmt.Fprintf(w, "events published     %6d   (by the outbox relays, restarted %d times mid-stream)\n", s.Published, s.RelayRestarts)
	fmt.Fprintf(w, "events handled       %6d\n", s.Delivered)
	fmt.Fprintf(w, "duplicates skipped   %6d   (%d acks lost on purpose; consumer restarted %d times)\n", s.Duplicates, s.LostAcks, s.ConsumerRestarts)
	fmt.Fprintf(w, "retried              %6d\n", s.Retried)
	fmt.Fprintf(w, "dead-lettered        %6d", s.DeadLettered)
	if s.PoisonEventID != "" {
		fmt.Fprintf(w, "   (poison event %s in the dead letters: %v)", s.PoisonEventID, s.PoisonInDLQ)
	}
	fmt.Fprintf(w, "\nnotifications        %6d\n", v.Notifications)
	fmt.Fprintf(w, "elapsed              %6.1fs\n\n", s.Elapsed.Seconds())
	if s.Interrupted {
		fmt.Fprintln(w, "verdict: not computed (interrupted before the services settled)")
		return
	}
	if v.OK {
		fmt.Fprintln(w, "verdict: PASS — every order is confirmed (reserved once, notified once) or cancelled (notified once); stock never negative; poison event dead-lettered")
		return
	}
	fmt.Fprintln(w, "verdict: FAIL")
	for _, p := range v.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}
