package main_test

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"
	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/telemetry/promexport"
)

// otlpSpan is what the receiver keeps of a span.
type otlpSpan struct {
	name                    string
	traceID, spanID, parent string
	links                   []string // span ids
	service                 string
}

// otlpReceiver is an in-process OTLP collector (gRPC and HTTP) that keeps
// the spans and the metric names it is sent.
type otlpReceiver struct {
	colltrace.UnimplementedTraceServiceServer
	mu      sync.Mutex
	spans   []otlpSpan
	metrics map[string]bool
}

func (r *otlpReceiver) Export(_ context.Context, req *colltrace.ExportTraceServiceRequest) (*colltrace.ExportTraceServiceResponse, error) {
	r.addTraces(req)
	return &colltrace.ExportTraceServiceResponse{}, nil
}

type metricsSvc struct {
	collmetrics.UnimplementedMetricsServiceServer
	r *otlpReceiver
}

func (m metricsSvc) Export(_ context.Context, req *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	m.r.addMetrics(req)
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

func (r *otlpReceiver) addTraces(req *colltrace.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		svc := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := otlpSpan{name: s.Name, traceID: hex.EncodeToString(s.TraceId), spanID: hex.EncodeToString(s.SpanId),
					parent: hex.EncodeToString(s.ParentSpanId), service: svc}
				for _, l := range s.Links {
					sp.links = append(sp.links, hex.EncodeToString(l.SpanId))
				}
				r.spans = append(r.spans, sp)
			}
		}
	}
}

func (r *otlpReceiver) addMetrics(req *collmetrics.ExportMetricsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				r.metrics[m.Name] = true
			}
		}
	}
}

func (r *otlpReceiver) span(name string) (otlpSpan, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.name == name {
			return s, true
		}
	}
	return otlpSpan{}, false
}

func (r *otlpReceiver) hasMetric(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.metrics[name]
}

// startOTLP serves the receiver over gRPC or HTTP (protobuf) on a loopback
// port and returns its endpoint URL.
func startOTLP(t *testing.T, protocol string) (*otlpReceiver, string) {
	t.Helper()
	r := &otlpReceiver{metrics: map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if protocol == "grpc" {
		srv := grpc.NewServer()
		colltrace.RegisterTraceServiceServer(srv, r)
		collmetrics.RegisterMetricsServiceServer(srv, metricsSvc{r: r})
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(srv.Stop)
	} else {
		mux := http.NewServeMux()
		handle := func(path string, msg func() proto.Message, add func(proto.Message), resp proto.Message) {
			mux.HandleFunc(path, func(w http.ResponseWriter, req *http.Request) {
				body, err := io.ReadAll(req.Body)
				m := msg()
				if err == nil {
					err = proto.Unmarshal(body, m)
				}
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				add(m)
				out, _ := proto.Marshal(resp)
				w.Header().Set("Content-Type", "application/x-protobuf")
				_, _ = w.Write(out)
			})
		}
		handle("/v1/traces", func() proto.Message { return &colltrace.ExportTraceServiceRequest{} },
			func(m proto.Message) { r.addTraces(m.(*colltrace.ExportTraceServiceRequest)) }, &colltrace.ExportTraceServiceResponse{})
		handle("/v1/metrics", func() proto.Message { return &collmetrics.ExportMetricsServiceRequest{} },
			func(m proto.Message) { r.addMetrics(m.(*collmetrics.ExportMetricsServiceRequest)) }, &collmetrics.ExportMetricsServiceResponse{})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	return r, "http://" + ln.Addr().String()
}

// TestOTLPTraceAcrossRelay: with OTEL_EXPORTER_OTLP_ENDPOINT set (gRPC and
// HTTP), `eventkit relay` exports its spans and metrics to an in-process
// OTLP receiver, and one trace spans the producing request, the relay's
// publish and the consumer's handler; the relay's batch span links to the
// request's span. Without the variables the relay exports nothing (the
// receiver of the other case gets nothing from it).
func TestOTLPTraceAcrossRelay(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(strings.ReplaceAll(protocol, "/", "_"), func(t *testing.T) {
			t.Parallel()
			f := newPG(t)
			ctx := context.Background()
			recv, endpoint := startOTLP(t, protocol)
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			defer tp.Shutdown(ctx) //nolint:errcheck

			topic := testenv.Name("otlp")
			b := natsTopic(t, f.nats, topic)
			handled := make(chan oteltrace.SpanContext, 1)
			c, err := consumer.New(b, consumer.Config{TracerProvider: tp})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.HandleFunc(topic, "otlp", func(ctx context.Context, _ eventkit.Event) error {
				select {
				case handled <- oteltrace.SpanContextFromContext(ctx):
				default:
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { _ = c.Run(runCtx); close(done) }()
			defer func() { stop(); <-done }()
			<-c.Ready()

			reqCtx, reqSpan := tp.Tracer("test").Start(ctx, "POST /orders", oteltrace.WithSpanKind(oteltrace.SpanKindServer))
			ev := eventkit.New("order.created", "application/json", []byte(`{}`), eventkit.WithSubject("o-1"))
			if err := pgx.BeginFunc(reqCtx, f.pool, func(tx pgx.Tx) error { return f.store.Add(reqCtx, tx, topic, ev) }); err != nil {
				t.Fatal(err)
			}
			reqSpan.End()

			cmd := exec.Command(bin, append([]string{"relay", "--broker", f.nats, "--listen", ""}, f.flags...)...)
			cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT="+endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL="+protocol,
				"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_METRIC_EXPORT_INTERVAL=200", "OTEL_SERVICE_NAME=relay-under-test")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			var handler oteltrace.SpanContext
			select {
			case handler = <-handled:
			case <-time.After(60 * time.Second):
				t.Fatal("event not handled")
			}
			var pub, send otlpSpan
			testenv.WaitFor(t, 30*time.Second, "the relay's spans at the receiver", func() bool {
				var ok1, ok2 bool
				pub, ok1 = recv.span("publish " + topic)
				send, ok2 = recv.span("send " + topic)
				return ok1 && ok2
			})
			testenv.WaitFor(t, 30*time.Second, "the relay's metrics at the receiver", func() bool { return recv.hasMetric("eventkit.outbox.delivered") })
			_ = cmd.Process.Signal(syscall.SIGTERM)

			traceID := reqSpan.SpanContext().TraceID().String()
			if pub.traceID != traceID || pub.parent != reqSpan.SpanContext().SpanID().String() {
				t.Errorf("relay publish span: trace %s parent %s; want trace %s parent %s (the request)", pub.traceID, pub.parent, traceID, reqSpan.SpanContext().SpanID())
			}
			if pub.service != "relay-under-test" {
				t.Errorf("relay span service.name %q", pub.service)
			}
			if handler.TraceID().String() != traceID {
				t.Errorf("handler in trace %s, want %s", handler.TraceID(), traceID)
			}
			var handle sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				if s.Name() == "handle "+topic {
					handle = s
				}
			}
			if handle == nil || handle.Parent().SpanID().String() != pub.spanID {
				t.Errorf("the handle span's parent is not the relay's publish span %s", pub.spanID)
			}
			if len(send.links) != 1 || send.links[0] != reqSpan.SpanContext().SpanID().String() {
				t.Errorf("batch span links %v, want the request span %s", send.links, reqSpan.SpanContext().SpanID())
			}
		})
	}
}

// metricRe finds eventkit, go and process metric names in the rules and
// the dashboard.
var metricRe = regexp.MustCompile(`\b(?:eventkit|go|process)_[a-z_]+\b`)

// deployMetricNames are the metric names the alert rules and the Grafana
// dashboard use.
func deployMetricNames(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range []string{"../../deploy/prometheus/alerts.yml", "../../deploy/grafana/eventkit.json"} {
		b, err := os.ReadFile(filepath.FromSlash(p))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metricRe.FindAllString(string(b), -1) {
			seen[m] = true
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// onFirstOccurrence are counters that a healthy run never increments, so
// they appear on /metrics only after the first relay error or parked event.
var onFirstOccurrence = map[string]bool{"eventkit_outbox_errors_total": true, "eventkit_outbox_parked_total": true}

// exported returns the metric names (before any labels) on a /metrics page.
func exported(page string) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(page, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		name := l
		if i := strings.IndexAny(l, "{ "); i >= 0 {
			name = l[:i]
		}
		out[name] = true
	}
	return out
}

// TestDeployMetricsExported runs a real CDC relay (`eventkit relay --mode
// cdc`) and a consumer serving its metrics the same way
// (telemetry/promexport), and checks that every metric name used by
// deploy/prometheus/alerts.yml and deploy/grafana/eventkit.json is on one
// of their /metrics pages, and that no series carries otel_scope labels.
func TestDeployMetricsExported(t *testing.T) {
	t.Parallel()
	f := newPG(t)
	ctx := context.Background()
	names := deployMetricNames(t)
	if len(names) < 15 {
		t.Fatalf("only %d metric names found in deploy/: %v", len(names), names)
	}
	slot := strings.ReplaceAll(testenv.Name("ek_obs"), "-", "_")
	slotFlags := append([]string{"--slot", slot}, f.flags...)
	run(t, "", append([]string{"outbox", "cdc", "setup"}, slotFlags...)...).mustOK(t)
	t.Cleanup(func() { run(t, "", append([]string{"outbox", "cdc", "drop"}, slotFlags...)...) })

	topic := testenv.Name("obs")
	b := natsTopic(t, f.nats, topic)
	exp, err := promexport.New()
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(context.Background()) //nolint:errcheck
	m, err := consumer.NewOTelMetrics(exp.MeterProvider)
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(b, consumer.Config{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.ObserveMetrics(exp.MeterProvider)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister() //nolint:errcheck
	var handledN sync.WaitGroup
	handledN.Add(1)
	var once sync.Once
	if err := c.HandleFunc(topic, "obs", func(context.Context, eventkit.Event) error { once.Do(handledN.Done); return nil }); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = c.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()
	<-c.Ready()
	srv := &http.Server{Handler: exp.Handler(), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	f.add(t, topic, 20)
	addr := freeAddr(t)
	cmd := exec.Command(bin, append([]string{"relay", "--mode", "cdc", "--broker", f.nats, "--listen", addr}, slotFlags...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	handledN.Wait()

	var missing []string
	var pages string
	testenv.WaitFor(t, 60*time.Second, "every deploy/ metric exported (the slot lag is measured every 10s)", func() bool {
		_, relayPage := get(addr, "/metrics")
		_, consumerPage := get(ln.Addr().String(), "/metrics")
		pages = relayPage + consumerPage
		have := exported(pages)
		missing = missing[:0]
		for _, n := range names {
			if !have[n] && !onFirstOccurrence[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			t.Logf("not yet exported: %v", missing)
		}
		return len(missing) == 0
	})
	if strings.Contains(pages, "otel_scope_") {
		t.Errorf("series carry otel_scope labels")
	}
	if !strings.Contains(pages, `eventkit_outbox_publish_duration_seconds_bucket{`) || !strings.Contains(pages, `le="0.0005"`) || !strings.Contains(pages, `le="60"`) {
		t.Errorf("the publish histogram lacks the seconds buckets (0.5 ms to 60 s)")
	}
	if !strings.Contains(pages, `partition="0"`) {
		t.Errorf("the leader gauge has no partition label")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
}
