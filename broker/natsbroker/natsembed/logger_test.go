package natsembed_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/natsbroker/natsembed"
	"github.com/eventkit/eventkit/internal/testenv"
)

// TestNilLoggerIsDefault: a nil Options.Logger means slog.Default(), as in
// every other adapter, store and runtime of eventkit (it used to discard
// the NATS connection events, so a disconnect was silent).
func TestNilLoggerIsDefault(t *testing.T) {
	buf := &testenv.SyncBuffer{}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	ctx := context.Background()
	srv, err := natsembed.Start(ctx, t.TempDir(), natsembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := srv.Connect(ctx, natsbroker.Options{}) // Logger nil
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	srv.NATSServer().Shutdown() // the client loses its connection
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(buf.String(), "nats: disconnected"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no disconnect logged to slog.Default(); log: %q", buf.String())
		}
	}
	_ = srv.Close(ctx)
}
