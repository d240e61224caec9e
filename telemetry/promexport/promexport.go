// Package promexport serves OpenTelemetry metrics on a Prometheus /metrics
// endpoint the way eventkit's relay does, so that a consumer program's
// metrics look the same as the relay's: the Go runtime (go_*) and process
// (process_*) collectors, no otel_scope_* labels on every series, and the
// eventkit instruments' explicit second-scale buckets
// (telemetry.LatencyBuckets).
//
// Give Exporter.MeterProvider to outbox.NewOTelMetrics,
// consumer.NewOTelMetrics and so on, and serve Exporter.Handler() on
// /metrics. docs/observability.md lists every metric.
package promexport

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Exporter is a MeterProvider whose metrics a Prometheus registry serves.
type Exporter struct {
	// Registry holds the OpenTelemetry bridge and the go_* and process_*
	// collectors; register more collectors on it if you like.
	Registry *prometheus.Registry
	// MeterProvider records into Registry (and into any reader passed to
	// New, such as an OTLP periodic reader).
	MeterProvider *sdkmetric.MeterProvider
}

// New returns an Exporter. opts are added to the MeterProvider's options
// (for example sdkmetric.WithResource, or sdkmetric.WithReader with an
// OTLP exporter to push the same metrics).
func New(opts ...sdkmetric.Option) (*Exporter, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(append([]sdkmetric.Option{sdkmetric.WithReader(exp)}, opts...)...)
	return &Exporter{Registry: reg, MeterProvider: mp}, nil
}

// Handler serves the registry in the Prometheus text
// format.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.Registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the MeterProvider (and its other readers).
func (e *Exporter) Shutdown(ctx context.Context) error { return e.MeterProvider.Shutdown(ctx) }
