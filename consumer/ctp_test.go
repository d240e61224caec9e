package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
	outboxpg "github.com/eventkit/eventkit/outbox/pgoutbox"
)

// Consume-transform-produce: the handler writes its output event to the
// outbox in the inbox transaction. A failed attempt leaves no output; a
// duplicate delivery adds none; the output is there exactly once.
func TestConsumeTransformProduceWithOutbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.Postgres.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	inTable, outTable := testenv.Name("inbox"), testenv.Name("outbox")
	in, err := sqlinbox.NewPgx(pool, sqlinbox.Options{Table: inTable})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ob, err := outboxpg.New(pool, outboxpg.Config{Table: outTable, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+inTable)
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+outTable+" CASCADE")
	})

	b := newBroker(t)
	topic := testenv.Name("orders")
	var attempts atomic.Int32
	c := newConsumer(t, b, consumer.Config{Concurrency: 4, Inbox: in, Retry: fastRetry(5)})
	_ = c.Handle(topic, "invoicing", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		out := eventkit.New("invoice.created", "application/json", []byte(`{}`),
			eventkit.WithSubject(e.Subject), eventkit.WithExtension("causationid", e.ID))
		tx, err := sqlinbox.PgxTx(ctx)
		if err != nil {
			return err
		}
		if err := ob.Add(ctx, tx, "invoices", out); err != nil {
			return err
		}
		if attempts.Add(1) == 1 {
			return errors.New("fails after writing to the outbox")
		}
		return nil
	}))
	start(t, c)
	order := ev("order.created", "o-1", `{}`)
	publish(t, b, topic, order, order, order)
	eventually(t, 10*time.Second, "settled", func() bool {
		s := c.Stats()
		return s.Handled == 1 && s.Duplicates == 2
	})
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+outTable+" WHERE type = 'invoice.created' AND extensions->>'causationid' = $1", order.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d invoice events in the outbox, want 1", n)
	}
}

// recTracer records the spans started through it.
type recTracer struct {
	embedded.TracerProvider
	mu    sync.Mutex
	spans []recSpan
}

type recTracerT struct {
	embedded.Tracer
	r *recTracer
}

type recSpan struct {
	name   string
	parent trace.SpanContext
	kind   trace.SpanKind
	attrs  map[attribute.Key]attribute.Value
}

// recordingSpan is a span that records: its attributes (at start or set
// later) go to the recTracer.
type recordingSpan struct {
	noop.Span
	r *recTracer
	i int
}

func (s recordingSpan) IsRecording() bool { return true }

func (s recordingSpan) SetAttributes(kv ...attribute.KeyValue) {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	for _, a := range kv {
		s.r.spans[s.i].attrs[a.Key] = a.Value
	}
}

func (r *recTracer) Tracer(string, ...trace.TracerOption) trace.Tracer { return recTracerT{r: r} }

func (t recTracerT) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	parent := trace.SpanContextFromContext(ctx)
	t.r.mu.Lock()
	t.r.spans = append(t.r.spans, recSpan{name: name, parent: parent, kind: cfg.SpanKind(), attrs: map[attribute.Key]attribute.Value{}})
	span := recordingSpan{r: t.r, i: len(t.r.spans) - 1}
	t.r.mu.Unlock()
	span.SetAttributes(cfg.Attributes()...)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: parent.TraceID(), SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: parent.TraceFlags()})
	return trace.ContextWithSpanContext(ctx, sc), span
}

// The runtime starts a consumer span "handle <topic>" whose parent is the
// producer's span from the traceparent extension; the handler runs in it.
func TestHandleSpanIsChildOfProducer(t *testing.T) {
	t.Parallel()
	tr := &recTracer{}
	b := newBroker(t)
	topic := testenv.Name("t")
	got := make(chan trace.SpanContext, 1)
	c := newConsumer(t, b, consumer.Config{TracerProvider: tr})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	}))
	start(t, c)
	publish(t, b, topic, ev("x", "s", `{}`, eventkit.WithExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")))
	sc := <-got
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.spans) != 1 {
		t.Fatalf("%d spans", len(tr.spans))
	}
	s := tr.spans[0]
	if s.name != "handle "+topic || s.kind != trace.SpanKindConsumer || !s.parent.IsRemote() ||
		s.parent.SpanID().String() != "00f067aa0ba902b7" || s.parent.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("span %+v", s)
	}
	// A recording span carries the messaging attributes (the runtime
	// builds them only for a span that records).
	want := map[attribute.Key]string{
		"messaging.operation.type": "process", "messaging.destination.name": topic,
		"messaging.consumer.group.name": "g", "messaging.delivery.attempt": "1",
		"cloudevents.event_type": "x", "cloudevents.event_subject": "s",
	}
	for k, v := range want {
		if got := s.attrs[k].Emit(); got != v {
			t.Errorf("span attribute %s = %q, want %q", k, got, v)
		}
	}
	if s.attrs["messaging.message.id"].Emit() == "" {
		t.Errorf("span attributes %v: no messaging.message.id", s.attrs)
	}
	if sc.SpanID() != (trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("handler ctx is not in the handle span: %v", sc.SpanID())
	}
}

// With no TracerProvider configured and no SDK registered, the runtime
// skips the span (it would record nothing) but the handler still gets the
// producer's span context; a provider registered with
// otel.SetTracerProvider after New gets the spans from then on. Not
// parallel: it sets the global provider (and leaves a no-op one behind).
func TestGlobalTracerProviderRegisteredLater(t *testing.T) {
	if fmt.Sprintf("%T", otel.GetTracerProvider()) != "*global.tracerProvider" {
		t.Skip("a global TracerProvider is already registered in this test binary")
	}
	b := newBroker(t)
	topic := testenv.Name("t")
	got := make(chan trace.SpanContext, 2)
	c := newConsumer(t, b, consumer.Config{})
	_ = c.Handle(topic, "g", consumer.HandlerFunc(func(ctx context.Context, e eventkit.Event) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	}))
	waitReady(t, start(t, c))
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	publish(t, b, topic, ev("x", "s", `{}`, eventkit.WithExtension("traceparent", tp)))
	if sc := <-got; sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("handler context without a registered provider: %v, want the producer's span context", sc)
	}
	tr := &recTracer{}
	otel.SetTracerProvider(tr)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })
	publish(t, b, topic, ev("x", "s", `{}`, eventkit.WithExtension("traceparent", tp)))
	sc := <-got
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.spans) != 1 || tr.spans[0].name != "handle "+topic || tr.spans[0].parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("spans after otel.SetTracerProvider: %+v, want one child of the producer's", tr.spans)
	}
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() == "00f067aa0ba902b7" {
		t.Fatalf("handler context after otel.SetTracerProvider: %v, want the consumer span's", sc)
	}
}
