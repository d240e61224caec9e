package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/internal/redact"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

func init() { commands = append(commands, newRelayCmd) }

type relayOpts struct {
	mode         string
	listen       string
	batch        int
	pollInterval time.Duration
	retention    time.Duration
	slot         string
	collectDLQ   []string
	migrate      bool
	verboseReady bool
	instance     string
	leaseTTL     time.Duration
}

func newRelayCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	o := &relayOpts{}
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run the outbox relay daemon: deliver committed outbox events to the broker",
		Long: `relay reads events that services committed to their outbox table and publishes
them to the broker, at least once and in order per subject, waiting for the
broker's confirms before it marks them delivered.

Modes:
  polling  (any store) claims committed events in order, wakes on commit
           (Postgres LISTEN/NOTIFY) and polls as a fallback.
  cdc      (Postgres) streams the outbox table's inserts from a logical
           replication slot (pgoutput) and advances the slot only after the
           broker confirmed them. Needs wal_level=logical.

Run several relays on one outbox for high availability: one holds the
outbox's leadership lock and publishes, the others wait to take over. On an
outbox split into partitions (eventkit migrate up --partitions N; polling
mode), the relays share the partitions instead: each leads about N/relays of
them (its lease renewed every --lease-ttl/4), hands some over when a relay
joins, and takes over those of a relay that stopped (at once) or died (when
its lease expires). Each relay is named by --instance (default hostname-pid);
it logs the partitions it takes and gives up, and eventkit outbox status
shows who leads which.

Both modes run the same relay engine (outbox.Relay) with the same flags and
meanings; only where the events come from differs. It checks the outbox
table (and, for cdc, the slot and publication) at start-up and exits with an
error if one is missing or does not fit, instead of retrying.

It serves /metrics (Prometheus, including eventkit_outbox_leader), /healthz
and /readyz on --listen, logs with log/slog, and stops gracefully on SIGTERM
or SIGINT. /readyz answers 200 "leader" or "standby", or 503 "starting",
"database unavailable" or "broker unavailable" (the error text only with
--verbose-readyz); on a partitioned outbox a second line names the instance
and the partitions it leads ("instance web-1-4242 partitions 0,5,9 of 16").
eventkit_outbox_leader{partition="p"} is 1 for each partition led.

Settings come from flags, then EVENTKIT_* variables, then the YAML file
given by --config (or EVENTKIT_CONFIG), then the defaults. The file's keys
are the flag names: store, broker, the tables and the log settings at the
top, the rest under "relay:" (see docs/config.md). An unknown key or a
value of the wrong type is an error naming the file and line.
--print-config shows the result, secrets redacted, and exits.`,
		Example: `  eventkit relay --store postgres://postgres@127.0.0.1:5432/test --broker nats://127.0.0.1:4222
  EVENTKIT_STORE=postgres://... EVENTKIT_BROKER=nats://... eventkit relay --mode cdc --listen 127.0.0.1:9464

  # with a file (deploy/systemd/relay.yaml is a full example):
  cat >relay.yaml <<EOF
  store: postgres://relay:CHANGE-ME@db.internal:5432/orders
  broker: nats://nats.internal:4222
  relay:
    mode: cdc
    batch: 1000
    collect-dlq: [orders.dlq]
  EOF
  eventkit relay --config relay.yaml --print-config   # what it would run with
  eventkit relay --config relay.yaml --batch 200      # a flag overrides the file`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRelay(cmd.Context(), g, c, o) },
	}
	c.storeFlags(cmd)
	c.brokerFlag(cmd)
	f := cmd.Flags()
	envFlag(f, &o.mode, "mode", "EVENTKIT_RELAY_MODE", "polling", "polling or cdc")
	envFlag(f, &o.listen, "listen", "EVENTKIT_LISTEN", "127.0.0.1:9464", "address for /metrics, /healthz and /readyz (loopback by default; empty disables)")
	f.IntVar(&o.batch, "batch", 500, "most events per publish round")
	f.DurationVar(&o.pollInterval, "poll-interval", time.Second, "polling mode: how often to look for events without a wake-up")
	f.DurationVar(&o.retention, "retention", 0, "keep delivered events this long (marked delivered) instead of deleting them")
	f.StringVar(&o.slot, "slot", "", "cdc mode: replication slot name (default: per database and table, see pgcdc.DefaultSlotName)")
	f.StringSliceVar(&o.collectDLQ, "collect-dlq", nil, "dead-letter topics to collect into the dead-letter table (repeatable; e.g. orders.dlq)")
	f.BoolVar(&o.migrate, "migrate", false, "create the outbox (and dead-letter) tables first if missing")
	envFlag(f, &o.instance, "instance", "EVENTKIT_RELAY_INSTANCE", "", "this relay's name in partition leases, logs and outbox status (default hostname-pid; must be unique)")
	f.DurationVar(&o.leaseTTL, "lease-ttl", 10*time.Second, "partitioned outbox: how long a partition lease lasts unless renewed (a dead relay's partitions wait this long)")
	f.BoolVar(&o.verboseReady, "verbose-readyz", false, "/readyz also prints the last database or broker error text (may reveal internals: keep the endpoint private)")
	withConfig(g, cmd)
	return cmd
}

func runRelay(ctx context.Context, g *globals, c *conn, o *relayOpts) error {
	log := g.logger()
	if o.mode != "polling" && o.mode != "cdc" {
		return usageError{fmt.Errorf("--mode must be polling or cdc, not %q", o.mode), "eventkit relay"}
	}
	// Bind the metrics address first: a port taken by another relay fails
	// at once, naming the address, before any connection is made.
	var ln net.Listener
	if o.listen != "" {
		var err error
		if ln, err = listen(o.listen); err != nil {
			return err
		}
		defer ln.Close()
	}
	c.create = o.migrate // a typo in a SQLite path must not leave an empty file
	st, err := c.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if o.mode == "cdc" && st.Pool == nil {
		return usageError{errors.New("--mode cdc needs a postgres:// store"), "eventkit relay"}
	}
	b, err := c.openBroker(ctx)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(cctx)
	}()
	if o.migrate {
		if err := st.Outbox.Migrate(ctx); err != nil {
			return fmt.Errorf("migrate outbox: %w", err)
		}
	}

	// Metrics on /metrics (and OTLP), traces over OTLP: see telemetry.go.
	tel, err := newTelemetry(ctx, "eventkit-relay")
	if err != nil {
		return err
	}
	defer tel.shutdown()
	mattrs := relayMetricAttrs(o.mode, c.outboxTable)
	metrics, err := relayMetrics(tel, o.mode, mattrs)
	if err != nil {
		return err
	}

	if o.instance == "" {
		o.instance = outbox.DefaultInstance()
	}
	rcfg := outbox.RelayConfig{BatchSize: o.batch, PollInterval: o.pollInterval, Retention: o.retention,
		Logger: log, Metrics: metrics, Instance: o.instance, LeaseTTL: o.leaseTTL}
	pub := tel.publisher(b)
	var rl relayRunner
	switch o.mode {
	case "cdc":
		r, err := pgcdc.New(st.Pool, pub, pgcdc.Config{Table: c.outboxTable, Slot: o.slot, RelayConfig: rcfg})
		if err != nil {
			return err
		}
		if err := r.Setup(ctx); err != nil {
			return fmt.Errorf("cdc setup (needs wal_level=logical): %w", err)
		}
		reg, err := r.ObserveSlot(tel.prom.MeterProvider, mattrs...)
		if err != nil {
			return err
		}
		defer reg.Unregister() //nolint:errcheck
		rl = cdcRunner{r}
	default:
		rl = pollingRunner{outbox.NewRelay(st.Outbox, pub, rcfg)}
	}

	if ln != nil {
		srv := serveHTTP(ln, tel.metricsHandler(), rl.Health, o.verboseReady)
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		log.Info("serving metrics and health", "addr", o.listen)
	}

	if len(o.collectDLQ) > 0 {
		dl, err := c.deadLetters(st)
		if err != nil {
			return err
		}
		if o.migrate {
			if err := dl.Migrate(ctx); err != nil {
				return fmt.Errorf("migrate dead letters: %w", err)
			}
		}
		subs, err := deadletter.Collect(ctx, b, dl, "", o.collectDLQ...)
		if err != nil {
			return err
		}
		defer func() {
			for _, s := range subs {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = s.Close(cctx)
				cancel()
			}
		}()
		log.Info("collecting dead letters", "topics", strings.Join(o.collectDLQ, ","), "table", dl.Table())
	}

	log.Info("relay starting", "mode", o.mode, "store", st.Dialect.String(), "broker", redact.URL(c.broker))
	err = rl.Run(ctx)
	if ctx.Err() != nil {
		log.Info("relay stopped", "stats", rl.Stats())
		return nil
	}
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// relayRunner is what the command needs of either relay.
type relayRunner interface {
	Run(ctx context.Context) error
	Health() outbox.Health
	Stats() string
}

type pollingRunner struct{ *outbox.Relay }

func (p pollingRunner) Stats() string { return p.Relay.Stats().String() }

type cdcRunner struct{ *pgcdc.Relay }

func (c cdcRunner) Stats() string { return fmt.Sprintf("%+v", c.Relay.Stats()) }

// listen binds the --listen address, with one clear error when it is taken.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("--listen %s: %w; pick another with --listen", addr, syscall.EADDRINUSE)
	}
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	return ln, nil
}

func serveHTTP(ln net.Listener, metrics http.Handler, health func() outbox.Health, verbose bool) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		h := health()
		code := http.StatusOK
		if !h.Ready() {
			code = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintln(w, h.Status())
		if h.PartitionCount > 1 {
			led := intsText(h.Partitions)
			if led == "" {
				led = "none"
			}
			fmt.Fprintf(w, "instance %s partitions %s of %d\n", h.Instance, led, h.PartitionCount)
		}
		if verbose {
			for _, err := range []error{h.StoreErr, h.BrokerErr} {
				if err != nil {
					fmt.Fprintln(w, err.Error())
				}
			}
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv
}
