// Package svc is the plumbing the three example programs share: flags with
// environment defaults, logging, tracing, signal handling and opening the
// broker and the database. The eventkit calls that matter (outbox, relay,
// consumer, inbox) are in each program's main.go, where you can read them.
package svc

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// Flags are the settings every example program takes.
type Flags struct {
	Broker      string
	Store       string
	TopicPrefix string
	AckWait     time.Duration
	LogLevel    string
}

// Register defines the common flags on fs, with defaults from the
// environment, for the service named service.
func Register(fs *flag.FlagSet, service string) *Flags {
	f := &Flags{}
	envString(fs, &f.Broker, "broker", "EVENTKIT_BROKER", "nats://127.0.0.1:4222", "broker URL: "+connect.BrokerSchemes)
	envString(fs, &f.Store, "store", strings.ToUpper(service)+"_STORE", "./"+service+".db", "this service's database URL: "+connect.StoreSchemes)
	envString(fs, &f.TopicPrefix, "topic-prefix", "EVENTKIT_TOPIC_PREFIX", "",
		"put before every topic name, e.g. \"test1.\" for topics test1.shop.orders and test1.shop.inventory; all three programs must use the same one")
	fs.DurationVar(&f.AckWait, "ack-wait", 30*time.Second,
		"how long the broker waits for an ack before it delivers an event again; after a crash, the events that were in flight come back after this long")
	envString(fs, &f.LogLevel, "log-level", "EVENTKIT_LOG_LEVEL", "info", "debug, info, warn or error; debug also logs every trace span")
	return f
}

// Usage sets fs's usage message: what the program does, then its flags.
func Usage(fs *flag.FlagSet, text string) {
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), strings.TrimSpace(text))
		fmt.Fprintf(fs.Output(), "\nFlags:\n")
		fs.PrintDefaults()
	}
}

// Topics returns the demo's topics with the prefix.
func (f *Flags) Topics() shop.Topics {
	return shop.Topics{Orders: f.TopicPrefix + shop.DefaultTopics.Orders, Inventory: f.TopicPrefix + shop.DefaultTopics.Inventory}
}

// LogAttrs describe where the program runs, for its first log line
// (passwords hidden).
func (f *Flags) LogAttrs() []any {
	t := f.Topics()
	return []any{"broker", connect.Redact(f.Broker), "store", connect.Redact(f.Store), "orders_topic", t.Orders, "inventory_topic", t.Inventory}
}

// Logger returns a text logger to stderr with the service's name on every
// line.
func (f *Flags) Logger(service string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("service", service), nil
}

// Open connects to the broker and opens the service's database, with the
// service's own outbox table (demo_<service>_outbox).
func (f *Flags) Open(ctx context.Context, service string, log *slog.Logger) (broker.Broker, *connect.Store, error) {
	st, err := connect.OpenStore(ctx, f.Store, connect.WithOutboxTable(shop.OutboxTable(service)))
	if err != nil {
		return nil, nil, err
	}
	b, err := connect.Broker(ctx, f.Broker, connect.WithLogger(log.With("component", "broker")))
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return b, st, nil
}

// InboxTable is the inbox table of a service, as the demo names it.
func InboxTable(service string) string { return shop.InboxTable(service) }

// DB wraps the store's database for the demo's services.
func DB(st *connect.Store) shop.DB { return shop.DB{DB: st.SQL, Dialect: st.Dialect} }

// InTx adapts a service method that takes the transaction to a consumer
// handler: the consumer's inbox (sqlinbox) begins the transaction, records
// the event id in it, and commits it after the handler returns nil.
func InTx(fn shop.TxFunc) func(ctx context.Context, ev eventkit.Event) error {
	return func(ctx context.Context, ev eventkit.Event) error {
		tx, err := sqlinbox.Tx(ctx)
		if err != nil {
			return err
		}
		return fn(ctx, tx, ev)
	}
}

// Tracing installs an OpenTelemetry TracerProvider. Spans get real trace
// ids, which the outbox copies into each event's traceparent extension and
// the consumer continues, so one trace id follows an order through the three
// services. With log level debug every span is logged; a real deployment
// would install an OTLP exporter here instead.
func Tracing(log *slog.Logger) (shutdown func(context.Context) error) {
	var opts []sdktrace.TracerProviderOption
	if log.Enabled(context.Background(), slog.LevelDebug) {
		opts = append(opts, sdktrace.WithSyncer(logExporter{log}))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	return tp.Shutdown
}

// TraceID is the trace id of ctx's span, for log lines.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

type logExporter struct{ log *slog.Logger }

func (e logExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	for _, s := range spans {
		e.log.Debug("span", "name", s.Name(), "trace_id", s.SpanContext().TraceID(), "span_id", s.SpanContext().SpanID(),
			"parent_span_id", s.Parent().SpanID(), "duration", s.EndTime().Sub(s.StartTime()))
	}
	return nil
}

func (logExporter) Shutdown(context.Context) error { return nil }

// Main runs run with a context that ends on SIGINT or SIGTERM, and exits 1
// if it fails.
func Main(log *slog.Logger, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() { log.Info("shutting down") })
	if err := run(ctx); err != nil {
		log.Error("stopped", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

// envString defines a string flag defaulting to the environment variable
// env, or else to def. The usage shows def, never the variable's value: it
// may hold a password.
func envString(fs *flag.FlagSet, p *string, name, env, def, usage string) {
	fs.StringVar(p, name, envOr(env, def), usage+" (env "+env+")")
	fs.Lookup(name).DefValue = def
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
