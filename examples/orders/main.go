// Command orders is the orders service of the eventkit examples: an HTTP API
// that places orders, and a consumer that confirms or cancels them when the
// inventory service answers.
//
//	POST /orders       {"customer_id":"c-1","product_sku":"SKU-KETTLE","quantity":2}
//	                   -> 201 {"id":"ord-...","status":"pending","trace_id":"..."}
//	GET  /orders/{id}  -> 200 {"id":"ord-...","status":"confirmed",...}
//	GET  /healthz      -> 200
//
// The request handler never publishes: it writes the order and its
// order.created event to the outbox table in one transaction (so both or
// neither exist), and the relay running in this process publishes the event
// after the commit. See ../README.md for a walk-through.
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
	"net/http"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/examples/svc"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/outbox"
)

const service = "orders"

func main() {
	flags := svc.Register(flag.CommandLine, service)
	listen := flag.String("listen", envOr("ORDERS_LISTEN", "127.0.0.1:8080"), "HTTP address to listen on, loopback by default (env ORDERS_LISTEN)")
	flag.Lookup("listen").DefValue = "127.0.0.1:8080" // never show the environment's value
	svc.Usage(flag.CommandLine, `
orders: the orders service of the eventkit examples.

It serves POST /orders and GET /orders/{id}, writes each order and its
order.created event in one transaction (the outbox), publishes the events with
the outbox relay, and consumes inventory.reserved / inventory.rejected to
confirm or cancel orders (emitting order.cancelled on a rejection).

Usage: orders [flags]`)
	flag.Parse()
	log, err := flags.Logger(service)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	svc.Main(log, func(ctx context.Context) error { return run(ctx, flags, *listen, log) })
}

func run(ctx context.Context, flags *svc.Flags, listen string, log *slog.Logger) error {
	defer svc.Tracing(log)(context.Background())
	b, st, err := flags.Open(ctx, service, log)
	if err != nil {
		return err
	}
	defer st.Close()
	defer b.Close(context.Background())

	// The business logic lives in examples/shop; this program wires it up.
	orders := &shop.Orders{DB: svc.DB(st), Topics: flags.Topics(), Outbox: st.AddSQL, Reg: shop.NewRegistry()}

	// Schema: the outbox table, the inbox table, the orders tables.
	in, err := sqlinbox.New(st.SQL, st.Dialect, sqlinbox.Options{Table: svc.InboxTable(service)})
	if err != nil {
		return err
	}
	for _, migrate := range []func(context.Context) error{st.Outbox.Migrate, in.Migrate, orders.Migrate} {
		if err := migrate(ctx); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}

	// The relay publishes what committed transactions wrote to the outbox.
	relay := outbox.NewRelay(st.Outbox, b, outbox.RelayConfig{Logger: log.With("component", "relay")})

	// The consumer: inventory's answers, handled once per event id thanks to
	// the inbox, inside the inbox's transaction.
	c, err := consumer.New(b, consumer.Config{
		Concurrency:    4,
		Inbox:          in,
		AckWait:        flags.AckWait,
		HandlerTimeout: 10 * time.Second,
		Retry:          consumer.RetryPolicy{MaxAttempts: 5, Initial: 100 * time.Millisecond, Max: 2 * time.Second},
		Logger:         log.With("component", "consumer"),
	})
	if err != nil {
		return err
	}
	err = c.HandleFunc(flags.Topics().Inventory, service, svc.InTx(func(ctx context.Context, tx *sql.Tx, ev eventkit.Event) error {
		if err := orders.OnInventory(ctx, tx, ev); err != nil {
			return err
		}
		var status string
		if err := tx.QueryRowContext(ctx, orders.DB.Q(`SELECT status FROM demo_orders WHERE id = ?`), ev.Subject).Scan(&status); err == nil {
			log.Info("order "+status, "order_id", ev.Subject, "event", ev.Type, "trace_id", svc.TraceID(ctx))
		}
		return nil
	}))
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: api(orders, log), ReadHeaderTimeout: 5 * time.Second}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return c.Run(ctx) })
	g.Go(func() error {
		log.Info("listening", append([]any{"addr", ln.Addr().String()}, flags.LogAttrs()...)...)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		// Graceful: finish the requests in progress. Orders they commit are
		// in the outbox; what the relay has not published yet it publishes
		// when the program starts again.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

// api is the HTTP interface. Each request runs in a server span: Place writes
// the span's trace context into the event (the traceparent extension), so
// the consumers downstream continue the same trace.
func api(orders *shop.Orders, log *slog.Logger) http.Handler {
	tracer := otel.Tracer("github.com/eventkit/eventkit/examples/orders")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			CustomerID string `json:"customer_id"`
			SKU        string `json:"product_sku"`
			Quantity   int    `json:"quantity"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad JSON: " + err.Error()})
			return
		}
		if req.CustomerID == "" || req.SKU == "" || req.Quantity < 1 || req.Quantity > 1000 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want customer_id, product_sku and a quantity of 1 to 1000"})
			return
		}
		id, err := orders.Place(r.Context(), req.CustomerID, req.SKU, req.Quantity)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown product " + req.SKU})
			return
		case err != nil:
			log.Error("place order", "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "could not place the order"})
			return
		}
		traceID := svc.TraceID(r.Context())
		log.Info("order placed", "order_id", id, "customer_id", req.CustomerID, "product_sku", req.SKU, "quantity", req.Quantity, "trace_id", traceID)
		w.Header().Set("Location", "/orders/"+id)
		writeJSON(w, http.StatusCreated, map[string]string{"id": id, "status": "pending", "trace_id": traceID})
	})
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		var o struct {
			ID         string `json:"id"`
			CustomerID string `json:"customer_id"`
			SKU        string `json:"product_sku"`
			Quantity   int    `json:"quantity"`
			Status     string `json:"status"`
		}
		err := orders.DB.QueryRowContext(r.Context(), orders.DB.Q(`SELECT id, customer_id, sku, quantity, status FROM demo_orders WHERE id = ?`),
			r.PathValue("id")).Scan(&o.ID, &o.CustomerID, &o.SKU, &o.Quantity, &o.Status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
		case err != nil:
			log.Error("read order", "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "could not read the order"})
		default:
			writeJSON(w, http.StatusOK, o)
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := orders.DB.PingContext(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})

	// One span per request, continuing the caller's trace if it sent a
	// traceparent header.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, route := mux.Handler(r) // "POST /orders", "GET /orders/{id}"
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, route, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
