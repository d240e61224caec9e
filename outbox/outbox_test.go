package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/outbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPrepare(t *testing.T) {
	ctx := context.Background()
	e := eventkit.New("a.b", "text/plain", []byte("x"))
	out, err := outbox.Prepare(ctx, "orders", 0, []eventkit.Event{e})
	if err != nil || len(out) != 1 || out[0].Extensions != nil {
		t.Fatalf("%+v %v", out, err)
	}
	if _, err := outbox.Prepare(ctx, "", 0, []eventkit.Event{e}); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Fatalf("empty topic: %v", err)
	}
	bad := e
	bad.ID = ""
	if _, err := outbox.Prepare(ctx, "orders", 0, []eventkit.Event{e, bad}); !errors.Is(err, eventkit.ErrInvalidEvent) {
		t.Fatalf("bad event: %v", err)
	}
	if _, err := outbox.Prepare(ctx, "orders", 10, []eventkit.Event{e}); !errors.Is(err, eventkit.ErrTooLarge) {
		t.Fatalf("max size: %v", err)
	}
}

func TestOTelMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := outbox.NewOTelMetrics(mp, attribute.String("table", "t"))
	if err != nil {
		t.Fatal(err)
	}
	m.Delivered(5)
	m.Delivered(2)
	m.PublishLatency("orders", 3*time.Millisecond, true)
	m.Error("publish")
	m.Parked("orders", 1)
	m.Backlog(42, 2*time.Second, 1)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			found[mt.Name] = true
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				if mt.Name == "eventkit.outbox.delivered" && d.DataPoints[0].Value != 7 {
					t.Errorf("delivered %d", d.DataPoints[0].Value)
				}
			case metricdata.Gauge[int64]:
				if mt.Name == "eventkit.outbox.backlog" && d.DataPoints[0].Value != 42 {
					t.Errorf("backlog %d", d.DataPoints[0].Value)
				}
			}
		}
	}
	for _, name := range []string{"eventkit.outbox.delivered", "eventkit.outbox.errors", "eventkit.outbox.parked",
		"eventkit.outbox.publish.duration", "eventkit.outbox.backlog", "eventkit.outbox.oldest.age", "eventkit.outbox.parked.current"} {
		if !found[name] {
			t.Errorf("metric %s not recorded", name)
		}
	}
}
