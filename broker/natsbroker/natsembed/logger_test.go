package natsembed_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/natsbroker/natsembed"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNilLoggerIsDefault: a nil Options.Logger means slog.Default(), as in
// every other adapter, store and runtime of eventkit (it used to discard
// the NATS connection events, so a disconnect was silent).
func TestNilLoggerIsDefault(t *testing.T) {
	buf := &syncBuf{}
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
