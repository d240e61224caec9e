package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
	"github.com/eventkit/eventkit/telemetry"
	"github.com/eventkit/eventkit/telemetry/promexport"
)

// cliTelemetry is what a long-running command measures with: a
// MeterProvider served on /metrics (and pushed over OTLP when configured),
// and a TracerProvider exporting over OTLP when configured (nil otherwise).
type cliTelemetry struct {
	prom *promexport.Exporter
	tp   *sdktrace.TracerProvider // nil: tracing off
}

// otlpEnabled reports whether OTLP export of signal ("TRACES" or
// "METRICS") is configured by the standard environment variables: an
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_<signal>_ENDPOINT),
// and neither OTEL_SDK_DISABLED=true nor OTEL_<signal>_EXPORTER=none.
func otlpEnabled(signal string) bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(os.Getenv("OTEL_"+signal+"_EXPORTER"), "none") {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
}

// otlpProtocol is OTEL_EXPORTER_OTLP_<signal>_PROTOCOL, else
// OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf (the specification's
// default).
func otlpProtocol(signal string) (string, error) {
	name := "OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL"
	p := os.Getenv(name)
	if p == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
		p = os.Getenv(name)
	}
	switch p {
	case "", "http/protobuf":
		return "http/protobuf", nil
	case "grpc":
		return "grpc", nil
	}
	return "", fmt.Errorf("%s=%q: want grpc or http/protobuf", name, p)
}

// newTelemetry sets up metrics and traces for a command whose default
// service.name is service (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
// override and add). The OTLP exporters read the rest of the standard
// OTEL_EXPORTER_OTLP_* variables (headers, timeout, TLS, compression).
func newTelemetry(ctx context.Context, service string) (*cliTelemetry, error) {
	res, err := resource.Merge(resource.NewSchemaless(attribute.String("service.name", service)), resource.Default())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	if otlpEnabled("METRICS") {
		proto, err := otlpProtocol("METRICS")
		if err != nil {
			return nil, err
		}
		var exp sdkmetric.Exporter
		if proto == "grpc" {
			exp, err = otlpmetricgrpc.New(ctx)
		} else {
			exp, err = otlpmetrichttp.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("OTLP metrics exporter: %w", err)
		}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	prom, err := promexport.New(opts...)
	if err != nil {
		return nil, err
	}
	t := &cliTelemetry{prom: prom}
	if otlpEnabled("TRACES") {
		proto, err := otlpProtocol("TRACES")
		if err != nil {
			_ = prom.Shutdown(ctx)
			return nil, err
		}
		var exp sdktrace.SpanExporter
		if proto == "grpc" {
			exp, err = otlptracegrpc.New(ctx)
		} else {
			exp, err = otlptracehttp.New(ctx)
		}
		if err != nil {
			_ = prom.Shutdown(ctx)
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		t.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	}
	return t, nil
}

// metricsHandler serves /metrics.
func (t *cliTelemetry) metricsHandler() http.Handler { return t.prom.Handler() }

// publisher wraps pub in the relay's publish and batch spans when tracing
// is on.
func (t *cliTelemetry) publisher(pub broker.Publisher) broker.Publisher {
	if t.tp == nil {
		return pub
	}
	return telemetry.Publisher(pub, t.tp)
}

// shutdown flushes what is buffered (the last spans and metrics), within 5s.
func (t *cliTelemetry) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if t.tp != nil {
		_ = t.tp.Shutdown(ctx)
	}
	_ = t.prom.Shutdown(ctx)
}

// relayMetricAttrs are the attributes on every relay metric: the mode and
// the outbox table (the default's name when none is given).
func relayMetricAttrs(mode, table string) []attribute.KeyValue {
	if table == "" {
		table = outbox.DefaultTable
	}
	return []attribute.KeyValue{attribute.String("mode", mode), attribute.String("table", table)}
}

// relayMetrics are the relay's metrics; in cdc mode with the slot lag.
func relayMetrics(t *cliTelemetry, mode string, attrs []attribute.KeyValue) (outbox.Metrics, error) {
	if mode == "cdc" {
		return pgcdc.NewOTelMetrics(t.prom.MeterProvider, attrs...)
	}
	return outbox.NewOTelMetrics(t.prom.MeterProvider, attrs...)
}
