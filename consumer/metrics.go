package consumer

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Outcome is what became of one delivery attempt.
type Outcome string

// The outcomes the runtime reports.
const (
	// Handled: the handler succeeded and the delivery was acked.
	OutcomeHandled Outcome = "handled"
	// Failed: a handler attempt failed (it is then retried or dead-lettered).
	OutcomeFailed Outcome = "failed"
	// Retried: a failed attempt will be retried (nack with delay, or in place).
	OutcomeRetried Outcome = "retried"
	// DeadLettered: the event was published to the dead-letter topic.
	OutcomeDeadLettered Outcome = "dead_lettered"
	// Duplicate: the inbox had already processed the event; skipped and acked.
	OutcomeDuplicate Outcome = "duplicate"
	// DeadLetterFailed: publishing a dead letter failed (once per try); the
	// event is kept unacked (see the package doc). Alert on it.
	OutcomeDeadLetterFailed Outcome = "dead_letter_failed"
)

// Metrics receives what the runtime measures. Implementations must be safe
// for concurrent use and fast; the default does nothing.
type Metrics interface {
	// Count is called once per outcome.
	Count(ctx context.Context, topic, group string, o Outcome)
	// HandlerLatency is called after every handler attempt (inbox included)
	// with its duration and whether it failed.
	HandlerLatency(ctx context.Context, topic, group string, d time.Duration, failed bool)
}

type nopMetrics struct{}

func (nopMetrics) Count(context.Context, string, string, Outcome)                      {}
func (nopMetrics) HandlerLatency(context.Context, string, string, time.Duration, bool) {}

// NewOTelMetrics returns Metrics that record through OpenTelemetry (nil mp:
// the global MeterProvider): a counter "eventkit.consumer.events" with
// attributes outcome, messaging.destination.name (topic) and
// messaging.consumer.group.name, and a histogram
// "eventkit.consumer.handler.duration" in seconds with an error attribute.
func NewOTelMetrics(mp metric.MeterProvider) (Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/eventkit/eventkit/consumer")
	events, err := m.Int64Counter("eventkit.consumer.events",
		metric.WithDescription("Deliveries by outcome: handled, failed, retried, dead_lettered, duplicate, dead_letter_failed."),
		metric.WithUnit("{event}"))
	if err != nil {
		return nil, err
	}
	lat, err := m.Float64Histogram("eventkit.consumer.handler.duration",
		metric.WithDescription("Duration of handler attempts, inbox transaction included."),
		metric.WithUnit("s"))
	if err != nil {
		return nil, err
	}
	return &otelMetrics{events: events, latency: lat}, nil
}

type otelMetrics struct {
	events  metric.Int64Counter
	latency metric.Float64Histogram
}

func (m *otelMetrics) Count(ctx context.Context, topic, group string, o Outcome) {
	m.events.Add(ctx, 1, metric.WithAttributes(
		attribute.String("outcome", string(o)),
		attribute.String("messaging.destination.name", topic),
		attribute.String("messaging.consumer.group.name", group)))
}

func (m *otelMetrics) HandlerLatency(ctx context.Context, topic, group string, d time.Duration, failed bool) {
	m.latency.Record(ctx, d.Seconds(), metric.WithAttributes(
		attribute.String("messaging.destination.name", topic),
		attribute.String("messaging.consumer.group.name", group),
		attribute.Bool("error", failed)))
}
