package outbox

import (
	"context"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/eventkit/eventkit/telemetry"
)

// Metrics receives a relay's measurements. Implementations must be safe for
// concurrent use and must not block. NewOTelMetrics adapts an OpenTelemetry
// meter; tests can implement it directly.
type Metrics interface {
	// Delivered counts rows completed (deleted or marked delivered) after
	// the broker confirmed their events, as the database reported them.
	Delivered(n int)
	// PublishLatency is the duration of one Publish call.
	PublishLatency(topic string, d time.Duration, ok bool)
	// Error counts one failure: "publish" (transient), "rejected"
	// (permanent, per event), "store_claim", "store_complete", ...
	Error(kind string)
	// Parked counts events parked.
	Parked(topic string, n int)
	// Backlog reports the waiting events, the oldest one's age and the
	// parked events (read by the leader every RelayConfig.StatusInterval).
	Backlog(n int64, oldest time.Duration, parked int64)
}

type nopMetrics struct{}

func (nopMetrics) Delivered(int)                              {}
func (nopMetrics) PublishLatency(string, time.Duration, bool) {}
func (nopMetrics) Error(string)                               {}
func (nopMetrics) Parked(string, int)                         {}
func (nopMetrics) Backlog(int64, time.Duration, int64)        {}

type otelMetrics struct {
	delivered, errors, parked metric.Int64Counter
	latency                   metric.Float64Histogram
	backlog, parkedNow, lead  metric.Int64Gauge
	oldest                    metric.Float64Gauge
	attrs                     metric.MeasurementOption
}

// Meter is the instrumentation scope of the outbox relay's metrics.
const Meter = "github.com/eventkit/eventkit/outbox"

// NewOTelMetrics returns Metrics recorded through mp (nil: the global
// MeterProvider) as:
//
//	eventkit.outbox.delivered           counter   events delivered
//	eventkit.outbox.errors              counter   failures, attribute "kind"
//	eventkit.outbox.parked              counter   events parked, attribute "topic"
//	eventkit.outbox.publish.duration    histogram seconds per Publish call, attributes "topic", "ok"
//	eventkit.outbox.backlog             gauge     events waiting
//	eventkit.outbox.oldest.age          gauge     seconds, age of the oldest waiting event
//	eventkit.outbox.parked.current      gauge     events parked now
//	eventkit.outbox.leader              gauge     1 while this relay leads, else 0; attribute "partition"
//
// The histogram has explicit buckets in seconds (telemetry.LatencyBuckets).
// attrs (e.g. the table name) are added to every measurement.
// docs/observability.md lists the names as Prometheus exports them.
func NewOTelMetrics(mp metric.MeterProvider, attrs ...attribute.KeyValue) (Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(Meter)
	m := &otelMetrics{attrs: metric.WithAttributes(attrs...)}
	var err error
	if m.delivered, err = meter.Int64Counter("eventkit.outbox.delivered", metric.WithUnit("{event}"),
		metric.WithDescription("Events confirmed by the broker and completed")); err != nil {
		return nil, err
	}
	if m.errors, err = meter.Int64Counter("eventkit.outbox.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Relay failures by kind")); err != nil {
		return nil, err
	}
	if m.parked, err = meter.Int64Counter("eventkit.outbox.parked", metric.WithUnit("{event}"),
		metric.WithDescription("Events parked after permanent rejections")); err != nil {
		return nil, err
	}
	if m.latency, err = meter.Float64Histogram("eventkit.outbox.publish.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of one Publish call"),
		metric.WithExplicitBucketBoundaries(telemetry.LatencyBuckets()...)); err != nil {
		return nil, err
	}
	if m.backlog, err = meter.Int64Gauge("eventkit.outbox.backlog", metric.WithUnit("{event}"),
		metric.WithDescription("Events waiting to be published")); err != nil {
		return nil, err
	}
	if m.parkedNow, err = meter.Int64Gauge("eventkit.outbox.parked.current", metric.WithUnit("{event}"),
		metric.WithDescription("Events parked now")); err != nil {
		return nil, err
	}
	if m.lead, err = meter.Int64Gauge("eventkit.outbox.leader",
		metric.WithDescription("1 while this relay holds the outbox's leadership lock, 0 while it stands by")); err != nil {
		return nil, err
	}
	if m.oldest, err = meter.Float64Gauge("eventkit.outbox.oldest.age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest waiting event")); err != nil {
		return nil, err
	}
	return m, nil
}

// Leader implements LeaderMetrics: partition "0" (an unpartitioned relay).
func (m *otelMetrics) Leader(v bool) { m.PartitionLeader(0, v) }

// PartitionLeader implements PartitionMetrics: the leader gauge with the
// attribute partition.
func (m *otelMetrics) PartitionLeader(partition int, v bool) {
	n := int64(0)
	if v {
		n = 1
	}
	m.lead.Record(context.Background(), n, m.attrs, metric.WithAttributes(attribute.String("partition", strconv.Itoa(partition))))
}

func (m *otelMetrics) Delivered(n int) {
	m.delivered.Add(context.Background(), int64(n), m.attrs)
}

func (m *otelMetrics) PublishLatency(topic string, d time.Duration, ok bool) {
	m.latency.Record(context.Background(), d.Seconds(), m.attrs,
		metric.WithAttributes(attribute.String("topic", topic), attribute.Bool("ok", ok)))
}

func (m *otelMetrics) Error(kind string) {
	m.errors.Add(context.Background(), 1, m.attrs, metric.WithAttributes(attribute.String("kind", kind)))
}

func (m *otelMetrics) Parked(topic string, n int) {
	m.parked.Add(context.Background(), int64(n), m.attrs, metric.WithAttributes(attribute.String("topic", topic)))
}

func (m *otelMetrics) Backlog(n int64, oldest time.Duration, parked int64) {
	ctx := context.Background()
	m.backlog.Record(ctx, n, m.attrs)
	m.oldest.Record(ctx, oldest.Seconds(), m.attrs)
	m.parkedNow.Record(ctx, parked, m.attrs)
}
