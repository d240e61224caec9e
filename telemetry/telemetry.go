// Package telemetry carries OpenTelemetry traces across the asynchronous
// hops of an event, so that one trace runs from the request that wrote it to
// the outbox, through the relay's publish, to the consumer's handler.
// Guarantee: the trace context travels in the event itself, as the W3C
// "traceparent" (and "tracestate") CloudEvents extensions (the CloudEvents
// distributed tracing extension), so it survives the outbox table and every
// broker.
//
// Use: the pieces are wired in where each hop runs:
//
//   - outbox stores write the caller's span context into traceparent when
//     the event has none (outbox.Prepare);
//   - Publisher (this package) wraps the relay's broker.Publisher: it starts
//     a "publish <topic>" producer span as a child of that context for each
//     event and rewrites traceparent to it, and one "send <topic>" span per
//     Publish call (the relay's batch), linked to every event's producer
//     span;
//   - the consumer runtime starts a "handle <topic>" consumer span as a
//     child of the event's traceparent and gives it to the handler's ctx.
//
// With the global no-op TracerProvider all of this costs next to nothing.
//
// Limits: an event that already carries a traceparent when it is added to
// the outbox keeps it (the caller's span is not written over it).
package telemetry

import (
	"context"
	"maps"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

const instrumentation = "github.com/eventkit/eventkit/telemetry"

var traceContext = propagation.TraceContext{}

// Publisher wraps a broker.Publisher so that every event carrying a
// traceparent is published inside a producer span that continues its trace;
// the event goes out with the publish span as its traceparent. Events
// without a trace context pass through unchanged. tp nil means
// otel.GetTracerProvider().
func Publisher(pub broker.Publisher, tp trace.TracerProvider) broker.Publisher {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &publisher{pub: pub, tracer: tp.Tracer(instrumentation)}
}

type publisher struct {
	pub    broker.Publisher
	tracer trace.Tracer
}

func (p *publisher) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	var spans []trace.Span
	var links []trace.Link
	out := events
	for i, e := range events {
		if e.Extensions["traceparent"] == "" {
			continue
		}
		parent := traceContext.Extract(context.Background(), propagation.MapCarrier(e.Extensions))
		psc := trace.SpanContextFromContext(parent)
		if !psc.IsValid() {
			continue
		}
		links = append(links, trace.Link{SpanContext: psc, Attributes: []attribute.KeyValue{attribute.String("messaging.message.id", e.ID)}})
		sctx, span := p.tracer.Start(parent, "publish "+topic,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("messaging.destination.name", topic),
				attribute.String("messaging.message.id", e.ID),
				attribute.String("cloudevents.event_id", e.ID),
				attribute.String("cloudevents.event_type", e.Type),
				attribute.String("cloudevents.event_subject", e.Subject),
			))
		if !span.SpanContext().IsValid() { // a no-op tracer: nothing to record
			continue
		}
		if len(spans) == 0 {
			out = append([]eventkit.Event(nil), events...)
		}
		ext := maps.Clone(e.Extensions)
		traceContext.Inject(sctx, propagation.MapCarrier(ext))
		out[i].Extensions = ext
		spans = append(spans, span)
	}
	// The batch: one span per call, in the caller's trace (if any), linked
	// to each event's producer span (OpenTelemetry messaging conventions
	// for a batch send).
	ctx, batch := p.tracer.Start(ctx, "send "+topic,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", topic),
			attribute.Int("messaging.batch.message_count", len(events)),
		))
	err := p.pub.Publish(ctx, topic, out...)
	for _, s := range append(spans, batch) {
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, "publish failed")
		}
		s.End()
	}
	return err
}
