package consumer

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/telemetry"
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

// Meter is the instrumentation scope of the consumer's metrics.
const Meter = "github.com/eventkit/eventkit/consumer"

// NewOTelMetrics returns Metrics recorded through mp (nil: the global
// MeterProvider):
//
//	eventkit.consumer.events            counter   deliveries by outcome (handled, failed, retried, dead_lettered, duplicate, dead_letter_failed)
//	eventkit.consumer.handler.duration  histogram seconds per handler attempt (inbox transaction included), attribute error
//	eventkit.consumer.lag               histogram seconds from the event's time to the start of its handler
//
// with the attributes messaging.destination.name (topic) and
// messaging.consumer.group.name, and attrs on every measurement. The
// histograms have explicit buckets in seconds (telemetry.LatencyBuckets,
// and telemetry.LagBuckets, up to an hour, for the lag).
// Consumer.ObserveMetrics adds the in-flight gauges; docs/observability.md
// lists the names as Prometheus exports them.
func NewOTelMetrics(mp metric.MeterProvider, attrs ...attribute.KeyValue) (Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(Meter)
	events, err := m.Int64Counter("eventkit.consumer.events",
		metric.WithDescription("Deliveries by outcome: handled, failed, retried, dead_lettered, duplicate, dead_letter_failed."),
		metric.WithUnit("{event}"))
	if err != nil {
		return nil, err
	}
	lat, err := m.Float64Histogram("eventkit.consumer.handler.duration",
		metric.WithDescription("Duration of handler attempts, inbox transaction included."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.LatencyBuckets()...))
	if err != nil {
		return nil, err
	}
	lag, err := m.Float64Histogram("eventkit.consumer.lag",
		metric.WithDescription("Time from the event's time (when it was written) to the start of its handler."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.LagBuckets()...))
	if err != nil {
		return nil, err
	}
	return &otelMetrics{events: events, latency: lat, lag: lag, attrs: attrs}, nil
}

type otelMetrics struct {
	events       metric.Int64Counter
	latency, lag metric.Float64Histogram
	attrs        []attribute.KeyValue
}

func (m *otelMetrics) with(topic, group string, more ...attribute.KeyValue) metric.MeasurementOption {
	kv := make([]attribute.KeyValue, 0, 2+len(more)+len(m.attrs))
	kv = append(kv, attribute.String("messaging.destination.name", topic), attribute.String("messaging.consumer.group.name", group))
	kv = append(kv, more...)
	return metric.WithAttributes(append(kv, m.attrs...)...)
}

func (m *otelMetrics) Count(ctx context.Context, topic, group string, o Outcome) {
	m.events.Add(ctx, 1, m.with(topic, group, attribute.String("outcome", string(o))))
}

func (m *otelMetrics) HandlerLatency(ctx context.Context, topic, group string, d time.Duration, failed bool) {
	m.latency.Record(ctx, d.Seconds(), m.with(topic, group, attribute.Bool("error", failed)))
}

// EventLag implements LagMetrics.
func (m *otelMetrics) EventLag(ctx context.Context, topic, group string, lag time.Duration) {
	m.lag.Record(ctx, max(lag, 0).Seconds(), m.with(topic, group))
}

// LagMetrics is implemented by Metrics that also record how late events
// are handled (NewOTelMetrics does: eventkit.consumer.lag). The runtime
// calls EventLag before every handler attempt with the time since the
// event's Time (the producer's clock: skew shows up here).
type LagMetrics interface {
	EventLag(ctx context.Context, topic, group string, lag time.Duration)
}

// recordLag reports ev's lag to m if m is a LagMetrics.
func recordLag(ctx context.Context, m Metrics, topic, group string, ev eventkit.Event, now time.Time) {
	if lm, ok := m.(LagMetrics); ok && !ev.Time.IsZero() {
		lm.EventLag(ctx, topic, group, now.Sub(ev.Time))
	}
}

// ObserveMetrics registers, on mp (nil: the global MeterProvider), gauges
// read from the consumer each time metrics are collected, per topic and
// group (attributes as for NewOTelMetrics, plus attrs):
//
//	eventkit.consumer.in_flight   gauge  deliveries received and not yet settled
//	eventkit.consumer.handling    gauge  handler calls in progress
//
// Call Unregister on the result when the consumer is done.
func (c *Consumer) ObserveMetrics(mp metric.MeterProvider, attrs ...attribute.KeyValue) (metric.Registration, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(Meter)
	inflight, err := m.Int64ObservableGauge("eventkit.consumer.in_flight", metric.WithUnit("{event}"),
		metric.WithDescription("Deliveries received and not yet settled (acked, nacked or dead-lettered)."))
	if err != nil {
		return nil, err
	}
	handling, err := m.Int64ObservableGauge("eventkit.consumer.handling", metric.WithUnit("{event}"),
		metric.WithDescription("Handler calls in progress."))
	if err != nil {
		return nil, err
	}
	om := &otelMetrics{attrs: attrs}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		c.mu.Lock()
		routes := c.routes
		c.mu.Unlock()
		for _, r := range routes {
			opt := om.with(r.topic, r.group)
			o.ObserveInt64(inflight, r.inflight.Load(), opt)
			o.ObserveInt64(handling, r.handling.Load(), opt)
		}
		return nil
	}, inflight, handling)
}
