package telemetry_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/sqliteoutbox"
	"github.com/eventkit/eventkit/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTraceFromRequestToHandler follows one trace from the request that
// wrote an event to the outbox, through the relay's publish, to the
// consumer's handler: one trace id, request -> publish -> handle.
func TestTraceFromRequestToHandler(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := trace.NewTracerProvider(trace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	db, err := sql.Open("sqlite", sqliteoutbox.DSN(filepath.Join(t.TempDir(), "svc.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := sqliteoutbox.New(db, sqliteoutbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b := memorybroker.New(memorybroker.Options{})
	defer b.Close(context.Background())

	// The "HTTP request": a server span, and the event written in its tx.
	reqCtx, reqSpan := tp.Tracer("test").Start(ctx, "POST /orders", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
	tx, err := db.BeginTx(reqCtx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := eventkit.New("order.created", "application/json", []byte(`{"order_id":"o-1"}`), eventkit.WithSubject("o-1"))
	if err := store.Add(reqCtx, tx, "orders", ev); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	reqSpan.End()

	handled := make(chan oteltrace.SpanContext, 1)
	c, err := consumer.New(b, consumer.Config{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.HandleFunc("orders", "billing", func(ctx context.Context, e eventkit.Event) error {
		handled <- oteltrace.SpanContextFromContext(ctx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{}, 2)
	go func() { _ = c.Run(runCtx); done <- struct{}{} }()
	relay := outbox.NewRelay(store, telemetry.Publisher(b, tp), outbox.RelayConfig{PollInterval: 50 * time.Millisecond})
	go func() { _ = relay.Run(runCtx); done <- struct{}{} }()

	var handlerSC oteltrace.SpanContext
	select {
	case handlerSC = <-handled:
	case <-ctx.Done():
		t.Fatal("event not handled")
	}
	stop()
	<-done
	<-done

	byName := map[string]trace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = s
	}
	req, pub, handle, send := byName["POST /orders"], byName["publish orders"], byName["handle orders"], byName["send orders"]
	if req == nil || pub == nil || handle == nil || send == nil {
		t.Fatalf("spans: %v", keys(byName))
	}
	traceID := req.SpanContext().TraceID()
	for _, s := range []trace.ReadOnlySpan{pub, handle} {
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in trace %s, want %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
	}
	if pub.Parent().SpanID() != req.SpanContext().SpanID() {
		t.Errorf("publish span's parent is %s, want the request span %s", pub.Parent().SpanID(), req.SpanContext().SpanID())
	}
	if handle.Parent().SpanID() != pub.SpanContext().SpanID() {
		t.Errorf("handle span's parent is %s, want the publish span %s", handle.Parent().SpanID(), pub.SpanContext().SpanID())
	}
	if handlerSC.SpanID() != handle.SpanContext().SpanID() {
		t.Errorf("the handler's ctx carries span %s, want the handle span %s", handlerSC.SpanID(), handle.SpanContext().SpanID())
	}
	if pub.SpanKind() != oteltrace.SpanKindProducer || handle.SpanKind() != oteltrace.SpanKindConsumer {
		t.Errorf("span kinds: publish %v, handle %v", pub.SpanKind(), handle.SpanKind())
	}
	// The relay's batch span links to the event's producer span.
	if l := send.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != req.SpanContext().SpanID() || l[0].SpanContext.TraceID() != traceID {
		t.Errorf("send span links %v, want one link to the request span %s", l, req.SpanContext().SpanID())
	}
}

func keys(m map[string]trace.ReadOnlySpan) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
