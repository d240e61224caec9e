package outbox

import (
	"context"
	"fmt"
	"maps"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

var traceContext = propagation.TraceContext{}

// Prepare checks events before a store writes them and returns the events to
// store: the topic must be a valid name (broker.ValidateName) and every event
// must pass Validate with maxSize (eventkit.DefaultMaxSize if <= 0). If ctx
// carries a valid OpenTelemetry span context and an event has no
// "traceparent" extension, the W3C traceparent (and tracestate, if any) are
// added to a copy of its extensions; the caller's events are not modified.
// Stores call Prepare in Add; the error wraps eventkit.ErrInvalidEvent or
// broker.ErrInvalidTopic.
func Prepare(ctx context.Context, topic string, maxSize int, events []eventkit.Event) ([]eventkit.Event, error) {
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	var carrier propagation.MapCarrier
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		carrier = propagation.MapCarrier{}
		traceContext.Inject(ctx, carrier)
	}
	out := events
	copied := false
	for i, e := range events {
		if len(carrier) > 0 && e.Extensions["traceparent"] == "" {
			if !copied {
				out = append([]eventkit.Event(nil), events...)
				copied = true
			}
			ext := maps.Clone(e.Extensions)
			if ext == nil {
				ext = make(map[string]string, 2)
			}
			for k, v := range carrier {
				if v != "" {
					ext[k] = v
				}
			}
			out[i].Extensions = ext
		}
		if y := out[i].Time.UTC().Year(); y < 1 || y > 9999 {
			return nil, fmt.Errorf("outbox: event %d of %d: %w", i, len(events),
				&eventkit.ValidationError{ID: out[i].ID, Field: "time", Reason: "year must be 1-9999"})
		}
		if err := out[i].Validate(maxSize); err != nil {
			return nil, fmt.Errorf("outbox: event %d of %d: %w", i, len(events), err)
		}
	}
	return out, nil
}
