package pgcdc

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/eventkit/eventkit/outbox"
)

type otelMetrics struct {
	outbox.Metrics
	lag   metric.Int64Gauge
	attrs metric.MeasurementOption
}

// NewOTelMetrics returns the outbox relay's metrics (outbox.NewOTelMetrics:
// delivered, errors, parked, publish duration) plus the slot's lag:
//
//	eventkit.outbox.cdc.slot.lag   gauge   bytes, pg_current_wal_lsn() - confirmed_flush_lsn
//
// attrs (e.g. the table or slot name) are added to every measurement.
func NewOTelMetrics(meter metric.Meter, attrs ...attribute.KeyValue) (outbox.Metrics, error) {
	base, err := outbox.NewOTelMetrics(meter, attrs...)
	if err != nil {
		return nil, err
	}
	m := &otelMetrics{Metrics: base, attrs: metric.WithAttributes(attrs...)}
	if m.lag, err = meter.Int64Gauge("eventkit.outbox.cdc.slot.lag", metric.WithUnit("By"),
		metric.WithDescription("WAL the replication slot has not confirmed yet")); err != nil {
		return nil, err
	}
	return m, nil
}

// SlotLag implements LagMetrics.
func (m *otelMetrics) SlotLag(bytes int64) { m.lag.Record(context.Background(), bytes, m.attrs) }
