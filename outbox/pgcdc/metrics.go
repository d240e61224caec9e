package pgcdc

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
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
// delivered, errors, parked, publish duration, backlog, leader) recorded
// through mp (nil: the global MeterProvider), plus the slot's lag as the
// leading relay measures it every Config.LagInterval:
//
//	eventkit.outbox.cdc.slot.lag   gauge   bytes, pg_current_wal_lsn() - confirmed_flush_lsn
//
// attrs (e.g. the table or slot name) are added to every measurement.
// Relay.ObserveSlot adds the WAL the slot retains.
func NewOTelMetrics(mp metric.MeterProvider, attrs ...attribute.KeyValue) (outbox.Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	base, err := outbox.NewOTelMetrics(mp, attrs...)
	if err != nil {
		return nil, err
	}
	m := &otelMetrics{Metrics: base, attrs: metric.WithAttributes(attrs...)}
	if m.lag, err = mp.Meter(outbox.Meter).Int64Gauge("eventkit.outbox.cdc.slot.lag", metric.WithUnit("By"),
		metric.WithDescription("WAL the replication slot has not confirmed yet")); err != nil {
		return nil, err
	}
	return m, nil
}

// SlotLag implements LagMetrics.
func (m *otelMetrics) SlotLag(bytes int64) { m.lag.Record(context.Background(), bytes, m.attrs) }

// PartitionLeader passes the leader gauge on to the outbox metrics.
func (m *otelMetrics) PartitionLeader(partition int, v bool) {
	if pl, ok := m.Metrics.(outbox.PartitionMetrics); ok {
		pl.PartitionLeader(partition, v)
	}
}

// Leader passes the leader gauge on to the outbox metrics.
func (m *otelMetrics) Leader(v bool) { m.PartitionLeader(0, v) }

// ObserveSlot registers, on mp (nil: the global MeterProvider), gauges
// that read the relay's own slot from pg_replication_slots each time the
// metrics are collected (on every scrape), on a standby relay too:
//
//	eventkit.outbox.cdc.slot.retained  gauge  bytes, pg_current_wal_lsn() - restart_lsn: WAL the server keeps for the slot
//	eventkit.outbox.cdc.slot.active    gauge  1 while a walsender streams from the slot (some relay leads), else 0
//
// with the attribute slot and attrs. A query that fails or takes more than
// 2 s records nothing (the series goes stale, it never reads 0). Call
// Unregister on the result when the relay is done.
func (r *Relay) ObserveSlot(mp metric.MeterProvider, attrs ...attribute.KeyValue) (metric.Registration, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(outbox.Meter)
	retained, err := meter.Int64ObservableGauge("eventkit.outbox.cdc.slot.retained", metric.WithUnit("By"),
		metric.WithDescription("WAL the server retains for the replication slot (pg_current_wal_lsn() - restart_lsn)"))
	if err != nil {
		return nil, err
	}
	active, err := meter.Int64ObservableGauge("eventkit.outbox.cdc.slot.active",
		metric.WithDescription("1 while a walsender streams from the replication slot, else 0"))
	if err != nil {
		return nil, err
	}
	return meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := r.resolve(ctx); err != nil {
			return err
		}
		var ret *int64
		var act bool
		err := r.pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - restart_lsn)::int8, active FROM pg_replication_slots
  WHERE slot_name = $1 AND database = current_database()`, r.cfg.Slot).Scan(&ret, &act)
		if err != nil {
			return fmt.Errorf("pgcdc: observe slot %s: %w", r.cfg.Slot, err)
		}
		opt := metric.WithAttributes(append([]attribute.KeyValue{attribute.String("slot", r.cfg.Slot)}, attrs...)...)
		if ret != nil {
			o.ObserveInt64(retained, *ret, opt)
		}
		a := int64(0)
		if act {
			a = 1
		}
		o.ObserveInt64(active, a, opt)
		return nil
	}, retained, active)
}
