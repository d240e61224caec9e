package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/internal/console"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
)

// TestOverviewLagFromConsumerLagger: with a broker that reports lag per
// group (here Redis Streams), the overview lists the configured group's
// lag; a group the broker does not know on the topic is not listed.
func TestOverviewLagFromConsumerLagger(t *testing.T) {
	ctx := context.Background()
	rb, err := redisbroker.New(ctx, redisbroker.Options{URL: testenv.Redis.URL(t), Prefix: testenv.Name("ekt-console") + ":"})
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.Name("lag")
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rb.DeleteTopic(cctx, topic)
		_ = rb.Close(cctx)
	})
	if err := rb.Provision(ctx, topic, "billing"); err != nil {
		t.Fatal(err)
	}
	evs := make([]eventkit.Event, 7)
	for i := range evs {
		evs[i] = eventkit.New("t", "application/json", fmt.Appendf(nil, `{"n":%d}`, i))
	}
	if err := rb.Publish(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	st, err := connect.OpenStore(ctx, testdb.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	con, err := console.New(console.Config{DB: st.SQL, Dialect: st.Dialect, Outbox: st.Outbox, Pool: st.Pool,
		Topics: []string{topic}, Groups: []string{"billing", "unknown"},
		Broker: func(context.Context) (broker.Broker, error) { return rb, nil }})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, con)
	req, _ := http.NewRequest("GET", srv+"/", nil)
	_, body := get(t, req)
	want := "<td>" + topic + "</td><td>billing</td><td>7</td>"
	if !strings.Contains(body, want) {
		t.Fatalf("overview has no %q:\n%s", want, body)
	}
	if strings.Contains(body, "<td>unknown</td>") {
		t.Fatal("a group the broker does not know is listed")
	}
}

func newServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
