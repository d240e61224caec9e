package natsbroker_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	"github.com/eventkit/eventkit/broker/natsbroker/natsembed"
	"github.com/eventkit/eventkit/internal/testenv"
)

// TestServerRestartMidStream restarts the (embedded) server on the same port
// and store directory while events are being published and consumed. The
// clients reconnect by themselves; the publisher retries what Publish
// reports as failed, as the outbox relay does. Every event must arrive, and
// the stream must hold each exactly once (Nats-Msg-Id dedupe).
func TestServerRestartMidStream(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e1, err := natsembed.Start(ctx, dir, natsembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	port := e1.NATSServer().Addr().(*net.TCPAddr).Port
	url := e1.URL()
	pub, sub := connect(t, url), connect(t, url)
	closeBroker(t, pub)
	closeBroker(t, sub)
	topic := testenv.Name("ekt")

	const total, batch = 3000, 50
	evs := mkEvents(total)
	var mu sync.Mutex
	seen := map[string]int{}
	consumed := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(seen) >= n
		}
	}
	s, err := sub.Subscribe(ctx, topic, "g", broker.AutoAck(func(ctx context.Context, e eventkit.Event, attempt int) error {
		mu.Lock()
		seen[e.ID]++
		mu.Unlock()
		return nil
	}), broker.WithAckWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = s.Close(cctx)
	})

	var retries int
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; i < total; i += batch {
			todo := evs[i : i+batch]
			for len(todo) > 0 {
				pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				err := pub.Publish(pctx, topic, todo...)
				cancel()
				if err == nil {
					break
				}
				pe, ok := err.(*broker.PublishError)
				if !ok {
					t.Errorf("Publish: %v", err)
					return
				}
				var again []eventkit.Event
				for _, f := range pe.Failed {
					again = append(again, todo[f.Index])
				}
				retries += len(again)
				todo = again
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(2 * time.Millisecond) // keep the stream flowing across the restart
		}
	}()

	// Restart once a third has been consumed.
	start := time.Now()
	testenv.WaitFor(t, 45*time.Second, "a third of the events consumed", consumed(total/3))
	t.Logf("a third consumed after %v", time.Since(start))
	closing := time.Now()
	if err := e1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("server stopped in %v", time.Since(closing))
	time.Sleep(300 * time.Millisecond) // down for a moment
	e2 := startEmbedded(t, dir, natsembed.Options{Port: port})
	t.Logf("server restarted on port %d", port)
	restarted := time.Now()

	testenv.WaitFor(t, 45*time.Second, "every event consumed", consumed(total))
	t.Logf("caught up %v after the restart", time.Since(restarted))
	<-pubDone
	mu.Lock()
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	mu.Unlock()
	t.Logf("all %d events consumed; %d re-published after failures, %d duplicate deliveries", total, retries, dups)
	info, err := e2.Broker.JetStream().Stream(ctx, pub.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != total {
		t.Errorf("stream holds %d messages, want %d (dedupe across the restart)", n, total)
	}
	// Stop the clients while the server still runs.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = s.Close(cctx)
	_ = pub.Close(cctx)
	_ = sub.Close(cctx)
}

// TestConformanceDurable runs brokertest.RunDurable on an embedded server
// with a JetStream store directory of the test's own, stopped and started
// again on the same port and directory.
func TestConformanceDurable(t *testing.T) {
	dir := t.TempDir()
	e := startEmbedded(t, dir, natsembed.Options{})
	port := e.NATSServer().Addr().(*net.TCPAddr).Port
	url := e.URL()
	brokertest.RunDurable(t, brokertest.Config{
		New: func(t *testing.T) broker.Broker { return connect(t, url) },
		Restart: func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := e.Close(ctx); err != nil {
				t.Fatal(err)
			}
			e = startEmbedded(t, dir, natsembed.Options{Port: port})
		},
	})
}
